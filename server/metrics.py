"""The server's Prometheus metrics (prometheus-client), one registry per server; the hot path touches only
pre-bound children (a dict lookup and an add), and gauges are read when scraped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .app import Server

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
        self.wallet = Counter("syncledger_wallet_answers", "Game-wallet answers, by action and status",
                              ["action", "status"], registry=r)
        self.inbox = Gauge("syncledger_inbox_depth", "Commands queued for the mainLoop", registry=r)
        self.connections = Gauge("syncledger_connections", "Open connections, by listener", ["listener"],
                                 registry=r)
        self.subscribers = Gauge("syncledger_subscribers", "trade:event subscribers (TCP and WebSocket)",
                                 registry=r)
        self.seq = Gauge("syncledger_ledger_seq", "The newest committed and published event seq", registry=r)
        self._requests: dict[tuple[str, int], object] = {}
        self._wallet: dict[tuple[str, str], object] = {}
        self._plain, self._sync = self.latency.labels("plain"), self.latency.labels("sync")

    def bind(self, server: Server) -> None:
        """Gauges that read the server's state when scraped."""
        self.inbox.set_function(lambda: server.mainloop.queued)
        for name, gate in server.gates.items():
            self.connections.labels(name).set_function(lambda gate=gate: gate.open)
        self.subscribers.set_function(lambda: len(server.broker.subscribers))
        self.seq.set_function(lambda: server.mainloop.committed_seq)

    def wallet_answer(self, action: str, status: str) -> None:
        child = self._wallet.get((action, status))
        if child is None:
            child = self._wallet[(action, status)] = self.wallet.labels(action, status)
        child.inc()  # type: ignore[attr-defined]

    def answered(self, command: str, status: int, seconds: float, sync: bool) -> None:
        child = self._requests.get((command, status))
        if child is None:
            child = self._requests[(command, status)] = self.requests.labels(command, str(status))
        child.inc()  # type: ignore[attr-defined]
        (self._sync if sync else self._plain).observe(seconds)
