"""Wires the nursery tree: mainLoop, timeout scheduler, TCP, WebSocket and wallet HTTP listeners.

``serve(config)`` is startable with ``nursery.start`` and hands back the running :class:`Server`
(its bound ports are ``server.ports``).
"""

from __future__ import annotations

import calendar
import logging
import os
import secrets
import ssl
import time
from functools import partial
from typing import Any, Callable

import trio

from syncledger.ledger import Store, engine
from syncledger.ledger.store import CatchUp
from syncledger.ledger.wallet import PruneSessions

from . import auth
from .events import ws
from .wallet.app import WalletApp
from .core.writer import WriterProcess
from .auth import Claims, LoginThrottle, ManagerKeys, Provider, ProviderKeys, Tokens
from .core.broker import Broker
from .manager.commands import Dispatcher
from .config import Config, Ports
from .health import Watch
from .http import HttpServer, Limits
from .limits import (REFUSALS, UPGRADE_REFUSALS, Gate, LineBudget, SubscriberCap, default_cap,
                     raise_descriptor_limit)
from .listen import Listener
from .core.lockfile import LedgerLock, PgLock
from .core.mainloop import Job, MainLoop, ShuttingDown
from .metrics import Metrics
from .admin.app import AdminApp, AdminServer
from .core.readpool import ReadPool
from .core.tail import Tail
from .manager.tcp import Connection
from .core.timeouts import Timeouts

log = logging.getLogger("syncledger")
KEYS_WAIT = 1.0  # seconds a request waits for the managers' key versions to be read again (see Server.authorize)


PROVIDERS = "SELECT name, token_hash, settlement, currencies, promo, removed FROM providers"


class ProvidersError(Exception):
    """The providers the server is given cannot be used as they are (one line, exit 2)."""


class FailStop(Exception):
    """The server stopped because it could not know what the ledger file holds (logged at CRITICAL)."""


class Server:
    def __init__(self, config: Config):
        self.config = config
        self._readers: list[Any] = []
        self._reads: ReadPool | None = None
        self._hashing = trio.CapacityLimiter(1)
        self.throttle = LoginThrottle(trio.current_time)
        self.watch = Watch(trio.current_time, config.stall_after)  # blocking work in flight, for /readyz
        # first: a wrong certificate stops it before anything is touched
        self._tls, self.tls_not_after = _tls_context(config)
        self._lock = LedgerLock.acquire(config.db, config.cluster)  # before the file is touched: one server per ledger
        try:
            self.node = secrets.token_hex(4) if config.cluster else None  # signs this node's notifications
            self.store = Store(config.db, cluster=config.cluster, node=self.node or "")
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.writer: WriterProcess | None = None
        try:
            self.tokens = Tokens(config.secret or auth.load_secret(config.db, self.store.db), clock=self.wall_time)
            self.keys = self._manager_keys()
            self.providers = self._provider_keys()
            if config.db != ":memory:":
                self._reads = ReadPool(config.db, size=2, threaded=config.threaded, timeout=config.read_timeout,
                                       watch=self.watch)
            if config.writer == "process" and config.db != ":memory:":
                self.writer = WriterProcess(config.db, config.log_format, log_level=config.log_level,
                                            lock_fd=getattr(self._lock, "fd", None), node=self.node)
                if isinstance(self._lock, LedgerLock):
                    self._lock.note_writer(self.writer.process.pid)
        except BaseException:
            for reader in self._readers:
                reader.close()
            if self._reads is not None:
                self._reads.close()
            self.store.close()
            if self._lock is not None:
                self._lock.release()
            raise
        self.broker = Broker(SubscriberCap(config.max_subscribers_per_login, config.max_subscribers_per_address))
        self.timeouts = Timeouts()
        self.mainloop = MainLoop(self.store, self.broker.publish, batch_max=config.batch_max,
                                 inbox_size=config.inbox_size, threaded=config.threaded, writer=self.writer,
                                 cluster=config.cluster)
        self.mainloop.fail_stop = self.fail_stop
        self.mainloop.watch = self.watch
        self.mainloop.on_skip = self.broker.skipped
        self.tail = Tail(config.db, self.mainloop, self.node) if self.node else None  # what the other nodes commit
        self.dispatcher = Dispatcher(self)
        self.wallet = WalletApp(self, config.wallet_test_endpoints)
        self.listeners = self._listeners(config)
        self.gates = {name: listener.gate for name, listener in self.listeners.items()}
        self.connection_lines = LineBudget(20, trio.current_time)  # "opened"/"closed" lines a second, in all
        http_limits = Limits(untrusted_idle=config.idle_timeout)
        self._http = HttpServer(self.wallet, http_limits)
        self.metrics = Metrics()
        self.mainloop.metrics = self.metrics
        self.metrics.bind(queued=lambda: self.mainloop.queued, gates=self.gates,
                          subscribers=lambda: len(self.broker.subscribers), seq=lambda: self.mainloop.committed_seq,
                          tls_not_after=self.tls_not_after, wallet_actions=self.wallet.routes.values())
        if config.db != ":memory:" and not engine.is_postgres(config.db):  # (what syncledger backup copies)
            self.metrics.bind_backups(config.db)
        self._admin = AdminServer(AdminApp(self, self.dispatcher.answer_line), http_limits)
        self._wallet_done = trio.Event()
        self.connections: set[Connection] = set()
        self.ports: Ports | None = None
        self._epoch = config.epoch
        self._root: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._conns: trio.Nursery | None = None
        self._connections_done = trio.Event()
        self.stopping = False
        self.failure: str | None = None  # set by a fail-stop

    async def newest_seq(self, wanted: int) -> int:
        """The newest event this server has published. A node of a cluster that has published less than
        ``wanted`` first takes in what the other nodes committed (a subscriber moving over from another node
        names a seq of theirs, which this node's tail may not have brought yet)."""
        if self.tail is not None and wanted > self.mainloop.committed_seq:
            await self.mainloop.run_command(CatchUp())  # (answered after its events were published)
        return self.mainloop.committed_seq

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)``, a function of ledger.reads, on committed state: on a read-only connection
        of its own (a file ledger: never waits for the writer, never holds it), else on the writer's
        connection between two batches. None once the ledger's state is unknowable (fail-stop)."""
        if self.mainloop.failure is not None:
            raise ShuttingDown()
        if self._reads is None:
            return await self.mainloop.read(fn, self.store.db, *args)
        return await self._reads(fn, *args)

    def store_writable(self) -> bool:
        """The ledger file is there and this process may write it (an in-memory ledger always is)."""
        return engine.writable(self.config.db)

    def _manager_keys(self) -> ManagerKeys:
        """Managers' key versions, read on a connection of their own (the writer's is the mainLoop's) and kept
        with a function that tells whether the ledger changed since (an in-memory ledger changes only through
        this process: never by itself)."""
        query = "SELECT login, key_version FROM managers WHERE removed = 0"
        path = self.config.db
        if path == ":memory:":
            self._keys_read, self._keys_changed = (lambda: dict(self.store.db.execute(query))), (lambda: False)
        else:
            reader = engine.connect_ro(path, on_open=engine.bound_session)
            self._readers.append(reader)
            seen = [engine.data_version(reader)]

            def changed() -> bool:
                version = engine.data_version(reader)  # None (PostgreSQL): unknown, read them again
                changed, seen[0] = version is None or version != seen[0], version
                return changed
            self._keys_read, self._keys_changed = (lambda: dict(reader.execute(query))), changed
        return ManagerKeys(self._keys_read(), trio.current_time)

    async def authorize(self, claims: Claims) -> None:
        """Refuse a revoked token (``ManagerKeys.check``), the managers' key versions read again first when
        due: in a worker thread, waited for at most KEYS_WAIT seconds. A read that takes longer (a stalled
        database) goes on alone, watched by /readyz; meanwhile the versions read last stand."""
        keys = self.keys
        if keys.due(claims):
            await self._off_loop("a read of the managers' keys", lambda: setattr(keys, "reading", True),
                                 self._refresh_keys)
        keys.check(claims)

    async def _off_loop(self, what: str, begin: Callable[[], None], fn: Callable[[int | None], Any]) -> Any:
        """``fn(watched)``, a read of a small table, in a worker thread (unless single-threaded), waited for at
        most KEYS_WAIT seconds and watched by /readyz (``fn`` ends its watch entry, and what ``begin`` began).
        None if it took longer: it goes on alone and what it returns is dropped."""
        if not self.config.threaded:
            begin()
            return fn(None)
        await trio.lowlevel.checkpoint_if_cancelled()  # (from here on, the thread runs: it ends the read)
        begin()
        watched = self.watch.begin(what)
        with trio.move_on_after(KEYS_WAIT):
            return await trio.to_thread.run_sync(fn, watched, abandon_on_cancel=True)
        return None

    def _refresh_keys(self, watched: int | None) -> None:
        """The managers' key versions read again if the ledger changed (in a worker thread, unless
        single-threaded); a database that fails the read leaves the versions read last."""
        try:
            if self._keys_changed():
                self.keys.versions = self._keys_read()
        except engine.errors() as e:
            log.warning("the managers' keys could not be read again (%s): the ones read last stand", engine.said(e))
        finally:
            self.keys.reading = False
            if watched is not None:
                self.watch.end(watched)

    def reload_keys(self) -> None:
        """Read the managers' key versions now, on this thread (for tests and the testing harness)."""
        self.keys.versions = self._keys_read()

    # ---- game providers: which one a wallet call's token is

    def _provider_keys(self) -> ProviderKeys:
        """The providers' tokens: the table's (read again by :meth:`_watch_providers`), the default provider's
        SYNCLEDGER_WALLET_TOKEN (config ``wallet_token``), and the config file's providers, whose tokens are in
        the environment variables they name. A config file's provider may not also be in the table."""
        config, fixed, configured = self.config, {}, {}
        default = config.wallet_token or os.environ.get("SYNCLEDGER_WALLET_TOKEN")
        if default:
            fixed["default"] = default
        for p in config.providers:
            token = os.environ.get(p.token_env)
            if not token:
                raise ProvidersError(f"provider {p.name} of the config file: its token_env {p.token_env} is not set "
                                     "in the environment")
            same = [name for name, other in fixed.items() if other == token]
            if same:
                raise ProvidersError(f"providers {same[0]} and {p.name} have the same token: a token names one "
                                     "provider")
            fixed[p.name] = token
            configured[p.name] = Provider(p.name, p.settlement, frozenset(p.currencies), p.promo)
        keys = ProviderKeys(fixed, configured, trio.current_time)
        path = self.config.db
        if path == ":memory:":  # (changes only through this process: read again by reload_providers)
            self._providers_read = lambda: list(self.store.db.execute(PROVIDERS))
            self._providers_changed: Callable[[], bool] = lambda: False
        else:
            reader = engine.connect_ro(path, on_open=engine.bound_session)
            self._readers.append(reader)
            seen: list[int | None] = [None]

            def changed() -> bool:
                version = engine.data_version(reader)  # None (PostgreSQL): unknown, read them again
                changed, seen[0] = version is None or version != seen[0], version
                return changed
            self._providers_read, self._providers_changed = (lambda: list(reader.execute(PROVIDERS))), changed
        rows = self._providers_read()
        both = sorted({row[0] for row in rows} & set(configured))
        if both:
            raise ProvidersError(f"provider {both[0]} is in the config file and in the ledger's providers table "
                                 "(syncledger provider list): declare it in one place")
        keys.load(rows)
        self._providers_reading = self._providers_stale = False
        self._providers_wake = trio.Event()
        keys.wake = lambda: self._providers_wake.set()
        return keys

    async def _watch_providers(self) -> None:
        """Read the providers table again every ``every`` seconds, or sooner after a token no provider has (at
        most every half of it), off the event loop: a stalled read goes on alone and the map read last stands."""
        half = self.providers.every / 2
        while True:
            await trio.sleep(half)  # (at most two reads a period, however many unknown tokens come)
            with trio.move_on_after(half):
                await self._providers_wake.wait()
            self._providers_wake = trio.Event()
            if self._providers_reading:  # a read still under way (a stalled database): not another
                continue
            rows = await self._off_loop("a read of the providers", lambda: setattr(self, "_providers_reading", True),
                                        self._refresh_providers)
            if rows is None:  # it did not answer in time (or failed): read the table again next time
                self._providers_stale = True
            elif rows is not _UNCHANGED:
                self._providers_stale = False
                self.providers.load(rows)

    def _refresh_providers(self, watched: int | None) -> Any:
        """The providers table's rows, or _UNCHANGED if the ledger has not changed since the last read; None if
        the database fails the read (in a worker thread, unless single-threaded)."""
        try:
            if self._providers_changed() or self._providers_stale:
                return self._providers_read()
            return _UNCHANGED
        except engine.errors() as e:
            log.warning("the providers could not be read again (%s): the ones read last stand", engine.said(e))
            return None
        finally:
            self._providers_reading = False
            if watched is not None:
                self.watch.end(watched)

    def reload_providers(self) -> None:
        """Read the providers table now, on this thread (for tests and the testing harness)."""
        self.providers.load(self._providers_read())

    # ---- time: everything follows Trio's clock, so MockClock drives sync timeouts and expiries

    def wall_time(self) -> float:
        if self._epoch is None:
            self._epoch = time.time() - trio.current_time()
        return self._epoch + trio.current_time()

    def now(self) -> int:
        return int(self.wall_time())

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """CPU-heavy work (password hashing: 16 MB and ~50 ms each) off the Trio thread, one at a time at
        most, unless running single-threaded."""
        if self.config.threaded:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._hashing)
        return fn(*args)

    # ---- running

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        self.wall_time()
        try:
            async with trio.open_nursery() as root:
                self._root, self._nursery = root.cancel_scope, root
                await root.start(self.mainloop.run)
                await root.start(self.timeouts.run)
                if self.tail is not None:
                    root.start_soon(self.tail.run)
                if isinstance(self._lock, PgLock):
                    root.start_soon(self._lock.keep, self.fail_stop)
                if self.writer is not None:
                    root.start_soon(self._watch_writer)
                await root.start(self._serve_tcp)
                await root.start(partial(self.listeners["ws"].serve, partial(ws.serve_stream, self), connections=root))
                await root.start(self._serve_wallet)
                if "admin" in self.listeners:
                    # (not stopped with the others at shutdown: /readyz says "not ready" until the very end)
                    await root.start(partial(self._admin.serve, self.listeners["admin"], connections=root))
                self.ports = Ports(*(self.listeners[name].port if name in self.listeners else None
                                     for name in Ports._fields))
                root.start_soon(self._prune_game_sessions)
                if self.config.db != ":memory:":
                    root.start_soon(self._watch_providers)
                root.start_soon(self.broker.trim.run)
                task_status.started(self)
        finally:
            for reader in self._readers:
                reader.close()
            if self._reads is not None:
                self._reads.close()
            if self.writer is not None:
                self.writer.close()  # (already closed by the mainLoop, unless it never ran)
            if not self.mainloop.abandoned:  # (else its thread may still be using it)
                self.store.close()
            if self._lock is not None:
                self._lock.release()
        if self.failure is not None:
            raise FailStop(self.failure)

    def _listeners(self, config: Config) -> dict[str, Listener]:
        """Every listener of the server, each with its cap, its connect rate and TLS (see server.listen)."""
        addresses = {"tcp": (config.host, config.tcp_port), "ws": (config.host, config.ws_port),
                     "wallet": (config.host, config.wallet_port)}
        if config.admin_port is not None:
            addresses["admin"] = (config.admin_host, config.admin_port)
        admin_cap = config.admin_max_connections
        cap = config.max_connections or default_cap(raise_descriptor_limit(), reserve=200 + admin_cap)
        caps = {"admin": min(cap, admin_cap)}
        reasons = {"ws": REFUSALS + tuple(UPGRADE_REFUSALS.values())}
        return {name: Listener(name, host, port, Gate(name, caps.get(name, cap), trio.current_time,
                                                      rate=config.max_connect_rate,
                                                      reasons=reasons.get(name, REFUSALS)), self._tls,
                               https=name in ("wallet", "admin"), handshakes=config.tls_handshakes,
                               handshake_timeout=config.tls_handshake_timeout,
                               handshake_rate=config.tls_handshake_rate)
                for name, (host, port) in addresses.items()}

    async def _watch_writer(self) -> None:
        """The writer process's end, seen at once. With no batch in it, nothing more can be applied: fail-stop,
        saying so (a batch in it tells its own fate: Unsure, or WriterEnded if it never reached the writer)."""
        how = await _ended(self.writer)
        if not (self.stopping or self.mainloop.applying or self.mainloop.stopped.is_set()):
            self.fail_stop(f"the writer process ended ({how}) with no batch in it: nothing acknowledged was lost")

    async def _prune_game_sessions(self) -> None:
        """Forget game sessions idle for longer than the ttl (they can no longer be used), every minute."""
        while True:
            await trio.sleep(60)
            try:
                await self.mainloop.submit(Job(PruneSessions(self.now() - self.config.game_session_ttl), _ignore))
            except ShuttingDown:
                return

    async def _serve_wallet(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """The wallet's HTTP/1.1 connections; at shutdown, accepting stops, calls in flight are answered and
        connections waiting for their next request close."""
        async with trio.open_nursery() as calls:
            await calls.start(partial(self._http.serve, self.listeners["wallet"], connections=calls))
            task_status.started()
        self._wallet_done.set()

    async def _serve_tcp(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as conns:
            self._conns = conns  # manager connections, socket or in-memory: shutdown waits for all of them
            await conns.start(partial(self.listeners["tcp"].serve, partial(self._serve_connection, peer=None),
                                      connections=conns))
            task_status.started()
        self._connections_done.set()

    async def _tcp_connection(self, stream: trio.abc.Stream, peer: trio.abc.Stream | None = None) -> None:
        """An in-process manager connection (``peer``: the client's end), admitted as the TCP listener's are."""
        await self.listeners["tcp"].admit(stream, partial(self._serve_connection, peer=peer))

    async def _serve_connection(self, stream: trio.abc.Stream, peer: trio.abc.Stream | None) -> None:
        conn = Connection(stream, self.dispatcher, self.broker, lines=self.connection_lines,
                          outbox_size=self.config.outbox_size,
                          outbox_bytes=self.config.outbox_bytes, stall=self.config.replay_stall,
                          idle_timeout=self.config.idle_timeout, silent_timeout=self.config.silent_timeout,
                          answer_grace=self.config.sync_timeout_ms / 1000 + 1, peer=peer)
        self.connections.add(conn)
        try:
            await conn.run()
        except Exception:
            log.exception("connection %d failed", conn.id)
        finally:
            self.connections.discard(conn)

    def serve_stream(self, stream: trio.abc.Stream, peer: trio.abc.Stream) -> None:
        """Serve ``stream`` as a manager connection from within this process (no socket; ``peer``: the client's
        end, see testing.connect_memory)."""
        self._conns.start_soon(self._tcp_connection, stream, peer)

    async def shutdown(self) -> None:
        """Stop accepting and reading; apply what is queued within the grace period and answer it, answer
        what is still queued after it 503 without applying it (never both); answer every pending request
        truthfully, flush what connections have buffered, then stop everything."""
        if self.stopping:
            return
        grace = self.config.shutdown_grace
        self._stop_taking_work()
        # Connections keep reading meanwhile: each new request is answered 503 SHUTTING_DOWN.
        with trio.move_on_after(grace):
            await self.mainloop.stopped.wait()
        self.mainloop.drop_queued()  # what is left is answered 503 and not applied
        with trio.move_on_after(grace):
            await self.mainloop.stopped.wait()  # the batch being committed, if any, is answered by its outcome
        if not self.mainloop.stopped.is_set():  # that batch does not answer: its fate cannot be known here
            self.mainloop.abandon(f"the shutdown's grace ran out ({grace:g} s) with a batch in the ledger's writer "
                                  "that has not answered (a stalled database or disk, or a stopped writer process): "
                                  "whether it was committed is unknown")
            await self.mainloop.stopped.wait()
        if self.failure is not None:
            return  # (the fail-stop ends the server)
        log.info("stopped; ledger head %d:%s", *self.mainloop.head())
        for conn in list(self.connections):
            for pending in list(conn.pending):
                pending.stopped()
            conn.stop_reading()
        with trio.move_on_after(grace):
            await self._connections_done.wait()
            await self._wallet_done.wait()
        if self._root is not None:
            self._root.cancel()

    def _stop_taking_work(self) -> None:
        self.stopping = True
        for name in ("tcp", "ws", "wallet"):
            self.listeners[name].stop()
        self._http.stop()  # wallet connections finish the call in flight, then close
        self.mainloop.resume()
        self.mainloop.close()

    def fail_stop(self, reason: str) -> None:
        """The ledger file's content cannot be known: stop at once (fail-stop, as TigerBeetle and PostgreSQL
        do). One CRITICAL line; queued work is answered 503 unapplied; ``run`` raises FailStop, and the
        ``syncledger serve`` process exits non-zero so that a supervisor restarts it."""
        if self.failure is not None:
            return
        self.failure = reason
        self.stopping = True  # at once: no request is taken from here on
        self.metrics.fail_stop.set(1)
        log.critical("stopping: %s; nothing more is served. Restart syncledger: it recovers what the ledger "
                     "file holds", reason)
        self.mainloop.drop_queued()
        if self._nursery is not None:
            self._nursery.start_soon(self._stop_after_failure)

    async def _stop_after_failure(self) -> None:
        self.stopping = False  # (set by fail_stop; _stop_taking_work sets it again with the rest)
        self._stop_taking_work()
        await self.mainloop.stopped.wait()
        for conn in list(self.connections):
            conn.stop_reading()
        with trio.move_on_after(1):  # flush what is buffered; unanswered requests stay unanswered
            await self._connections_done.wait()
        if self._root is not None:
            self._root.cancel()


async def _ended(writer: WriterProcess) -> str:
    """Wait until the writer process ends (a pidfd: seen at once), then say how it did."""
    try:
        fd = os.pidfd_open(writer.process.pid)
    except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): look every second
        while writer.process.poll() is None:
            await trio.sleep(1)
        return writer.ended()
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    return writer.ended()


def _tls_context(config: Config) -> tuple[ssl.SSLContext | None, float | None]:
    """The listeners' TLS context (None: no TLS) and the certificate's notAfter (Unix time). A certificate
    that has expired or is not yet valid is served all the same, with a WARNING (README, TLS)."""
    if config.tls_cert is None and config.tls_key is None:
        return None, None
    if config.tls_cert is None or config.tls_key is None:
        raise TlsError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot use the TLS certificate {config.tls_cert} and key {config.tls_key}: {e}") from None
    try:
        not_before, not_after = certificate_validity(config.tls_cert)
    except (OSError, ValueError, IndexError):
        log.warning("cannot read the validity dates of the TLS certificate %s", config.tls_cert)
        return context, None
    now, shown = time.time(), "%Y-%m-%d %H:%M UTC"
    if now >= not_after:
        log.warning("the TLS certificate %s expired on %s (%s ago): clients that verify it refuse every "
                    "connection; renew it and restart syncledger", config.tls_cert,
                    time.strftime(shown, time.gmtime(not_after)), _span(now - not_after))
    elif now < not_before:
        log.warning("the TLS certificate %s is not valid before %s (in %s): clients that verify it refuse every "
                    "connection until then", config.tls_cert, time.strftime(shown, time.gmtime(not_before)),
                    _span(not_before - now))
    return context, not_after


def certificate_validity(path: str) -> tuple[int, int]:
    """(notBefore, notAfter) of the first certificate of a PEM file, in Unix seconds: read from its DER as
    RFC 5280 lays it out (the standard library's ssl module decodes only a peer's verified certificate)."""
    with open(path, encoding="ascii", errors="replace") as f:
        pem = f.read()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    der = ssl.PEM_cert_to_DER_cert(pem[pem.index(begin):pem.index(end) + len(end)])
    at = _der(der, _der(der, 0)[1])[1]  # inside the tbsCertificate, inside the Certificate
    if der[at] == 0xA0:  # version
        at = _der(der, at)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        at = _der(der, at)[2]
    at = _der(der, at)[1]  # inside the validity
    times = []
    for _ in range(2):
        tag, start, at = _der(der, at)
        text = der[start:at].decode("ascii")
        if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ: 50-99 are 19YY
            text = ("19" if text[:2] >= "50" else "20") + text
        times.append(calendar.timegm(time.strptime(text, "%Y%m%d%H%M%SZ")))
    return times[0], times[1]


def _der(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, where its content starts, where it ends) of the DER element at ``at``."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, at = int.from_bytes(data[at:at + size], "big"), at + size
    return tag, at, at + length


def _span(seconds: float) -> str:
    days = round(seconds / 86400)
    return f"{days} days" if days >= 2 else f"{round(seconds / 3600)} hours"


class TlsError(Exception):
    """The TLS certificate or key cannot be used (one line, exit 2)."""


_UNCHANGED = object()  # (a read of the providers that found the ledger unchanged)


def _ignore(outcome: Any) -> None:
    pass


async def serve(config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    """Run syncledger until cancelled (or until ``server.shutdown()``)."""
    await Server(config).run(task_status=task_status)

