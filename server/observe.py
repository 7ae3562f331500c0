"""The admin listener's answers (on the server.http driver, loopback by default): ``GET /metrics``
(Prometheus text exposition), ``/healthz`` (the process answers) and ``/readyz`` (it takes work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .http import Response

if TYPE_CHECKING:
    from .app import Server


class AdminApp:
    def __init__(self, server: Server):
        self.s = server

    def head(self, request: h11.Request, arrived: bytes | None) -> Response | None:
        path = request.target.partition(b"?")[0]
        if path not in (b"/metrics", b"/healthz", b"/readyz"):
            return Response(404, b'{"error":"not found"}')
        if request.method not in (b"GET", b"HEAD"):
            return Response(405, b'{"error":"use GET"}', ((b"allow", b"GET"),))
        return None

    def too_large(self, request: h11.Request) -> Response:
        return Response(413, b'{"error":"a GET has no body"}')

    async def handle(self, request: h11.Request, body: bytes) -> Response:
        path = request.target.partition(b"?")[0]
        if path == b"/metrics":
            return Response(200, generate_latest(self.s.metrics.registry), content_type=CONTENT_TYPE_LATEST.encode())
        if path == b"/healthz":
            return Response(200, b'{"status":"ok"}')
        problems = self.not_ready()
        return Response(503 if problems else 200,
                        orjson.dumps({"status": "not ready" if problems else "ready", "problems": problems}))

    def not_ready(self) -> list[str]:
        """Why the server would not take work now (empty: it would)."""
        s, problems = self.s, []
        if s.failure is not None:
            problems.append(f"stopped: {s.failure}")
        if s.stopping:
            problems.append("shutting down")
        if s.mainloop.stopped.is_set():
            problems.append("the mainLoop is not running")
        if not s.store_writable():
            problems.append("the ledger file is not writable")
        return problems
