"""The writer process's own work per finance command, in one process: a batch decoded as the writer gets it,
applied by a Store, and its outcomes encoded as it sends them (``ledger/codec.py``, ``Store.apply_batch``), on
a ``synchronous=OFF`` ledger so that no fsync hides the Python. Prints CPU µs per command; under callgrind
the instruction counts of two builds compare on a shared machine (run it with ``--rounds 0`` too, and take
the difference over the commands):

    python bench/writer_glue.py --batch 64 --rounds 200 --keyed
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/writer_glue.py --batch 64 --rounds 20
"""

from __future__ import annotations

import argparse
import inspect
import marshal
import os
import tempfile
import time

from syncledger.ledger import AddAccount, Finance, FinanceRequest, Store, codec


def run(batch: int, rounds: int, keyed: bool) -> float:
    """CPU µs per command of ``rounds`` batches of ``batch`` CreditIn commands (keyed: each with an extID)."""
    folder = tempfile.mkdtemp(prefix="writer-glue-")
    store = Store(os.path.join(folder, "ledger.db"), synchronous="OFF")
    store.apply_batch([AddAccount("a", "USD", 1)])
    rows = "rows" in inspect.signature(store.apply_batch).parameters  # (a build before the receipt rows: no)
    messages, n = [], 0
    for _ in range(rounds):
        commands = []
        for _ in range(batch):
            n += 1
            commands.append(Finance(FinanceRequest("CreditIn", 1000, 1_000_000, "c"), 17, 1 if keyed else None,
                                    f"x{n}" if keyed else None))
        messages.append(marshal.dumps(codec.encode_batch(commands)))
    started = time.process_time()
    for message in messages:
        commands = codec.decode_batch(marshal.loads(message))
        outcomes = store.apply_batch(commands, rows=True) if rows else store.apply_batch(commands)
        marshal.dumps(codec.encode_outcomes(outcomes))
    spent = time.process_time() - started
    store.close()
    return spent / max(1, batch * rounds) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="commands per batch (default 64; 1 is light load)")
    p.add_argument("--rounds", type=int, default=200, help="batches (default 200; 0: the fixed cost alone)")
    p.add_argument("--keyed", action="store_true", help="each command with an extID (an idempotency row)")
    args = p.parse_args()
    us = run(args.batch, args.rounds, args.keyed)
    print(f"batch {args.batch}, {args.rounds} rounds, keyed {args.keyed}: {us:.2f} µs of CPU per command")


if __name__ == "__main__":
    main()
