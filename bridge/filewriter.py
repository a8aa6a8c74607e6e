"""Per-call file writes off the event loop, in a process of their own.

A ``write()`` to the page cache usually takes microseconds, but not always: when the disk falls
behind, the kernel throttles the writing thread (dirty-page balancing) for tens or hundreds of
milliseconds, and a journal commit can hold a file's lock as long. On the event loop that
stall is every call's stall. So the recorder's audio and header updates and the call logs'
lines are handed to a writer process (``bridge/writerproc.py``) through a pipe, and written
there in the order they were handed over; the loop only formats them.

Why a process: the writes used to run on a thread, and 200 recorded calls' writes, each a
few Python lines between two system calls, held the GIL in runs the loop waited behind (the
loop-lag benchmark, ``benchmarks/loop_lag.py``, and ``docs/architecture.md`` s.5). A
process shares no lock with the loop; it runs at ``WRITER_NICE`` below the server, so on a
busy core the kernel hands the core to the loop the moment it wakes. The loop's share is a
``writev`` to the pipe, once per loop iteration for everything handed over in it.

* **Bounded.** What the pipe (``PIPE_BYTES``) cannot take yet waits here, at most
  ``MAX_PENDING_BYTES``; a write that would pass it is refused (returns ``False``): the
  file's owner stops writing that file and says so, the call goes on (a recording that
  cannot keep up fails loudly rather than stalling calls or growing memory without end).
* **Failures are loud.** Each file operation that fails (disk full, file removed) is
  reported back with its errno and handed to that file's ``on_error`` (on this module's
  reply thread), which decides how loudly. If the process itself dies, every open file
  fails the same way and the next file starts a new process.
* **Nothing lost at shutdown.** ``bridge serve`` waits until everything is written
  (``BridgeServer.close`` awaits :func:`written`; an ``atexit`` hook flushes too), and a
  handler can await :func:`written` to know its own files are complete.
* **SIGKILL.** The writer reads until the pipe ends, so what the server had handed over
  (everything but the last loop iteration's) is still written after the server is killed.

Import rule: standard library and ``bridge.writerproc`` (the wire format) only.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import fcntl
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bridge import writerproc as wire

log = logging.getLogger("bridge.filewriter")

#: Bytes waiting here for room in the pipe, at most (about 2.5 s of 200 recorded 16 kHz calls).
MAX_PENDING_BYTES = 32 << 20
#: The pipe's size, where the kernel allows it (``/proc/sys/fs/pipe-max-size``).
PIPE_BYTES = 1 << 20
#: The writer process's priority below its server's.
WRITER_NICE = 5
_F_SETPIPE_SZ = 1031
_IOV_MAX = 1024
_SCRIPT = Path(wire.__file__)
#: How long a flush waits for room in the pipe before it looks again.
_POLL_S = 0.2

OnError = Callable[[OSError], None]


class FileWriter:
    """Sends file operations to one writer process, in order; see the module docstring."""

    def __init__(self, max_pending_bytes: int = MAX_PENDING_BYTES, nice: int = WRITER_NICE) -> None:
        self.max_pending_bytes = max_pending_bytes
        self.nice = nice
        #: Writes refused because the bound was reached.
        self.refused = 0
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._owner = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._wake_fd = -1
        #: Requests not yet in the pipe, whole and in order (headers and payloads).
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self._push_soon = False
        self._watched: asyncio.AbstractEventLoop | None = None
        self._next_id = 1
        self._on_error: dict[int, OnError | None] = {}
        self._waiters: dict[int, Callable[[], None]] = {}

    @property
    def pending_bytes(self) -> int:
        """Bytes handed over but not yet in the pipe."""
        return self._out_bytes

    @property
    def pid(self) -> int | None:
        """The writer process's pid (``None`` until it is needed)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the writer process now rather than at the first file."""
        with self._lock:
            self._process()

    def open(self, path: Path, *, append: bool = False, on_error: OnError | None = None) -> int:
        """A handle for ``path``, opened by the writer (created; emptied unless ``append``)."""
        with self._lock:
            handle = self._next_id
            self._next_id += 1
            self._on_error[handle] = on_error
            self._send(wire.OPEN, handle, os.fsencode(path), int(append))
        return handle

    def write(self, handle: int, data: bytes | memoryview) -> bool:
        """Append ``data``; ``False`` (nothing queued) if that would pass the bound."""
        return self._send(wire.WRITE, handle, data, 0, bounded=True)

    def pwrite(self, handle: int, data: bytes, offset: int) -> bool:
        """Write ``data`` at ``offset``, the file's position untouched; ``False`` as above."""
        return self._send(wire.PWRITE, handle, data, offset, bounded=True)

    def close(self, handle: int) -> None:
        """No more operations on ``handle``; it is closed after those before."""
        self._send(wire.CLOSE, handle)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything handed over so far is written; ``False`` on timeout."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        done = threading.Event()
        if not self._mark(done.set):
            return True
        if not self._push(deadline):
            return False
        return done.wait(None if timeout is None else max(0.0, deadline - time.monotonic()))

    async def written(self) -> None:
        """Wait, without blocking the loop, until everything handed over so far is written."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, done)

        if self._mark(resolve):
            await done

    def stop(self, timeout: float = 30.0) -> None:
        """Flush, end the writer process and wait for it (at exit, and in tests)."""
        with self._lock:
            proc = self._proc
            if proc is None or self._owner != os.getpid():
                return
        self.flush(timeout)
        with self._lock:
            self._proc = None
            self._close_pipes()
        proc.wait(timeout)

    # -- the loop's side --------------------------------------------------------------

    def _send(
        self,
        op: int,
        handle: int,
        payload: bytes | memoryview = b"",
        offset: int = 0,
        *,
        bounded: bool = False,
    ) -> bool:
        with self._lock:
            if op == wire.OPEN:
                self._process()  # only here: a write is not worth a getpid() each
            elif self._proc is None:
                return False  # the writer died: the file failed with it (already reported)
            size = len(payload)
            if bounded and self._out_bytes + size > self.max_pending_bytes:
                self.refused += 1
                return False
            self._out.append(wire.REQUEST.pack(op, handle, size, offset))
            if size:
                self._out.append(payload)
            self._out_bytes += wire.REQUEST.size + size
            if not self._push_soon:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    self._push()  # no loop: what does not fit waits for a write or a flush
                else:
                    # Everything one loop iteration hands over goes in one writev.
                    self._push_soon = True
                    loop.call_soon(self._push)
        return True

    def _mark(self, callback: Callable[[], None]) -> bool:
        """Ask the writer to answer once all before is written; ``False`` if it never ran."""
        with self._lock:
            if self._proc is None or self._owner != os.getpid():
                return False
            token = self._next_id
            self._next_id += 1
            self._waiters[token] = callback
            sent = self._send(wire.MARK, token)
            self._wake()  # someone waits: no batching delay
        return sent

    def _push(self, deadline: float | None = None) -> bool:
        """Move what is waiting into the pipe: what fits now (the rest when the loop sees
        room), or, with a ``deadline`` (``time.monotonic``), all of it, waiting until then.
        ``False`` if something is still waiting."""
        with self._lock:
            self._push_soon = False
            while self._out and self._fd >= 0:
                batch = self._out[:_IOV_MAX]
                try:
                    sent = os.writev(self._fd, batch)
                except BlockingIOError:
                    sent = 0
                except BrokenPipeError:
                    self._writer_gone(self._proc)
                    break
                self._consume(sent)
                if sent < sum(len(part) for part in batch):
                    self._wake()  # the pipe is full: take it now
                    if deadline is None:
                        self._watch()
                        return False
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._wait_writable(min(left, _POLL_S))
            self._unwatch()
            return True

    def _consume(self, sent: int) -> None:
        """Drop the ``sent`` bytes the pipe took from the front of what waits."""
        self._out_bytes -= sent
        out = self._out
        taken = 0
        while sent:
            part = out[taken]
            if len(part) <= sent:
                sent -= len(part)
                taken += 1
            else:
                out[taken] = memoryview(part)[sent:]
                sent = 0
        del out[:taken]

    def _close_pipes(self) -> None:
        """Close our ends; a loop watching the pipe stops first, on its own thread (the
        reply thread closes them when the writer dies, and a loop is not thread-safe)."""
        fds = (self._fd, self._wake_fd)
        self._fd = self._wake_fd = -1
        loop, self._watched = self._watched, None
        if loop is not None and not loop.is_closed():
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                loop.remove_writer(fds[0])
            else:
                try:
                    loop.call_soon_threadsafe(_unwatch_and_close, loop, fds)
                except RuntimeError:
                    pass  # closed meanwhile: nothing watches any more
                else:
                    return
        _close_all(fds)

    def _wake(self) -> None:
        """Cut the writer's batching wait short."""
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._wake_fd, b"\0")

    def _watch(self) -> None:
        """Push again when the pipe has room (the running loop watches it, if any)."""
        if self._watched is None:
            try:
                self._watched = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the next write or flush pushes the rest
            self._watched.add_writer(self._fd, self._push)

    def _unwatch(self) -> None:
        if self._watched is not None:
            if not self._watched.is_closed():
                self._watched.remove_writer(self._fd)
            self._watched = None

    def _wait_writable(self, seconds: float) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        poller.poll(seconds * 1000)

    # -- the process and its replies --------------------------------------------------

    def _process(self) -> None:
        """The writer process, started if it is not running (a forked child starts its own)."""
        if self._owner != os.getpid():
            self._reset()
        if self._proc is not None:
            return
        wake_r, wake_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(_SCRIPT), str(self.nice), str(wake_r)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                pass_fds=(wake_r,),
            )
        except BaseException:
            os.close(wake_w)
            raise
        finally:
            os.close(wake_r)
        os.set_blocking(wake_w, False)
        self._wake_fd = wake_w
        assert proc.stdin is not None and proc.stdout is not None
        # Our ends as bare descriptors: the pipe is written with writev, never buffered.
        self._fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        os.set_inheritable(self._fd, False)
        os.set_blocking(self._fd, False)
        # Where the kernel refuses, the default 64 KiB: more waits here, nothing else changes.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_BYTES)
        self._proc = proc
        threading.Thread(
            target=self._read_replies, args=(proc,), name="bridge-file-replies", daemon=True
        ).start()

    def _read_replies(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        rest = b""
        try:
            while chunk := os.read(fd, 1 << 16):
                data = rest + chunk
                at = 0
                while len(data) - at >= wire.REPLY.size:
                    kind, ident, code, length = wire.REPLY.unpack_from(data, at)
                    end = at + wire.REPLY.size + length
                    if end > len(data):
                        break
                    self._reply(kind, ident, code, data[at + wire.REPLY.size : end].decode())
                    at = end
                rest = data[at:]
        finally:
            proc.stdout.close()
            proc.wait()  # its output ended: it is exiting; reap it
            self._writer_gone(proc)

    def _reply(self, kind: int, ident: int, code: int, message: str) -> None:
        with self._lock:
            if kind == wire.DONE:
                callback: Callable[[], None] | None = self._waiters.pop(ident, None)
            elif kind == wire.CLOSED:
                self._on_error.pop(ident, None)
                return
            else:
                on_error = self._on_error.get(ident)
                exc = OSError(code, message)
                callback = (lambda: on_error(exc)) if on_error else None
                if on_error is None:
                    log.error("file write failed", extra={"error": message})
        if callback is not None:
            _run(callback)

    def _writer_gone(self, proc: subprocess.Popen[bytes] | None) -> None:
        """The process ended: if not by :meth:`stop`, its open files fail, waiters go on."""
        with self._lock:
            if proc is None or proc is not self._proc:
                return  # stopped on purpose, or already handled
            self._proc = None
            self._close_pipes()
            self._out.clear()
            self._out_bytes = 0
            failed = [cb for cb in self._on_error.values() if cb is not None]
            waiters = list(self._waiters.values())
            self._on_error.clear()
            self._waiters.clear()
        log.error("the file-writer process exited; open files fail", extra={"pid": proc.pid})
        exc = OSError(errno.EIO, "the file-writer process exited")
        for on_error in failed:
            _run(lambda on_error=on_error: on_error(exc))  # type: ignore[misc]
        for waiter in waiters:
            _run(waiter)


def _unwatch_and_close(loop: asyncio.AbstractEventLoop, fds: tuple[int, int]) -> None:
    loop.remove_writer(fds[0])
    _close_all(fds)


def _close_all(fds: tuple[int, int]) -> None:
    for fd in fds:
        os.close(fd)


def _run(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        log.exception("file writer callback failed")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_shared: FileWriter | None = None
_shared_lock = threading.Lock()


def file_writer() -> FileWriter:
    """The process's writer (its process starts on first use; flushed and ended at exit)."""
    global _shared  # noqa: PLW0603 - one writer process per server process, by design
    with _shared_lock:
        if _shared is None:
            _shared = FileWriter()
            atexit.register(_shared.stop)
        return _shared


async def written() -> None:
    """Everything handed to the process's writer so far is written (no-op if unused)."""
    if _shared is not None:
        await _shared.written()
