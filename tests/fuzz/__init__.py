"""Fuzzing the manager TCP API and the game-wallet HTTP API (issue 5, item 2).

Each hypothesis example starts a fresh in-process server (in-memory ledger, ``threaded=False``: a couple of
milliseconds), seeds a small world (accounts, one added as the SDKs send AddUser and logging in with a
password, one disabled with orders; orders, refused keyed requests, managers, game sessions, wallet rounds)
and sends a handful of generated inputs (``tests/fuzz/strategies/``). For every input:

* it gets exactly one well-formed reply (manager: one ``\\r\\n``-terminated JSON object with ``status`` and,
  for errors, ``error`` + ``message``, in plain ASCII with no apostrophe (``\\uXXXX`` escapes), the
  ``extID`` echoed whenever it can be read, errors included: a NaN or a lone surrogate anywhere is
  INVALID_DATA naming where, a repeated key INVALID_JSON with the extID the raw line names; wallet: HTTP 200 with a
  known status string and the request's ``uuid``, ``"retransmission": true`` exactly when it answers a
  retried transaction.id), or the documented silence (blank line) or
  ``LINE_TOO_LONG`` + close; a Ping sent after it on the same connection is answered next, so there is no
  second reply and the connection is still usable;
* the answer is the one the contract gives: a fixed error for malformed input, or, for well-formed
  requests, what an independent model of the contract predicts from the ledger state before the input
  (accounts with their SDK fields and passwords, disabled accounts, orders, idempotency keys of finance
  requests and AddUser, each connection's channels, wallet rounds);
* the ledger is unchanged by every rejected input (every table's row count, every account's totals,
  every order, the event seq), and an accepted input changes exactly what its answer says;
  ``verify()`` passes after every input; events reach subscribers gap-free and once, each with its seq in
  its data too (and a …Sync answer is exactly that data);
* nothing is logged at ERROR, and at the end of the example a fresh connection still gets its Ping.

Run: ``python -m pytest tests/fuzz`` (CI size: 200 + 100 examples, about 18 s). Long run:
``SYNCLEDGER_FUZZ_EXAMPLES=10000 python -m pytest tests/fuzz -s`` (examples per fuzz
test; an example holds 1 to 12 inputs; the input counts are printed).

The parts, by job (TigerBeetle's workload, auditor and harness):

* ``strategies/``: the workload, each input drawn with what the server must do with it;
* ``oracle/``: the independent models of the manager and the wallet contracts;
* ``strict``, ``snapshot``, ``connection``: how a reply is read, how the ledger is compared before and
  after, and the model of one manager connection;
* ``harness/``: the fuzz server, the seeded worlds, and the loop that sends each input, asks the oracle
  and checks the answer and the ledger;
* ``test_manager_fuzz.py``, ``test_wallet_fuzz.py``: the two fuzz tests, each followed by regression tests of
  the bugs it found.
"""
