"""Helpers shared by the benchmarks: processes, CLI set-up, profiling, CPU accounting, scenarios, reports."""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLI = [sys.executable, "-P", "-m", "syncledger.server.cli"]  # -P: the current folder never shadows the package
MANAGER_LOGIN = 1
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ============================================================================ numbers and formatting

def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, min(len(sorted_values) - 1, math.ceil(p * len(sorted_values)) - 1))]


def _blank(x: float | None) -> bool:
    """Whether a figure is missing (None or NaN)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float | None) -> str:
    """A figure with two decimals, ``-`` when missing."""
    return "-" if _blank(x) else f"{x:.2f}"


def fmt_ms(x: float | None) -> str:
    """Milliseconds with thousands separators and two decimals, ``-`` when missing."""
    return "-" if _blank(x) else f"{x:,.2f}"


def split(n: int, k: int) -> list[int]:
    """``n`` items shared as evenly as possible over ``k`` connections."""
    return [n // k + (1 if c < n % k else 0) for c in range(k)]


def say(msg: str) -> None:
    """A progress line of the client, on stderr."""
    print(f"[client] {msg}", file=sys.stderr, flush=True)


# ============================================================================ CPU accounting

def cpu_snapshot(pids: dict[str, int]) -> dict | None:
    """CPU seconds so far of the machine (busy), of each listed process and of this one; None without /proc."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        snap = {"wall": time.perf_counter(), "machine": (sum(v[:3]) + sum(v[5:8])) / CLK_TCK,
                "client": time.process_time()}
        for name, pid in pids.items():
            snap[name] = tree_cpu(pid)
        return snap
    except (OSError, ValueError, IndexError):
        return None


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, of its children that ended (cutime + cstime: PostgreSQL's autovacuum workers,
    a closed connection's backend, the page's verify) and of its live descendants (children of any thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / CLK_TCK
    children: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                children += [int(c) for c in f.read().split()]
        except OSError:
            pass
    for child in children:
        try:
            total += tree_cpu(child)
        except (OSError, ValueError, IndexError):
            pass  # ended meanwhile
    return total


def cpu_usage(before: dict | None, after: dict | None, target: str) -> dict:
    """Average cores used during a scenario by the process under test, the client and everything else."""
    dt = after["wall"] - before["wall"] if before and after else 0.0
    if dt < 0.5:  # /proc counts in clock ticks (10 ms): too coarse for a shorter scenario
        return {"target_cores": None, "client_cores": None, "other_cores": None}
    d = {k: after[k] - before[k] for k in before if k != "wall"}
    ours = sum(v for k, v in d.items() if k != "machine")
    return {"target_cores": d.get(target, math.nan) / dt, "client_cores": d["client"] / dt,
            "other_cores": max(0.0, d["machine"] - ours) / dt}


def machine_busy_cores(seconds: float = 1.0) -> float | None:
    """Cores the whole machine keeps busy over ``seconds``; None without /proc."""
    a = cpu_snapshot({})
    time.sleep(seconds)
    b = cpu_snapshot({})
    return None if not a or not b else (b["machine"] - a["machine"]) / (b["wall"] - a["wall"])


def wait_quiet(limit: float, threshold: float = 0.2) -> None:
    """Wait (at most ``limit`` seconds) until other processes use less than ``threshold`` cores."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy_cores()
        if busy is None or busy < threshold:
            return
        if time.monotonic() > deadline:
            print(f"[bench] the machine is still busy ({busy:.2f} cores): running anyway", flush=True)
            return
        print(f"[bench] waiting for a quiet machine: {busy:.2f} cores busy", flush=True)
        time.sleep(4)


# ============================================================================ scenarios (client side)

class BaseTally:
    """What one connection saw, the part every benchmark keeps: latencies (s), first error, time span."""

    __slots__ = ("lat", "error_sample", "first_send", "last_reply")

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.lat: list[float] = []
        self.error_sample: str | None = None
        self.first_send = math.inf
        self.last_reply = 0.0


def first_leaf(e: BaseException) -> BaseException:
    """The first exception at the bottom of nested exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


async def run_connections(host: str, port: int, k: int, limit: float, pids: dict[str, int] | None, start,
                          unwrap: bool = False) -> tuple[str | None, dict | None, dict | None]:
    """Run ``start(nursery, streams, go)``'s tasks on ``k`` new connections; -> (failure, CPU before, CPU after)."""
    import trio

    streams = [await trio.open_tcp_stream(host, port) for _ in range(k)]
    go = trio.Event()
    error = cpu_before = cpu_after = None
    try:
        with trio.move_on_after(limit) as guard:
            async with trio.open_nursery() as nursery:
                start(nursery, streams, go)
                await trio.sleep(0.01)
                cpu_before = cpu_snapshot(pids or {})
                go.set()
        cpu_after = cpu_snapshot(pids or {})
        if guard.cancelled_caught:
            error = f"gave up after {limit:.0f} s"
    except Exception as e:  # a broken connection: report it, keep what was measured
        leaf = first_leaf(e) if unwrap else e
        error = f"{type(leaf).__name__}: {leaf}"
    finally:
        for s in streams:
            await s.aclose()
    return error, cpu_before, cpu_after


def summarize(tallies: list, target: str, failure: str | None, cpu_before: dict | None,
              cpu_after: dict | None) -> dict:
    """The figures every scenario reports: throughput, latency percentiles, first error, CPU use."""
    lat = sorted(x for t in tallies for x in t.lat)
    answered = len(lat)
    elapsed = max(t.last_reply for t in tallies) - min(t.first_send for t in tallies) if answered else math.nan
    return {
        "answered": answered,
        "error_sample": next((t.error_sample for t in tallies if t.error_sample), None),
        "failure": failure, "elapsed_s": elapsed,
        "rps": answered / elapsed if answered and elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
        "max_ms": (lat[-1] * 1e3) if lat else math.nan,
        **cpu_usage(cpu_before, cpu_after, target),
    }


def cpu_said(r: dict, target: str) -> str:
    """The CPU part of a client progress line, and the failure if any."""
    return (f"CPU cores: {target} {num(r['target_cores'])}, client {num(r['client_cores'])}, "
            f"others {num(r['other_cores'])}" + (f", FAILED: {r['failure']}" if r["failure"] else ""))


async def checked_call(client, command: str, data: dict):
    """A manager API call that must succeed; -> its reply."""
    reply = await client.call(command, data)
    if not reply.ok:
        raise SystemExit(f"{command} failed: {reply}")
    return reply


# ============================================================================ processes

def run_cli(*args: str, env: dict) -> str:
    """Run ``python -m syncledger.server.cli ARGS``; -> its stdout (exit on failure)."""
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{shlex.join([*CLI, *args])} failed ({r.returncode}):\n"
                         f"{r.stdout}{r.stderr}")
    return r.stdout.strip()


def start_process(cmd: list[str], env: dict, log_path: str, what: str) -> tuple[subprocess.Popen, dict[str, int]]:
    """Start a listener process; its ports from its first stdout line (``listening tcp=H:P [ws=H:P …]``)."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT)
    log.close()
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode() if ready else ""
    ports = {name: int(port) for name, port in re.findall(r"(\w+)=\S+:(\d+)", line)}
    if not line.startswith("listening") or "tcp" not in ports:
        proc.kill()
        proc.wait()
        with open(log_path, errors="replace") as f:
            raise SystemExit(f"{what} did not start: first line {line!r}\n{f.read()[-3000:]}")
    sink = open(log_path + ".stdout", "wb")  # keep draining stdout: the process never blocks on a full pipe
    threading.Thread(target=shutil.copyfileobj, args=(proc.stdout, sink), daemon=True).start()
    return proc, ports


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
    """Signal a process and wait for it; -> its exit code, None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    return proc.returncode


# ============================================================================ orchestration

def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every benchmark takes, after its own."""
    p.add_argument("--quick", action="store_true", help="a tiny run for smoke testing")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the CPUs idle (shared machines)")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (database, server log)")
    p.add_argument("--db", metavar="URL", default=None,
                   help="the ledger: an empty PostgreSQL database or schema (postgresql://...) instead of a new file")
    p.add_argument("--py-spy", metavar="OUT", help="sample the server with py-spy while the client runs "
                   "(.svg flamegraph, .json speedscope, else raw collapsed stacks)")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only samples holding the GIL")
    p.add_argument("--cprofile", metavar="OUT", help="run the server under cProfile, stats written to OUT")
    p.add_argument("--writer", choices=("process", "thread"), default="process",
                   help="the server's --writer: batches applied in a thread or in a process of its own")
    p.add_argument("--client", metavar="JSON", help=argparse.SUPPRESS)


def run_role(args: argparse.Namespace, client_main, listener_main, listener: bool) -> int | None:
    """The hidden roles: ``--client`` (prints its results as JSON) or the listener; None for the orchestrator."""
    if not args.client and not listener:
        return None
    import trio

    if args.client:
        print(json.dumps(trio.run(client_main, json.loads(args.client))))
    else:
        trio.run(listener_main, args.host)
    return 0


class Run:
    """One benchmark run: its temp dir, database, environment, manager token and command line."""

    def __init__(self, args: argparse.Namespace, prefix: str, **extra_env: str) -> None:
        """Wait for a quiet machine if asked, then a fresh database with a manager and its token."""
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        self.args = args
        self.cmdline = f"(cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])})"
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.db = getattr(args, "db", None) or os.path.join(self.tmp, "bench.db")
        self.env = {**os.environ, "SYNCLEDGER_SECRET": secrets.token_hex(32), **extra_env, "PYTHONUNBUFFERED": "1"}
        print(f"[bench] temp dir {self.tmp}", flush=True)
        run_cli("manager", "add", "--db", self.db, "--login", str(MANAGER_LOGIN), "--password", "bench-password-1",
                "--session", "ADMIN", env=self.env)
        self.token = run_cli("token", "--db", self.db, "--login", str(MANAGER_LOGIN), env=self.env)
        self.spy: subprocess.Popen | None = None

    def start_server(self, *options: str) -> tuple[subprocess.Popen, dict[str, int]]:
        """Start ``syncledger serve`` on the run's database (under cProfile if asked)."""
        serve = [*CLI, "serve", "--db", self.db, "--writer", self.args.writer, *options]
        if self.args.cprofile:
            serve = [sys.executable, "-P", "-m", "cProfile", "-o", os.path.abspath(self.args.cprofile), *serve[2:]]
        return start_process(serve, self.env, os.path.join(self.tmp, "server.log"), "server")

    def start_listener(self, script: str, flag: str, name: str, what: str) -> tuple[subprocess.Popen, dict[str, int]]:
        """Start ``script`` in its listener role (``flag``), logging to ``name``.log."""
        return start_process([sys.executable, os.path.abspath(script), flag, "--host", self.args.host],
                             self.env, os.path.join(self.tmp, f"{name}.log"), what)

    def start_py_spy(self, pid: int) -> None:
        """Sample process ``pid`` with py-spy if ``--py-spy`` was given."""
        out = self.args.py_spy
        if not out:
            return
        fmt = {"svg": "flamegraph", "json": "speedscope"}.get(out.rsplit(".", 1)[-1], "raw")
        cmd = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(pid),
               "--rate", "250", "--format", fmt, "--threads", "-o", os.path.abspath(out)]
        if self.args.py_spy_gil:
            cmd.append("--gil")
        self.spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(self.tmp, "py-spy.log"), "wb"))

    def run_client(self, script: str, cfg: dict):
        """Run ``script --client`` with ``cfg``; -> the JSON of its last stdout line, None if it failed."""
        client = subprocess.run([sys.executable, os.path.abspath(script), "--client", json.dumps(cfg)],
                                stdout=subprocess.PIPE, env=self.env, cwd=ROOT)
        lines = client.stdout.decode().strip().splitlines()
        if client.returncode != 0 or not lines:
            print(f"[bench] client failed with exit code {client.returncode}", file=sys.stderr)
            return None
        return json.loads(lines[-1])

    def stop(self, other: subprocess.Popen, server: subprocess.Popen) -> tuple[int | None, int | None]:
        """Stop py-spy, the other listener, then the server; -> their exit codes (server log tail if bad)."""
        if self.spy is not None:
            stop_process(self.spy, signal.SIGINT)
            print(f"[bench] py-spy profile written to {self.args.py_spy}", flush=True)
        other_exit = stop_process(other)
        server_exit = stop_process(server)
        if server_exit != 0:
            with open(os.path.join(self.tmp, "server.log"), errors="replace") as f:
                print(f"[bench] server log tail:\n{f.read()[-3000:]}", file=sys.stderr)
        return other_exit, server_exit

    def verify(self) -> tuple[str, bool]:
        """``syncledger verify`` on the run's database; -> (its output, whether it accepted the ledger)."""
        ver = subprocess.run([*CLI, "verify", "--db", self.db], capture_output=True, text=True, env=self.env, cwd=ROOT)
        return (ver.stdout + ver.stderr).strip(), ver.returncode == 0

    def clean_up(self) -> None:
        """Remove the temp dir, or say where it is with ``--keep``."""
        if self.args.keep:
            print(f"[bench] kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ============================================================================ report

def print_header(width: int, title: str, *lines: str) -> None:
    """The report's opening: title with the platform, what the figures mean, the CPU legend."""
    print()
    print("=" * width)
    print(f"{title}  |  {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    for line in lines:
        print(line)
    print("CPU: average cores used during the scenario by the process under test (with its child processes), "
          "its CPU µs per request / the client / all other processes")
    print("-" * width)


CPU_HEADER = f"{'CPU: tested':>11} {'µs/req':>6} {'client':>6} {'others':>6}"


def cpu_columns(r: dict) -> str:
    """A report row's CPU columns (cores, and CPU µs of the tested process and its children per request: the
    figure that holds on a noisy machine), and the failure if any."""
    cores, rate = r["target_cores"], r.get("rps")
    per_request = "-" if _blank(cores) or not rate else f"{cores * 1e6 / rate:.0f}"
    return (f"{num(cores):>11} {per_request:>6} {num(r['client_cores']):>6} {num(r['other_cores']):>6}"
            + (f"   FAILED: {r['failure']}" if r["failure"] else ""))


def warn_busy(results: list[dict]) -> None:
    """Say so when other processes used the CPUs during the run."""
    busy = [r["other_cores"] for r in results if r["other_cores"] is not None]
    if busy and max(busy) > 0.15:
        print(f"WARNING: other processes used up to {max(busy):.2f} cores during the run: the figures are distorted")


def print_footer(width: int, verify_out: str, cmdline: str) -> None:
    """The report's closing: verify's verdict and the command line."""
    print(f"verify: {verify_out}")
    print(f"command: {cmdline}")
    print("=" * width)
