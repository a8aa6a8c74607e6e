"""Per-call file writes off the event loop: one writer thread per process, a bounded queue.

A ``write()`` to the page cache usually takes microseconds, but not always: when the disk falls
behind, the kernel throttles the writing thread (dirty-page balancing) for tens or hundreds of
milliseconds, and a journal commit can hold a file's lock as long. On the event loop that
stall is every call's stall. So the recorder's audio and header updates and the call logs'
lines are handed to this thread (``submit``) and written there, in the order they were
submitted; the loop only formats them.

* **Batched.** The thread wakes at most every ``BATCH_S`` (50 ms) and writes everything
  queued since: waking it for each of 200 calls' blocks cost more than the writes (on the
  one core a worker runs on, every wake-up is a context switch and a GIL hand-over). It
  wakes at once when ``HIGH_WATER_BYTES`` are waiting or someone waits for it.
* **Bounded.** At most ``MAX_PENDING_BYTES`` wait; a submit that would pass it is refused
  (``submit`` returns ``False``): the file's owner stops writing that file and says so, the
  call goes on (a recording that cannot keep up fails loudly rather than stalling calls or
  growing memory without end).
* **Nothing lost at shutdown.** ``bridge serve`` waits for the queue to empty before it exits
  (``BridgeServer.close`` awaits :func:`written`; an ``atexit`` hook drains it too), and a
  handler can await :func:`written` to know its own files are complete.
* **SIGKILL.** What the thread has written is in the page cache and survives the process;
  only what was queued in the last ``BATCH_S`` is lost.
  The recorder rewrites its WAV header after each block, so the file stays playable.

Import rule: standard library only.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("bridge.filewriter")

#: Bytes queued and not yet written, at most (about 2.5 s of 200 recorded 16 kHz calls).
MAX_PENDING_BYTES = 32 << 20
#: How long the thread lets submissions gather before writing them.
BATCH_S = 0.05
#: Waiting bytes that wake the thread before ``BATCH_S`` is up.
HIGH_WATER_BYTES = 1 << 20

Op = Callable[[], object]
OnError = Callable[[Exception], None]


class FileWriter:
    """Runs file operations on one background thread, in submission order."""

    def __init__(self, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.max_pending_bytes = max_pending_bytes
        #: (operation, bytes it writes, its error handler, urgent)
        self._items: deque[tuple[Op, int, OnError | None, bool]] = deque()
        self._cond = threading.Condition()
        self._pending_bytes = 0
        self._busy = False
        #: Urgent submissions not yet written, and threads in ``flush``: write without delay.
        self._urgent = 0
        self._thread: threading.Thread | None = None
        #: Submissions refused because the bound was reached.
        self.refused = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def submit(
        self, op: Op, size: int = 0, on_error: OnError | None = None, *, urgent: bool = False
    ) -> bool:
        """Queue ``op`` (``size``: the bytes it writes); ``False`` if that would pass the bound.

        ``on_error`` gets an exception ``op`` raised, on the writer thread; without it the
        exception is logged. ``urgent``: write it (and what is before it) now, not within
        ``BATCH_S``.
        """
        with self._cond:
            if size and self._pending_bytes + size > self.max_pending_bytes:
                self.refused += 1
                return False
            was_idle = not self._items and not self._busy
            self._items.append((op, size, on_error, urgent))
            self._pending_bytes += size
            if urgent:
                self._urgent += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bridge-file-writer", daemon=True
                )
                self._thread.start()
            if was_idle or urgent or self._pending_bytes >= HIGH_WATER_BYTES:
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is written; ``False`` on timeout."""
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._items and not self._busy, timeout)
            finally:
                self._urgent -= 1

    async def written(self) -> None:
        """Wait, without blocking the loop, until everything submitted so far is written."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def mark() -> None:
            loop.call_soon_threadsafe(_resolve, done)

        self.submit(mark, urgent=True)
        await done

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                if not self._urgent and self._pending_bytes < HIGH_WATER_BYTES:
                    # Let more gather (an urgent submit or the high water mark cuts it short).
                    self._cond.wait(BATCH_S)
                batch = list(self._items)
                self._items.clear()
                self._busy = True
            for op, size, on_error, urgent in batch:
                self._run_one(op, on_error)
                with self._cond:
                    self._pending_bytes -= size
                    if urgent:
                        self._urgent -= 1
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @staticmethod
    def _run_one(op: Op, on_error: OnError | None) -> None:
        try:
            op()
        except Exception as exc:
            if on_error is None:
                log.exception("file write failed")
            else:
                try:
                    on_error(exc)
                except Exception:
                    log.exception("file write error handler failed")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_shared: FileWriter | None = None
_shared_lock = threading.Lock()


def file_writer() -> FileWriter:
    """The process's writer (started on first use, drained at exit)."""
    global _shared  # noqa: PLW0603 - one writer thread per process, by design
    with _shared_lock:
        if _shared is None:
            _shared = FileWriter()
            atexit.register(_shared.flush, 30.0)
        return _shared


async def written() -> None:
    """Everything submitted to the process's writer so far is written (no-op if unused)."""
    if _shared is not None:
        await _shared.written()
