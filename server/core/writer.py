"""The writer in a process of its own (``serve --writer process``): a Store behind a socket pair, applying
the batches the server sends as ``ledger.codec`` messages and answering each with its outcomes, or why not."""

from __future__ import annotations

import gc
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any, Sequence

import trio

from syncledger.ledger import LedgerOpenError, Outcome, Store, Unsure, codec

from .. import logs

_OK, _FAILED, _UNSURE = 0, 1, 2
_CLOSE = b""  # asks the writer to close its store and end


class WriterFailed(Exception):
    """A batch failed in the writer process and nothing of it was applied (as Store.apply_batch raising)."""


class WriterEnded(Exception):
    """The writer process had ended before a batch reached it: nothing of the batch was applied, and nothing
    more can be."""


def _serve(path: str, conn: Connection, node: str | None = None) -> None:
    """The writer process: open the ledger, then apply batches until asked to close or the server is gone."""
    try:
        store = Store(path, create=False, cluster=node is not None, node=node or "")
    except BaseException as e:  # noqa: BLE001 - told to the server, which refuses to start
        conn.send_bytes(marshal.dumps((_FAILED, f"{e}")))
        return
    # as the server does: what exists after opening lives for the whole run, and young objects are
    # collected less often (a full collection of a large ledger's state is a pause of many milliseconds)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        conn.send_bytes(marshal.dumps((_OK, None)))
        _apply_until_closed(store, conn)
    except OSError:
        pass  # the server is gone (killed): the batch in hand was committed or not, as a crash leaves it
    finally:
        store.close()


def _apply_until_closed(store: Store, conn: Connection) -> None:
    """Answer each batch with its outcomes, or why not; return when asked to close or the server is gone."""
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        if data == _CLOSE:
            conn.send_bytes(marshal.dumps((_OK, (store.seq, store.event_head))))
            return
        try:
            outcomes = store.apply_batch(codec.decode_batch(marshal.loads(data)), rows=True)
        except Unsure as e:
            conn.send_bytes(marshal.dumps((_UNSURE, str(e))))
            return  # the file's state is unknown: nothing more is applied
        except Exception:
            conn.send_bytes(marshal.dumps((_FAILED, traceback.format_exc())))
            continue
        try:
            reply = marshal.dumps((_OK, codec.encode_outcomes(outcomes)))
        except Exception:  # a bug: the batch is in the file, but its answers cannot be told
            conn.send_bytes(marshal.dumps((_UNSURE, "a committed batch's answers could not be sent from the "
                                                    f"writer process:\n{traceback.format_exc()}")))
            return
        conn.send_bytes(reply)


def main(argv: list[str]) -> None:
    """``python -P -m syncledger.server.core.writer FD PATH LOG_FORMAT [NODE]`` (NODE: a node of a cluster's name),
    started by :class:`WriterProcess`."""
    # The server stops its writer itself, between two batches: a Ctrl-C or a service manager's SIGTERM to
    # the whole process group must not cut a batch in half.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, log_format, log_level = int(argv[0]), argv[1], argv[2], argv[3]
    logs.configure(log_format, log_level)
    _serve(path, Connection(fd), node=argv[4] if len(argv) > 4 else None)


class WriterProcess:
    """The server's side of the writer process. :meth:`apply` sends a batch and awaits its outcomes on the
    Trio thread (no thread hop); :meth:`apply_batch` is its blocking twin, Store.apply_batch's, for callers
    off the event loop. One batch at a time. The process ends with :meth:`close`, or by itself when the
    server's process is gone (its end of the socket pair closes)."""

    def __init__(self, path: str, log_format: str = "text", lock_fd: int | None = None, node: str | None = None,
                 log_level: str = "info"):
        """Start the writer on ``path``. ``lock_fd``, the server's ledger lock, is inherited: the lock is held
        until both processes have ended, so a restarted server never meets a writer that outlived this one.
        ``node``: its Store is this node of a cluster (see Store)."""
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "syncledger.server.core.writer", str(theirs.fileno()), path, log_format,
                 log_level,
                 *([node] if node is not None else [])],
                pass_fds=(theirs.fileno(),) + ((lock_fd,) if lock_fd is not None else ()),
                stdin=subprocess.DEVNULL)
        self._conn = Connection(ours.detach())
        self._socket: socket.socket | None = None  # the same socket, non-blocking, once apply() is used
        self.head: tuple[int, str] | None = None  # (seq, hash) of the newest event, as the writer closed
        self._interrupted: str | None = None  # why interrupt() ended the wait for a batch
        try:
            status, detail = marshal.loads(self._conn.recv_bytes())
        except EOFError:
            detail, status = f"the writer process ended while opening {path} (exit code {self.process.wait()})", None
        if status != _OK:
            self._conn.close()
            self.process.wait()
            raise LedgerOpenError(detail)

    def apply_batch(self, commands: Sequence[Any]) -> list[Outcome]:
        """Send a batch and wait for its outcomes (once committed), as Store.apply_batch. A writer that had
        ended before the batch was whole in its socket never saw it: WriterEnded. One that ends after leaves the
        batch unknowable: Unsure."""
        data = marshal.dumps(codec.encode_batch(commands))
        try:
            if self.process.poll() is not None:
                raise BrokenPipeError
            self._conn.send_bytes(data)  # (a writer applies only a whole message: one it closed on is unseen)
        except OSError:
            raise WriterEnded(f"the writer process ended ({self.ended()}) before a batch was sent to it: nothing "
                              "of that batch was applied") from None
        try:
            status, detail = marshal.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise Unsure(f"the writer process ended during a batch ({self.ended()}): whether the "
                         f"batch was committed is unknown") from None
        return self._outcomes(status, detail)

    async def apply(self, commands: Sequence[Any]) -> list[Outcome]:
        """:meth:`apply_batch` on the Trio thread: the batch written and its answer read as the socket allows.
        Once begun it is waited for, whatever cancels the caller; :meth:`interrupt` ends the wait (Unsure)."""
        data = marshal.dumps(codec.encode_batch(commands))
        if self._socket is None:
            self._socket = socket.socket(fileno=os.dup(self._conn.fileno()))
            self._socket.setblocking(False)
        with trio.CancelScope(shield=True):
            try:
                if self.process.poll() is not None:
                    raise BrokenPipeError
                await _send_message(self._socket, data)
            except OSError:
                raise WriterEnded(f"the writer process ended ({self.ended()}) before a batch was sent to it: nothing "
                                  "of that batch was applied") from None
            try:
                status, detail = marshal.loads(await _receive_message(self._socket))
            except (EOFError, OSError):
                raise Unsure(self._interrupted or f"the writer process ended during a batch ({self.ended()}): "
                             "whether the batch was committed is unknown") from None
        return self._outcomes(status, detail)

    @staticmethod
    def _outcomes(status: int, detail: Any) -> list[Outcome]:
        if status == _OK:
            return codec.decode_outcomes(detail)
        if status == _UNSURE:
            raise Unsure(detail)
        raise WriterFailed(f"in the writer process:\n{detail}")

    def ended(self) -> str:
        """How the writer process ended, in words (its exit code, or the signal that killed it)."""
        code = self._wait(5)
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def state(self) -> str | None:
        """The writer process's state as the kernel tells it (``R``, ``S``, ``D``, ``T`` stopped, ``Z`` ended:
        see proc(5)), None once it has been waited for."""
        if self.process.returncode is not None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as f:
                return f.read().rpartition(b")")[2].split()[0].decode()
        except (OSError, IndexError):
            return None

    def interrupt(self, reason: str = "the writer was interrupted during a batch: whether it was committed is "
                                        "unknown") -> None:
        """End the server's side of the socket pair, from any thread: a batch waiting for its answer is
        woken (Unsure, for ``reason``), and the writer ends once its batch does (its answer finds no one)."""
        self._interrupted = reason
        try:
            with socket.socket(fileno=os.dup(self._conn.fileno())) as ours:  # (a shutdown is the socket's, not the fd's)
                ours.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, timeout: float = 10.0) -> None:
        """Ask the writer to close its store and end; wait for it (kill it after ``timeout`` seconds). An
        interrupted writer is left to end by itself (it holds the ledger lock until it does)."""
        if self._conn.closed:
            return
        if self._socket is not None:
            try:
                trio.lowlevel.notify_closing(self._socket)  # (Trio forgets the fd it waited on)
            except RuntimeError:
                pass  # (not in a Trio run: none waited on it in this one)
            self._socket.close()  # (a dup: the socket pair stays open on _conn, made blocking again)
            os.set_blocking(self._conn.fileno(), True)
        if self._interrupted:
            self._conn.close()
            return
        try:
            self._conn.send_bytes(_CLOSE)
            status, detail = marshal.loads(self._conn.recv_bytes())
            if status == _OK:
                self.head = (detail[0], detail[1])
        except (EOFError, OSError):
            pass  # already gone (it ends after a batch it cannot be sure of)
        self._conn.close()
        self._wait(timeout)

    def _wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


# The writer's socket is read and written with plain non-blocking calls, waiting through Trio only when the
# socket would block: a Trio socket's send or recv that succeeds at once still yields to the scheduler (one
# more pass and epoll_wait a call), and an answer, which comes after a COMMIT, is never there at once. At light
# load a batch is one request, so these are a request's.

async def _send_message(sock: socket.socket, data: bytes) -> None:
    """``data`` framed as multiprocessing's Connection.send_bytes frames it (the writer reads it with one)."""
    header = struct.pack("!i", len(data)) if len(data) <= 0x7FFFFFFF else struct.pack("!iQ", -1, len(data))
    view = memoryview(header + data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def _receive_message(sock: socket.socket) -> bytes:
    """One message framed as multiprocessing's Connection.send_bytes frames it (EOFError at the end)."""
    buf = bytearray()

    async def at_least(n: int) -> None:
        while len(buf) < n:
            try:
                chunk = sock.recv(max(1 << 16, n - len(buf)))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not chunk:
                raise EOFError
            buf.extend(chunk)
    await trio.lowlevel.wait_readable(sock)  # (the answer follows a COMMIT: a read at once would only fail)
    await at_least(4)
    (size,), start = struct.unpack_from("!i", buf), 4
    if size == -1:
        await at_least(12)
        (size,), start = struct.unpack_from("!Q", buf, 4), 12
    await at_least(start + size)
    assert len(buf) == start + size, "the writer answers one message a batch"
    return bytes(memoryview(buf)[start:])


if __name__ == "__main__":
    main(sys.argv[1:])
