"""The file-writer process: performs the file operations a server sends it, in order.

Run by ``bridge.filewriter`` as a script (``python -I bridge/writerproc.py NICE WAKE_FD``; the
server imports it only for the wire format below): it needs only the standard library, so
it starts in a few milliseconds and shares nothing with the server but two pipes. Why a process and not a
thread: a thread's writes hold the GIL between system calls, and on the core a worker runs
on, a batch of them ran ahead of the event loop (``docs/architecture.md`` s.5); a process
is scheduled by the kernel alone, at a lower priority than the loop, and a loop that wakes
takes the core from it at once.

Requests arrive on stdin, each a :data:`REQUEST` header (``op``, ``handle``, payload length,
offset) and its payload; replies go to stdout, each a :data:`REPLY` header (``kind``,
``handle`` or token, ``errno``, message length) and a UTF-8 message:

* ``OPEN`` ``handle`` (payload: the path; offset 1 to append, 0 to truncate);
* ``WRITE`` ``handle`` (payload: bytes written at the file's position, all of them);
* ``PWRITE`` ``handle`` (payload at ``offset``, the position untouched);
* ``CLOSE`` ``handle``: answered with ``CLOSED`` (no error can follow for it);
* ``MARK`` token: answered with ``DONE`` token once everything before it is written.

A failed operation is answered with ``ERROR`` (the handle, the errno, the message), each
time, so the file's owner can count what it lost (a file that could not be opened answers
every write with ``EBADF``); the server's side decides how loudly.

The process exits when stdin ends, which is when the server exits, however it exits: what
it had already handed over (the pipe holds up to a megabyte) is written first, so a
SIGKILLed server's last blocks still reach the disk. It also exits once its parent is gone
and nothing is left to read, in case another process holds the pipe open.

Import rule: standard library only (it runs with ``-I``, outside the package).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

#: op (B), handle (I), payload length (I), offset (q)
REQUEST = struct.Struct("<BIIq")
#: kind (B), handle or token (I), errno (i), message length (I)
REPLY = struct.Struct("<BIiI")

OPEN, WRITE, PWRITE, CLOSE, MARK = range(5)
DONE, ERROR, CLOSED = range(3)

READ_BYTES = 1 << 20
#: How long requests gather before the process takes them (milliseconds).
BATCH_MS = 20
#: How often a blocked read checks that the server still runs (milliseconds).
PARENT_CHECK_MS = 1000


class Files:
    """The open files, by the server's handle."""

    def __init__(self, replies: int) -> None:
        self._replies = replies
        self._fds: dict[int, int] = {}

    def run(self, op: int, handle: int, offset: int, payload: memoryview) -> None:
        if op == MARK:
            self._reply(DONE, handle, 0, "")
            return
        if op == CLOSE:
            fd = self._fds.pop(handle, None)
            if fd is not None:
                self._guard(handle, os.close, fd)
            self._reply(CLOSED, handle, 0, "")
            return
        if op == OPEN:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
            flags |= os.O_APPEND if offset else os.O_TRUNC
            fd = self._guard(handle, os.open, os.fsdecode(bytes(payload)), flags, 0o644)
            if fd is not None:
                self._fds[handle] = fd
            return
        fd = self._fds.get(handle)
        if fd is None:
            self._reply(ERROR, handle, errno.EBADF, "not an open file")
        elif op == WRITE:
            self._guard(handle, _write_all, fd, payload)
        elif op == PWRITE:
            self._guard(handle, os.pwrite, fd, payload, offset)

    def close_all(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _guard(self, handle: int, fn: Callable[..., Any], *args: object) -> Any:
        """``fn(*args)``; an ``OSError`` is answered with ``ERROR`` and gives ``None``."""
        try:
            return fn(*args)
        except OSError as exc:
            self._reply(ERROR, handle, exc.errno or 0, exc.strerror or str(exc))
            return None

    def _reply(self, kind: int, handle: int, code: int, message: str) -> None:
        text = message.encode()
        # A broken pipe: the server is gone; its files are still written.
        with contextlib.suppress(BrokenPipeError):
            _write_all(self._replies, REPLY.pack(kind, handle, code, len(text)) + text)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(requests: int, replies: int, wake: int, parent: int) -> None:
    """Read and perform requests until ``requests`` ends (or the parent is gone).

    Woken by the first request after a quiet spell, it lets more gather for ``BATCH_MS``
    (cut short by a byte on ``wake``: the server waits for a ``MARK``, or its pipe is
    full), then takes everything there is: a few wake-ups a second, not one per loop
    iteration of the server (each would be two context switches on the server's core)."""
    files = Files(replies)
    poller = select.poll()
    poller.register(requests, select.POLLIN)
    waker = select.poll()
    waker.register(wake, select.POLLIN)
    os.set_blocking(requests, False)
    os.set_blocking(wake, False)
    rest = b""
    try:
        while True:
            if not poller.poll(PARENT_CHECK_MS):
                if os.getppid() != parent:
                    break
                continue
            if waker.poll(BATCH_MS):
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 4096)
            while True:
                try:
                    chunk = os.read(requests, READ_BYTES)
                except BlockingIOError:
                    break
                if not chunk:
                    return
                data = rest + chunk if rest else chunk
                rest = data[_run_complete(files, data) :]
    finally:
        files.close_all()


def _run_complete(files: Files, data: bytes) -> int:
    """Run every whole request at the start of ``data``; the bytes they took."""
    view = memoryview(data)
    at = 0
    while len(view) - at >= REQUEST.size:
        op, handle, length, offset = REQUEST.unpack_from(view, at)
        end = at + REQUEST.size + length
        if end > len(view):
            break
        files.run(op, handle, offset, view[at + REQUEST.size : end])
        at = end
    return at


def main() -> None:
    """``writerproc.py NICE WAKE_FD``: requests on stdin, replies on stdout."""
    nice, wake = int(sys.argv[1]), int(sys.argv[2])
    # Ctrl-C reaches the whole process group, and a service manager may signal every
    # process of the service: the server decides when to stop, and this process ends
    # when the server's pipe does, after writing what it was handed.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if nice:
        with contextlib.suppress(OSError):  # not allowed here: run at the server's own priority
            os.nice(nice)
    serve(sys.stdin.fileno(), sys.stdout.fileno(), wake, os.getppid())


if __name__ == "__main__":
    main()
