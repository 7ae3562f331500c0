"""The server's Prometheus metrics (prometheus-client), one registry per server; the hot path touches only
pre-bound children (a dict lookup and an add), and gauges are read when scraped. History keeps the last
minutes of credits and commit times for the back-office page's chart."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import backups, version
from .limits import UPGRADE_REFUSALS


LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("syncledger_requests", "Manager API requests answered, by command and status",
                                ["command", "status"], registry=r)
        self.latency = Histogram("syncledger_request_duration_seconds",
                                 "Manager API request latency, from its line read to its answer buffered",
                                 ["kind"], buckets=LATENCY, registry=r)
        self.batch_size = Histogram("syncledger_batch_commands", "Commands per group commit", buckets=BATCH,
                                    registry=r)
        self.commit = Histogram("syncledger_commit_duration_seconds", "Time to apply and commit one batch",
                                buckets=LATENCY, registry=r)
        self.sync_timeouts = Counter("syncledger_sync_timeouts", "…Sync requests answered 504 SYNC_TIMEOUT",
                                     registry=r)
        self.wallet = Counter("syncledger_wallet_answers", "Game-wallet answers, by action, status and provider "
                              "(empty: a call no provider's token authenticated)", ["action", "status", "provider"],
                              registry=r)
        self.closed_round = Counter("syncledger_wallet_closed_round",
                                    "Wallet debits, credits and cancels that met a round already settled (a game.id "
                                    "reused by the integration?)", ["call"], registry=r)
        self.wallet_latency = Histogram("syncledger_wallet_duration_seconds",
                                        "Game-wallet call latency, by action, from its body read to its answer made "
                                        "(for calls whose token names a provider)", ["action"], buckets=LATENCY,
                                        registry=r)
        self.failed_logins = Counter("syncledger_failed_logins", "Logins refused for a wrong login or password, by "
                                     "listener (tcp: the manager API; admin: the back-office page)", ["listener"],
                                     registry=r)
        self.ready = Gauge("syncledger_ready", "1: the server takes work (/readyz answers 200); 0: it does not "
                           "(/readyz says why). Read when /metrics is rendered", registry=r)
        self.fail_stop = Gauge("syncledger_fail_stop", "1: the server fail-stopped (the ledger's state could not be "
                               "known); it serves nothing more and exits 3 within seconds", registry=r)
        self.inbox = Gauge("syncledger_inbox_depth", "Commands queued for the mainLoop", registry=r)
        self.connections = Gauge("syncledger_connections", "Open connections, by listener", ["listener"],
                                 registry=r)
        self.subscribers = Gauge("syncledger_subscribers", "trade:event subscribers (TCP and WebSocket)",
                                 registry=r)
        self.seq = Gauge("syncledger_ledger_seq", "The newest committed and published event seq", registry=r)
        # the process's own (resident memory, CPU seconds, open fds, start time: from /proc) and Python's
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge("syncledger_build_info", "Always 1: the version of syncledger serving (as syncledger --version)",
              ["version"], registry=r).labels(version()).set(1)
        self._requests: dict[tuple[str, int], object] = {}
        self._wallet: dict[tuple[str, str, str], object] = {}
        self._wallet_latency: dict[str, object] = {}
        for listener in ("tcp", "admin"):  # (a series from the start: an alert's increase() sees the first one)
            self.failed_logins.labels(listener)
        self._plain, self._sync = self.latency.labels("plain"), self.latency.labels("sync")
        self.wake: Callable[[], None] | None = None  # called (once) at the next answer: see History.run

    def bind(self, *, queued: Callable[[], int], gates: dict[str, Any], subscribers: Callable[[], int],
             seq: Callable[[], int], tls_not_after: float | None, wallet_actions: Iterable[str] = ()) -> None:
        """Gauges that read the server's state when scraped: the inbox's depth, each listener's Gate (its open
        connections, its refusals), the subscribers, the newest seq, and the TLS certificate's notAfter (no
        series without TLS); a latency series for each of ``wallet_actions`` from the start."""
        self.inbox.set_function(queued)
        for name, gate in gates.items():
            self.connections.labels(name).set_function(lambda gate=gate: gate.open)
        self.registry.register(_Refusals(gates))
        for action in wallet_actions:
            self._wallet_latency[action] = self.wallet_latency.labels(action)
        self.subscribers.set_function(subscribers)
        self.seq.set_function(seq)
        if tls_not_after is not None:  # (an alert on a missing series would fire at once)
            Gauge("syncledger_tls_cert_not_after_seconds", "When the TLS certificate expires (notAfter, Unix time)",
                  registry=self.registry).set(tls_not_after)

    def wallet_answer(self, action: str, status: str, provider: str = "") -> None:
        key = (action, status, provider)
        child = self._wallet.get(key)
        if child is None:
            child = self._wallet[key] = self.wallet.labels(action, status, provider)
        child.inc()  # type: ignore[attr-defined]
        if self.wake is not None:
            self._woken()

    def wallet_time(self, action: str, seconds: float) -> None:
        child = self._wallet_latency.get(action)
        if child is None:
            child = self._wallet_latency[action] = self.wallet_latency.labels(action)
        child.observe(seconds)  # type: ignore[attr-defined]

    def bind_verify(self, last: Callable[[], dict | None]) -> None:
        """The last verify's gauges, read from ``last()`` (the admin page's ``last_verify``) when scraped."""
        self.registry.register(_LastVerify(last))

    def bind_backups(self, db_path: str) -> None:
        """The last backup of the SQLite ledger at ``db_path``, read from its journal (server/backups.py) when
        scraped: in the rendering's worker thread, never on the event loop."""
        self.registry.register(_LastBackup(db_path))

    def _woken(self) -> None:
        wake, self.wake = self.wake, None
        wake()  # type: ignore[misc]

    def answered(self, command: str, status: int, seconds: float, sync: bool) -> None:
        child = self._requests.get((command, status))
        if child is None:
            child = self._requests[(command, status)] = self.requests.labels(command, str(status))
        child.inc()  # type: ignore[attr-defined]
        (self._sync if sync else self._plain).observe(seconds)
        if self.wake is not None:
            self._woken()


class _Refusals:
    """``syncledger_refused_connections_total{listener,reason}``: each Gate's ``refusals`` (its own, its
    listener's failed and late TLS handshakes, the ws listener's refused upgrades), each of its reasons from 0."""

    def __init__(self, gates: dict[str, Any]):
        self.gates = gates

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family()]

    def collect(self) -> list[CounterMetricFamily]:
        family = self._family()
        for name, gate in self.gates.items():
            for reason in gate.reasons:
                family.add_metric([name, reason], gate.refusals[reason])
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("syncledger_refused_connections", "Connections a listener closed at once, by "
                                   "reason: cap (--max-connections), rate (--max-connect-rate), handshake (a TLS "
                                   "handshake failed), handshake_timeout (it did not end in time); on ws, upgrade "
                                   "requests refused: " + ", ".join(f"{reason} ({status})" for status, reason in
                                                                   UPGRADE_REFUSALS.items()),
                                   labels=["listener", "reason"])


class _LastVerify:
    """The last verify the server ran (the back-office page's, or ``POST /api/verify``): whether the ledger was
    sound, when it ran, how long it took and what it read. No series before the first since the start."""

    ROWS = (("finance", "finance_rows"), ("events", "events"), ("accounts", "accounts"))

    def __init__(self, last: Callable[[], dict | None]):
        self.last = last

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families(self.last())

    @classmethod
    def _families(cls, last: dict | None = None) -> list[GaugeMetricFamily]:
        ok = GaugeMetricFamily("syncledger_last_verify_ok", "1: the last verify found the ledger sound; 0: it did not, "
                               "or could not run")
        at = GaugeMetricFamily("syncledger_last_verify_timestamp_seconds", "When the last verify started (Unix time)")
        took = GaugeMetricFamily("syncledger_last_verify_duration_seconds", "How long the last verify took")
        rows = GaugeMetricFamily("syncledger_last_verify_rows", "What the last verify read, by table", labels=["table"])
        if last is not None:
            ok.add_metric([], 1 if last["ok"] else 0)
            at.add_metric([], last["at"])
            took.add_metric([], last["seconds"])
            for table, key in cls.ROWS:
                rows.add_metric([table], last[key])
        return [ok, at, took, rows]


class _LastBackup:
    """``syncledger_last_backup_timestamp_seconds``: when the last ``syncledger backup`` of the ledger ended (its
    copy verified), from the journal beside it; 0 when none is recorded, or the journal cannot be read
    (``syncledger status`` says why), so that an alert on its age fires."""

    def __init__(self, db_path: str):
        self.db_path = db_path

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        try:
            last = backups.last(self.db_path)
        except OSError:
            last = None
        family = self._family()
        family.add_metric([], 0 if last is None else last["time"])
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("syncledger_last_backup_timestamp_seconds", "When the last syncledger backup of the "
                                 "ledger ended, its copy verified (Unix time, from the journal PATH.backups beside "
                                 "it); 0: none recorded")
