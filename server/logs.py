"""Log output for ``syncledger serve``: text, or one JSON object a line (``--log-format json``), with the
standard library's logging (no extra dependency: structlog would add one for what a formatter does), within
a budget of lines that a flood of errors cannot fill a disk through."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

import orjson

TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"
COUNT = "… and %s more like %r left out in one second (one line a second of each kind is logged)"
Kind = tuple[str, str, int]  # logger, message template, level


# A record's own attributes: any other is a field its call gave with ``extra=`` (peer, listener, login, ...)
_RECORD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, then the fields the call gave with ``extra=`` (``peer``,
    ``listener``, ``login``, ``status``, ``duration_ms``, ...), then ``"error"`` with the traceback; one line
    each."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _RECORD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class LineBudget:
    """At most ``per_second`` lines a second of one kind; the next line let through says how many were left
    out (``take()`` -> None: leave this one out; else the count left out since the last one), or another
    line does (``untold()``)."""

    def __init__(self, per_second: int, clock: Callable[[], float]):
        self.per_second, self._clock = per_second, clock
        self._window, self._used, self._left_out = -1.0, 0, 0

    def take(self) -> int | None:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._used = now, 0
        if self._used >= self.per_second:
            self._left_out += 1
            return None
        self._used += 1
        left_out, self._left_out = self._left_out, 0
        return left_out

    def untold(self, ended: bool = True) -> int:
        """The count left out since the last line let through, for a line of another kind that tells it (it
        starts again from 0); with ``ended``, 0 until the second they were left out in is over."""
        if ended and self._clock() - self._window < 1.0:
            return 0
        left_out, self._left_out = self._left_out, 0
        return left_out


class Budget(logging.Filter):
    """A handler's filter: at most one line a second of each kind of warning and error; the rest are left out
    before they are formatted, and counted in a line of their kind before the next line the handler writes
    once their second is over (or when it closes). CRITICAL lines and those below WARNING always pass
    (connection lines have their own budget), and so do the lines of a :class:`LineBudget` of their own, which
    carry the count it left out before them (``extra={"left_out": n, ...}``)."""

    def __init__(self, handler: logging.Handler, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._handler, self._clock = handler, clock
        self._kinds: dict[Kind, LineBudget] = {}
        self._untold: set[Kind] = set()  # the kinds with lines left out that no line has counted yet
        self._lock = threading.Lock()  # (records come from several threads)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg is COUNT or "left_out" in record.__dict__:
            return True
        told: list[tuple[Kind, int]] = []
        with self._lock:
            if logging.WARNING <= record.levelno < logging.CRITICAL:
                kind = (record.name, str(record.msg), record.levelno)
                left_out = (self._kinds.get(kind) or self._new(kind)).take()
                if left_out is None:
                    self._untold.add(kind)
                    return False
                self._untold.discard(kind)
                if left_out:
                    told.append((kind, left_out))
            told += self._told(ended=True)
        self._tell(told)
        return True

    def close(self) -> None:
        """Count every line left out that no line has counted yet."""
        with self._lock:
            told = self._told(ended=False)
        self._tell(told)

    def _new(self, kind: Kind) -> LineBudget:
        if len(self._kinds) >= 4096:  # messages that are not templates: forget the kinds with nothing untold
            self._kinds = {k: self._kinds[k] for k in self._untold}
        budget = self._kinds[kind] = LineBudget(1, self._clock)
        return budget

    def _told(self, ended: bool) -> list[tuple[Kind, int]]:
        told = [(kind, n) for kind in self._untold if (n := self._kinds[kind].untold(ended))]
        self._untold.difference_update(kind for kind, _ in told)
        return told

    def _tell(self, told: list[tuple[Kind, int]]) -> None:
        for (name, template, level), count in told:
            self._handler.handle(logging.LogRecord(name, level, "", 0, COUNT, (f"{count:,}", template), None))


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a caller may swap it, as pytest does), within
    a :class:`Budget`."""

    def __init__(self, clock: Callable[[], float]):
        super().__init__()
        self.budget = Budget(self, clock)
        self.addFilter(self.budget)

    def close(self) -> None:
        self.budget.close()
        super().close()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(fmt: str = "text", level: int | str = logging.INFO, clock: Callable[[], float] = time.monotonic) -> None:
    """Send the log to stderr in ``fmt``, within a :class:`Budget` on ``clock``, replacing (and closing) an
    earlier configure()'s handler; other handlers stay. ``level``: the least severe lines kept, a number or a
    name (``--log-level``: debug, info, warning, error, critical)."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    handler = _Stderr(clock)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    earlier = [h for h in root.handlers if isinstance(h, _Stderr)]
    root.handlers[:] = [h for h in root.handlers if h not in earlier] + [handler]
    root.setLevel(level)
    for h in earlier:
        h.close()


def reset() -> None:
    """Remove (and close) the handler :func:`configure` installed, if any: its untold counts are told now."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(h)
        h.close()
