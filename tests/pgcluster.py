"""A throwaway PostgreSQL cluster for the tests: ``initdb`` on a temporary directory and a server listening on a
Unix socket only (no TCP port to clash), fsync and synchronous_commit on; one per test session, a ledger of its
own per test. Test modules import the fixtures they use from here (``from tests.pgcluster import ledger_db``).

Each test's ledger is a fresh schema of one shared database (its URL sets ``search_path``; syncledger keeps a
ledger, its triggers and its server lock per schema): ``CREATE SCHEMA`` takes a millisecond where ``CREATE
DATABASE ... TEMPLATE`` took 0.14-0.35 s here with fsync on, over some 40 PostgreSQL tests.

The PostgreSQL-backed tests are skipped only when the server binaries are missing (.ci/run installs Debian's
``postgresql``). initdb refuses to run as root: as root, the cluster belongs to ``nobody``.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from syncledger.server.app import Server

BACKENDS = ("sqlite", "postgresql", "cluster")


def find_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else where Debian puts it (the newest version)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


class Cluster:
    """A PostgreSQL server on a temporary directory; ``new_ledger()`` gives each test a ledger of its own."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        self.dir = tempfile.mkdtemp(prefix="syncledger-pg-")
        self.data, self.log = os.path.join(self.dir, "data"), os.path.join(self.dir, "server.log")
        self._names = itertools.count(1)
        self._admin = None
        self.running = False
        owner = {}
        if os.geteuid() == 0:  # initdb and postgres refuse root: the cluster is nobody's
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            owner = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self._owner = owner

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.dir, **self._owner)
        if done.returncode != 0:
            log = open(self.log).read() if os.path.exists(self.log) else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        self._run(self.initdb, "-D", self.data, "-U", "syncledger", "--auth=trust", "--no-locale", "-E", "UTF8",
                  "--no-sync")  # the cluster is thrown away; the server below runs with fsync on
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.dir} -c fsync=on "
                   "-c synchronous_commit=on -c max_connections=200 -c shared_buffers=32MB -c autovacuum=off")
        self._run(self.pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")
        self.running = True

    def url(self, database: str, schema: str | None = None) -> str:
        search_path = f"&options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://syncledger@/{database}?host={self.dir}{search_path}"

    def new_ledger(self) -> str:
        """The URL of an empty schema of its own (the ledger's tables are made by the first Store that opens it)."""
        import psycopg

        if self._admin is None:
            with psycopg.connect(self.url("postgres"), autocommit=True) as db:
                db.execute("CREATE DATABASE ledgers")
            self._admin = psycopg.connect(self.url("ledgers"), autocommit=True)
        name = f"ledger_{next(self._names)}"
        self._admin.execute(f"CREATE SCHEMA {name}")
        return self.url("ledgers", name)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.running:
            self.running = False
            subprocess.run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"], capture_output=True,
                           cwd=self.dir, **self._owner)
        shutil.rmtree(self.dir, ignore_errors=True)


_cluster: Cluster | None = None
_users = 0


def _stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


@pytest.fixture(scope="session")
def pg_cluster():
    """The session's PostgreSQL cluster (one per process, however many modules import this fixture)."""
    global _cluster, _users
    if find_binary("pg_ctl") is None or find_binary("initdb") is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    if _cluster is None:
        cluster = Cluster()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _cluster = cluster
        atexit.register(_stop)
    _users += 1
    try:
        yield _cluster
    finally:
        _users -= 1
        if _users == 0:
            _stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty PostgreSQL ledger for this test (a schema of its own)."""
    return pg_cluster.new_ledger()


# The mark: run a test on each backend (a test that takes ``ledger_db``, or ``mem_server``, or ``backend``).
every_backend = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request) -> str:
    """``sqlite`` (the default), or for a test marked :data:`every_backend`, each of :data:`BACKENDS` in turn:
    ``postgresql`` is one server, ``cluster`` two nodes on one PostgreSQL ledger."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def ledger_db(request, backend, tmp_path) -> str:
    """Where the test's ledger lives: a new SQLite file, or a fresh PostgreSQL ledger."""
    return str(tmp_path / "ledger.db") if backend == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def mem_db(request, backend) -> str:
    """conftest's ``:memory:``, or a fresh PostgreSQL ledger."""
    return ":memory:" if backend == "sqlite" else request.getfixturevalue("pg_url")


class Nodes:
    """Two cluster nodes on one ledger, shown to a test as one server: each new connection (a memory stream, or a
    port looked up) goes to the next node; reads through ``mainloop`` are made on the first node once it has
    taken in what the other committed; anything else is the first node's (both share the secret and clock)."""

    def __init__(self, nodes: list[Server]):
        self.nodes = nodes
        self._turns = itertools.cycle(nodes)
        self.keys = _Keys(nodes)
        self.mainloop = _MainLoops(nodes)

    def __getattr__(self, name: str):
        return getattr(self.nodes[0], name)

    def serve_stream(self, stream, peer) -> None:
        next(self._turns).serve_stream(stream, peer)

    def reload_keys(self) -> None:
        """A test manager stored through one node is read again by both."""
        for node in self.nodes:
            node.reload_keys()

    @property
    def ports(self):
        return next(self._turns).ports


class _Keys:
    """The managers' key versions (as the first node holds them)."""

    def __init__(self, nodes: list[Server]):
        self.nodes = nodes

    @property
    def versions(self) -> dict[int, int]:
        return self.nodes[0].keys.versions


class _MainLoops:
    """Both nodes' mainLoops: paused and resumed together; a read sees every node's commits."""

    def __init__(self, nodes: list[Server]):
        self.nodes = nodes

    async def read(self, fn, *args):
        await self.nodes[0].newest_seq(sys.maxsize)  # (a catch-up first)
        return await self.nodes[0].mainloop.read(fn, *args)

    def pause(self) -> None:
        for node in self.nodes:
            node.mainloop.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.mainloop.resume()


@pytest.fixture
async def mem_server(start_server, backend, mem_db):
    """conftest's ``mem_server`` (an importing module's own), on ``mem_db``: on PostgreSQL the store stays on the
    Trio thread as the in-memory one does (threaded=False), so MockClock still drives every timeout."""
    return await start_server(mem=True, db=mem_db, backend=backend)
