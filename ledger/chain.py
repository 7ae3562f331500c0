"""The hash chains: each finance row and each event carries the SHA-256 of its content chained to the one
before it (the first to GENESIS), so that a change to any row shows in every hash after it."""

from __future__ import annotations

import hashlib

import orjson

from .rules import Version

GENESIS = "0" * 64


def finance_hash(prev: str, row_id: int, v: Version, source: str, ext_id: str | None, created: int) -> str:
    """SHA-256 of a finance row's content chained to the previous row's hash."""
    return hashlib.sha256(orjson.dumps([
        prev, row_id, v.order, v.version, v.login, v.cmd, v.state, v.amount, v.delta, v.balance,
        v.credit, v.comment, v.open_time, v.close_time, source, ext_id, created,
    ])).hexdigest()


def event_hash(prev: str, seq: int, type_: int, record_id: int, data: bytes) -> str:
    """SHA-256 of an event chained to the previous event's hash."""
    return hashlib.sha256(orjson.dumps([prev, seq, type_, record_id]) + data).hexdigest()
