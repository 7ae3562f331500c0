"""The game-wallet API (served by server.http): POST /v1/check, /v1/balance, /v1/debit, /v1/credit,
/v1/cancel, /v1/promo_payout (and /v1/sid in test environments). Every business outcome is HTTP 200 with a status
string. Each call is authenticated to one provider by its token (``ProviderKeys``) and made in that provider's
name: its ids are its own, and its settlement mode, currencies and promo_payout permission apply."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
import trio
from pydantic import ValidationError

from syncledger.ledger import Outcome, to_text
from syncledger.ledger import wallet as w

from ..core.mainloop import ShuttingDown
from ..http import STREAM, Request, Response
from ..limits import LineBudget, left_out, peer_endpoint
from ..wire import decode_json, invalid_value
from ..auth import Provider
from .models import FAST_ACTIONS, WalletMove, WalletPromo, WalletSession, WalletUser, fast_move

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("syncledger.wallet")
refused_log = logging.getLogger("syncledger.wallet.refused")  # a line per refused call (WalletApp._refused)
ACTIONS = ("check", "balance", "debit", "credit", "cancel", "promo_payout")
TEST_ACTIONS = ("sid",)  # only with serve --wallet-test-endpoints
INVALID_TOKEN_ID, TEMPORARY_ERROR, UNKNOWN_ERROR = "INVALID_TOKEN_ID", "TEMPORARY_ERROR", "UNKNOWN_ERROR"
# A promo_payout from a provider not allowed to send one: a final error (the provider does not retry it; see the
# README, "promo_payout"), not INVALID_PARAMETER (the request is well formed) nor INVALID_TOKEN_ID (its token is).
PROMO_REFUSED = w.FINAL_ERROR_ACTION_FAILED


# What a call that met a round already settled did (else: what it was answered).
_CLOSED_ROUND = {("debit", "OK"): "taken (its own credit settles it, or its cancel refunds it)",
                 ("credit", "OK"): "settled the debits taken since the round's earlier credit",
                 ("cancel", "OK"): "refunded a debit taken after the round was settled"}


class _Invalid(Exception):
    """The request is malformed: INVALID_PARAMETER, nothing written."""


def parse_body(body: bytes) -> dict:
    try:
        obj = decode_json(body)
    except (ValueError, RecursionError):
        raise _Invalid() from None
    if not isinstance(obj, dict) or invalid_value(obj, body) is not None:
        raise _Invalid()
    return obj


def wallet_call(action: str, obj: dict, now: int, ttl: int, provider: Provider = Provider("default")
                ) -> w.WalletCall:
    """Validate a provider request into a ledger command, in ``provider``'s name (pure; raises _Invalid)."""
    try:
        model = WalletSession if action in ("check", "balance") else WalletPromo if action == "promo_payout" else \
            WalletMove
        req = model.model_validate(obj)
    except ValidationError:
        raise _Invalid() from None
    return validated_call(action, req, now, ttl, provider)


def validated_call(action: str, req: Any, now: int, ttl: int, provider: Provider) -> w.WalletCall:
    """The ledger command of a validated request (a model's, or a FastMove: the same fields); raises _Invalid."""
    scope = {"provider": provider.name, "settlement": provider.settlement}
    if not provider.takes(req.currency):
        raise _Invalid()  # a currency the provider may not use
    if action in ("check", "balance"):
        return w.WalletCall(action, req.userId, now, ttl, sid=req.sid, currency=req.currency, **scope)
    game = req.game
    game_id = game.id if game else None
    scope.update(game_type=(game.type or None) if game else None, game_session=(game.session or None) if game else None)
    if action == "promo_payout":
        promo = req.promoTransaction
        payload = orjson.dumps(["promo_payout", req.userId, req.currency, game_id, promo.type, promo.id, None,
                                promo.amount]).decode()
        return w.WalletCall(action, req.userId, now, ttl, sid=req.sid, currency=req.currency, txid=promo.id,
                            game_id=game_id, amount=promo.amount, payload=payload, promo_type=promo.type, **scope)
    tx = req.transaction
    if (action == "debit" and not tx.amount) or (action == "credit" and (tx.refId is None or tx.amount is None)):
        raise _Invalid()  # a debit needs an amount above 0; a credit its refId and an amount (0: a loss)
    # The canonical content compared when a transaction.id comes again (unchanged since schema version 1).
    payload = orjson.dumps([action, req.userId, req.currency, game_id, game.type if game else None, tx.id, tx.refId,
                            tx.amount]).decode()
    return w.WalletCall(action, req.userId, now, ttl, sid=req.sid, currency=req.currency, txid=tx.id,
                        ref_id=tx.refId, game_id=game_id, amount=tx.amount or 0, payload=payload, **scope)


def _uuid(body: bytes | None) -> Any:
    """The request's uuid, if its body is at hand and a JSON object."""
    try:
        return parse_body(body).get("uuid") if body is not None else None
    except _Invalid:
        return None


def _said(action: str, status: str, uuid: Any, login: int | None = None) -> tuple[str, int | None, bytes]:
    """A status with no balance: (status, login, its JSON answer)."""
    return status, login, render(action, status, uuid)


def render(action: str, status: str, uuid: Any, sid: str | None = None, balance: int | None = None,
           bonus: int | None = None, retransmission: bool = False) -> bytes:
    reply: dict[str, Any] = {"status": status}
    if action in ("check", "sid") and sid is not None:
        reply["sid"] = sid
    elif balance is not None:
        reply["balance"] = orjson.Fragment(to_text(balance))
        reply["bonus"] = orjson.Fragment(to_text(bonus))
    reply["uuid"] = uuid if isinstance(uuid, str) else None
    if retransmission:
        reply["retransmission"] = True
    return orjson.dumps(reply)


class WalletApp:
    """The wallet's answers; the providers' tokens are ``server.providers`` (none: every call is
    INVALID_TOKEN_ID). Each answer is counted, each call's time measured, and each refusal logged (within a
    budget)."""

    def __init__(self, server: Services, test_endpoints: bool = False):
        self.s = server
        self.routes = {f"/v1/{action}".encode(): action for action in ACTIONS + (TEST_ACTIONS if test_endpoints else ())}
        self._lines: dict[tuple[str, str, str], LineBudget] = {}  # (provider, action, status): its refusals' lines
        self.fast = True  # debit, credit and cancel bodies of the common shape read by fast_move (tests turn it off)

    # ---- server.http's App: the head is checked before the body is read

    def head(self, request: Request, arrived: bytes | None) -> Response | None:
        path, _, query = request.target.partition(b"?")
        action = self.routes.get(path)
        if action is None:
            return Response(404, b'{"error":"not found"}')
        if request.method != b"POST":
            return Response(405, b'{"error":"use POST"}', ((b"allow", b"POST"),))
        if self.provider(query, request.headers) is None:
            # Refused without waiting for a body that has not come (a slow client holds nothing); the
            # uuid is echoed when the body came with the head, as it nearly always does.
            reply = render(action, INVALID_TOKEN_ID, _uuid(arrived))
            return Response(200, self._answered(action, INVALID_TOKEN_ID, "", reply), close=arrived is None)
        return None

    def too_large(self, request: Request) -> Response:
        path, _, query = request.target.partition(b"?")
        provider, action = self.provider(query, request.headers), self.routes[path]
        reply = render(action, w.INVALID_PARAMETER, None)
        return Response(200, self._answered(action, w.INVALID_PARAMETER, provider.name if provider else "", reply))

    async def handle(self, request: Request, body: bytes) -> Response:
        """A call whose head passed :meth:`head` (route, method and token already checked; the token is looked
        up again: its provider may have been removed while the body came)."""
        path, _, query = request.target.partition(b"?")
        return Response(200, await self.call(self.routes[path], query, request.headers, body))

    # ---- one call

    async def call(self, action: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The JSON answer to one provider call, token included (also in-process, for server.testing)."""
        started = trio.current_time()
        provider = self.provider(query, headers)
        if provider is None:
            return self._answered(action, INVALID_TOKEN_ID, "", render(action, INVALID_TOKEN_ID, _uuid(body)))
        status, login, reply = await self._answer(action, body, provider)
        return self._answered(action, status, provider.name, reply, login, trio.current_time() - started)

    async def _answer(self, action: str, body: bytes, provider: Provider) -> tuple[str, int | None, bytes]:
        """The status, the account (None: not read) and the JSON answer of one call in ``provider``'s name."""
        uuid = None
        try:
            quick = fast_move(body) if action in FAST_ACTIONS and self.fast else None
            if quick is not None:  # (the common debit, credit or cancel: the same command, for less)
                uuid, req = quick
                call = validated_call(action, req, self.s.now(), self.s.config.game_session_ttl, provider)
            else:
                obj = parse_body(body)
                uuid = obj.get("uuid")
                if action == "sid":
                    return await self._new_sid(obj, uuid)
                if action == "promo_payout" and not provider.promo:
                    return _said(action, PROMO_REFUSED, uuid)
                call = wallet_call(action, obj, self.s.now(), self.s.config.game_session_ttl, provider)
        except _Invalid:
            return _said(action, w.INVALID_PARAMETER, uuid)
        try:
            outcome = await self._run(call)
        except ShuttingDown:
            return _said(action, TEMPORARY_ERROR, uuid, call.login)
        if outcome.error is not None:  # the ledger could not commit: nothing happened, retry
            return _said(action, TEMPORARY_ERROR if outcome.error.status >= 500 else UNKNOWN_ERROR, uuid, call.login)
        r: w.WalletResult = outcome.data
        if r.closed_round:
            self._closed_round(call, r.status)
        return r.status, call.login, render(action, r.status, uuid, call.sid, r.balance, r.bonus, r.retransmission)

    def _closed_round(self, call: w.WalletCall, status: str) -> None:
        """Warn of, and count, a call that met a round already settled: an integration that reuses game.id
        shows on its first day."""
        self.s.metrics.closed_round.labels(call.action).inc()
        log.warning("%s met a round already settled: provider=%s login=%d game.id=%s transaction.id=%s: %s",
                    call.action, call.provider, call.login, call.game_id, call.txid, _CLOSED_ROUND.get((call.action, status), f"answered {status}"))

    async def _new_sid(self, obj: dict, uuid: Any) -> tuple[str, int | None, bytes]:
        """``/v1/sid``: a fresh game session for an existing account (providers' test suites ask for one)."""
        try:
            login = WalletUser.model_validate(obj).userId
        except ValidationError:
            raise _Invalid() from None
        command = w.OpenSession(login, secrets.token_urlsafe(18), self.s.now(), self.s.config.game_session_ttl)
        try:
            outcome = await self._run(command)
        except ShuttingDown:
            return _said("sid", TEMPORARY_ERROR, uuid, login)
        if outcome.error is not None:
            return _said("sid", TEMPORARY_ERROR if outcome.error.status >= 500 else w.INVALID_PARAMETER, uuid, login)
        return w.OK, login, render("sid", w.OK, uuid, outcome.data["sid"])

    def _answered(self, action: str, status: str, provider: str, reply: bytes, login: int | None = None,
                  seconds: float | None = None) -> bytes:
        """``reply``, once its answer is counted, its time (``seconds``, if measured) observed, and, if it
        refuses the call, logged."""
        metrics = self.s.metrics
        metrics.wallet_answer(action, status, provider)
        if seconds is not None:
            metrics.wallet_time(action, seconds)
        if status != w.OK and refused_log.isEnabledFor(logging.WARNING):
            self._refused(action, status, provider, login, seconds)
        return reply

    def _refused(self, action: str, status: str, provider: str, login: int | None, seconds: float | None) -> None:
        """One line a second at most for each provider, action and status; the next one says how many were left
        out (a flood of refusals costs a line a second of each kind)."""
        key = (provider, action, status)
        lines = self._lines.get(key)
        if lines is None:
            lines = self._lines[key] = LineBudget(1, trio.current_time)
        if (skipped := lines.take()) is None:
            return
        peer = peer_endpoint(STREAM.get())[1]
        fields = {"call": action, "status": status, "provider": provider, "login": login, "peer": peer,
                  "listener": "wallet", "left_out": skipped}
        if seconds is not None:
            fields["duration_ms"] = round(seconds * 1000, 1)
        refused_log.warning("%s refused %s: provider=%s login=%s peer=%s%s", action, status, provider or "-",
                            "-" if login is None else login, peer, left_out(skipped), extra=fields)

    def provider(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> Provider | None:
        """The provider whose token the call carries (``?authToken=``, ``Authorization: Bearer``): any that
        matches, since a gateway may add a Bearer of its own beside the provider's authToken; None if none does
        (or if two providers' tokens come in one call)."""
        given = [t.encode() for t in parse_qs(query.decode("latin-1")).get("authToken", [])] if query else []
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
        return self.s.providers.find(given)

    async def _run(self, call: w.WalletCall | w.OpenSession) -> Outcome:
        return await self.s.mainloop.run_command(call)
