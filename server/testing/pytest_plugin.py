"""pytest plugin (registered as a ``pytest11`` entry point, active once syncledger is installed): the syncledger
server in an integrator's tests, in two ways.

In-process, inside a pytest-trio test (``pip install 'syncledger[pytest]'``; ``trio_mode`` or
``@pytest.mark.trio``; works with the ``autojump_clock`` fixture):
    syncledger_config  the Config to start with (override it in a conftest.py to change anything)
    syncledger         a running server.testing.Harness: .server, .ports, .token, .client(), .tcp_client(),
                       .wallet(), .faults, .verify(); the ledger is audited when the test ends
    syncledger_client  a ready client (ADMIN token) on an in-memory connection
    syncledger_token   an ADMIN token
    syncledger_ports   the bound ports (tcp, ws, wallet)
Without pytest-trio these fail with a line that says how to get it (not pytest's ``fixture 'nursery' not found``).

As a process, from any test (plain, asyncio, Trio; no pytest-trio needed): ``python -m syncledger serve`` on free
ports, stopped with SIGTERM when its scope ends (and an exit status other than 0 fails the test):
    syncledger_server          a :class:`ServerProcess` on a fresh ledger for each test
    syncledger_server_session  one :class:`ServerProcess` for the whole session (for each xdist worker), shared
                               by every test that names it: its ledger holds what earlier tests left
    syncledger_serve_args      flags added to ``serve`` by both (session-scoped: override it, session-scoped, in a
                               conftest.py), e.g. ``["--wallet-test-endpoints"]``
    syncledger_seed            the ledger every server starts from (one ADMIN manager), made once a session: with
                               :func:`running_server`, a server of your own
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, NamedTuple, Sequence

import pytest

if TYPE_CHECKING:  # imported by the in-process fixtures when they run: a process-only test does not pay for them
    from ..client import Client
    from ..config import Config
    from . import Harness

MANAGER_LOGIN = 1  # the ADMIN manager the process fixtures store, and whose token they give
MANAGER_PASSWORD = "syncledger-test-password"
WALLET_TOKEN = "syncledger-test-wallet-token"  # the provider ``default``'s (the same as the in-process harness's)
START_TIMEOUT = STOP_TIMEOUT = 30.0  # seconds
LISTENING = re.compile(r"^listening tcp=(\S+):(\d+) ws=\S+:(\d+) wallet=\S+:(\d+)(?: admin=(\S+):(\d+))?\n", re.M)
NO_TRIO = ("syncledger's in-process fixtures (syncledger, syncledger_client, syncledger_token, syncledger_ports) "
           "run the server inside a Trio test and need pytest-trio, which is not installed (or is disabled: "
           "-p no:trio). Install it with pip install 'syncledger[pytest]' (pytest and pytest-trio) and set "
           "trio_mode = true in your pytest config, or mark the tests @pytest.mark.trio. A test that is not a Trio "
           "test (plain, asyncio) can use the syncledger_server fixture instead: the server as a process.")


# ---- in-process, in a pytest-trio test


@pytest.fixture
def syncledger_config() -> Config:
    from . import test_config
    return test_config()


@pytest.fixture
async def syncledger(nursery: Any, syncledger_config: Config) -> AsyncIterator[Harness]:
    from ..app import serve
    from . import Harness
    server = await nursery.start(serve, syncledger_config)
    harness = Harness(server)
    yield harness
    report = await harness.verify()
    assert report.ok, f"ledger audit failed after the test: {report}"


@pytest.fixture
async def syncledger_client(syncledger: Harness) -> AsyncIterator[Client]:
    async with syncledger.client() as client:
        yield client


@pytest.fixture
def syncledger_token(syncledger: Harness) -> str:
    return syncledger.token


@pytest.fixture
def syncledger_ports(syncledger: Harness) -> Any:
    return syncledger.ports


class _NoPytestTrio:
    """Registered in place of pytest-trio when it is not: its ``nursery`` fixture says what is missing."""

    @pytest.fixture
    def nursery(self) -> None:
        pytest.fail(NO_TRIO, pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    if not any(getattr(p, "__name__", None) == "pytest_trio.plugin" for p in config.pluginmanager.get_plugins()):
        config.pluginmanager.register(_NoPytestTrio(), "syncledger-no-pytest-trio")


# ---- as a process, from any test


class ServerProcessError(Exception):
    """``syncledger serve`` did not start, or did not stop with exit status 0 (the message ends with its log)."""


class Seed(NamedTuple):
    """A ledger folder holding one ADMIN manager (``ledger.db`` and its key file), and that manager's token."""

    folder: Path
    token: str


@dataclass(frozen=True)
class ServerProcess:
    """A running ``syncledger serve``: where it listens, and the tokens to call it with."""

    pid: int
    host: str  # of the manager TCP API, the WebSocket and the wallet
    tcp_port: int
    ws_port: int
    wallet_port: int
    admin_host: str
    admin_port: int | None  # None with ``--admin-port -1`` in syncledger_serve_args
    token: str  # an ADMIN token of manager ``login``, for the TCP API (``__token``) and the WebSocket (``?token=``)
    wallet_token: str  # the token of the game provider ``default`` (``?authToken=`` or ``Authorization: Bearer``)
    db: Path  # the ledger file
    log: Path  # the server's stderr
    login: int = MANAGER_LOGIN
    password: str = MANAGER_PASSWORD  # manager ``login``'s, for a ``Login`` of your own

    @property
    def ws_url(self) -> str:
        """The event WebSocket (add ``?token=...&from_seq=N``)."""
        return f"ws://{_netloc(self.host, self.ws_port)}/events"

    @property
    def wallet_url(self) -> str:
        """The game-wallet API's base: POST ``wallet_url + "balance"`` and so on."""
        return f"http://{_netloc(self.host, self.wallet_port)}/v1/"

    @property
    def admin_url(self) -> str | None:
        """The admin listener (``/healthz``, ``/readyz``, ``/metrics``, the back-office page)."""
        return None if self.admin_port is None else f"http://{_netloc(self.admin_host, self.admin_port)}/"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _env() -> dict[str, str]:
    """This process's environment without any SYNCLEDGER_ variable (the fixtures say what the server runs with)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCLEDGER_")}
    return {**env, "SYNCLEDGER_WALLET_TOKEN": WALLET_TOKEN}


def _syncledger(folder: Path, *args: str, stdin: str | None = None) -> str:
    """Run one ``syncledger`` command (``python -m syncledger``) in ``folder``; its standard output."""
    done = subprocess.run([sys.executable, "-m", "syncledger", *args], cwd=folder, env=_env(), input=stdin,
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    if done.returncode != 0:
        raise ServerProcessError(f"syncledger {args[0]} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def make_seed(folder: Path) -> Seed:
    """A new ledger in ``folder`` with manager MANAGER_LOGIN (ADMIN) stored, and a token for it."""
    db = str(folder / "ledger.db")
    _syncledger(folder, "manager", "add", "--db", db, "--login", str(MANAGER_LOGIN), "--session", "ADMIN",
                "--password-stdin", stdin=MANAGER_PASSWORD + "\n")
    return Seed(folder, _syncledger(folder, "token", "--db", db, "--login", str(MANAGER_LOGIN)).strip())


@contextmanager
def running_server(folder: Path, seed: Seed, args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """``syncledger serve`` in ``folder`` on a copy of ``seed``'s ledger (its token stays valid: the key file is
    copied too), on free ports, with ``args`` added; SIGTERM when the block ends, and a ServerProcessError unless
    it then exits with status 0 within STOP_TIMEOUT."""
    for path in seed.folder.iterdir():
        shutil.copy2(path, folder / path.name)
    db, out, log = folder / "ledger.db", folder / "serve.out", folder / "serve.log"
    command = [sys.executable, "-m", "syncledger", "serve", "--db", str(db), "--tcp-port", "0", "--ws-port", "0",
               "--wallet-port", "0", "--admin-port", "0", *args]
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=folder, env=_env(), stdout=stdout, stderr=stderr)
    try:
        found = _listening(process, out, log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    try:
        yield ServerProcess(process.pid, found[1], int(found[2]), int(found[3]), int(found[4]), found[5] or found[1],
                            int(found[6]) if found[6] else None, seed.token, WALLET_TOKEN, db, log)
    finally:
        _stop(process, log)


def _listening(process: subprocess.Popen, out: Path, log: Path) -> re.Match:
    """The ``listening ...`` line ``serve`` prints once every listener is bound."""
    deadline = time.monotonic() + START_TIMEOUT
    while not (found := LISTENING.search(out.read_text())):
        if process.poll() is not None:
            raise ServerProcessError(f"syncledger serve exited with {process.returncode} before it listened; "
                                     f"its log: {_tail(log)}")
        if time.monotonic() > deadline:
            raise ServerProcessError(f"syncledger serve did not listen within {START_TIMEOUT} s; its log: {_tail(log)}")
        time.sleep(0.01)
    return found


def _stop(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM (a clean stop), then its exit status must be 0."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise ServerProcessError(f"syncledger serve (pid {process.pid}) did not stop within {STOP_TIMEOUT} s of "
                                 f"SIGTERM and was killed; its log: {_tail(log)}") from None
    if code != 0:
        raise ServerProcessError(f"syncledger serve (pid {process.pid}) exited with {code}, not 0; its log: "
                                 f"{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def syncledger_serve_args() -> list[str]:
    return []


@pytest.fixture(scope="session")
def syncledger_seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """Made once a session (two ``syncledger`` commands), copied for each server."""
    return make_seed(tmp_path_factory.mktemp("syncledger-seed"))


@pytest.fixture
def syncledger_server(tmp_path_factory: pytest.TempPathFactory, syncledger_seed: Seed,
                      syncledger_serve_args: list[str]) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("syncledger"), syncledger_seed, syncledger_serve_args) as server:
        yield server


@pytest.fixture(scope="session")
def syncledger_server_session(tmp_path_factory: pytest.TempPathFactory, syncledger_seed: Seed,
                              syncledger_serve_args: list[str]) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("syncledger"), syncledger_seed, syncledger_serve_args) as server:
        yield server
