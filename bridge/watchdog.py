"""The event-loop watchdog: which call blocked the loop, and for how long.

Every call in a process shares one event loop, so a handler that blocks it (a synchronous
HTTP request, a ``time.sleep``, a CPU-heavy loop) delays every other call's audio. The
pacing grid absorbs a stall (docs/architecture.md s.5: overdue frames leave at once, the
grid never slides), but the operator must learn that it happened and who did it.

Two parts:

* **On the loop**, a heartbeat timer every ``period_s`` (20 ms) records how late it ran
  (the ``bridge_event_loop_lag_seconds`` histogram gets every beat; the timer is a
  :class:`~bridge.looptimer.LoopTimer`, so the figure is the loop's lag, not uvloop's
  millisecond timer steps) and, after a stall of
  at least ``threshold_s`` (100 ms), logs one line: how long, which call, and where.
* **A watchdog thread** wakes every ``period_s``; when the heartbeat is overdue by more than
  ``threshold_s`` it looks at what the loop thread is doing *now*: the innermost frame of
  its stack (``sys._current_frames``) and the call it is working for. A call's handler task
  is named ``call <id>`` (``bridge.server``); synchronous per-call work (a frame handed to a
  handler's sink, a tap, a carrier's parser, a paced send) sets :data:`ACTIVE` around
  itself. The thread only records; the loop logs, once, when it runs again.

A stall inside C code that holds the GIL the whole time (a big numpy call) cannot be seen by
the thread while it lasts; its line then says ``where: unknown``.

Import rule: standard library and ``bridge.looptimer``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable

from bridge.looptimer import LoopTimer

log = logging.getLogger("bridge.watchdog")

#: How often the loop beats and the thread looks.
PERIOD_S = 0.02
#: A beat this late is a stall worth a log line.
THRESHOLD_S = 0.1
#: Task names of call handlers start with this (``bridge.server`` names them).
TASK_PREFIX = "call "
#: Frames of the loop thread's stack a stall's line shows.
STACK_FRAMES = 4


class _Active:
    """The call whose synchronous work the loop is doing, if any (set around that work)."""

    __slots__ = ("call_id",)

    def __init__(self) -> None:
        self.call_id: str | None = None


#: Set by the server around per-call synchronous work; read by the watchdog thread.
ACTIVE = _Active()


class Stall:
    """What the watchdog thread saw of one stall."""

    __slots__ = ("call_id", "stack", "task", "where")

    def __init__(self, call_id: str | None, task: str | None, stack: list[str]) -> None:
        self.call_id = call_id
        self.task = task
        #: The innermost frames, innermost first ("file:line in function").
        self.stack = stack
        self.where = stack[0] if stack else "unknown"


class Watchdog:
    """The heartbeat and the thread (module doc). ``on_lag`` gets every beat's lateness in
    seconds (the metrics histogram); ``on_stall`` gets each stall's seconds and what was seen."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        period_s: float = PERIOD_S,
        threshold_s: float = THRESHOLD_S,
        on_lag: Callable[[float], None] | None = None,
        on_stall: Callable[[float, Stall | None], None] | None = None,
    ) -> None:
        self.loop = loop
        self.period_ns = round(period_s * 1e9)
        self.threshold_ns = round(threshold_s * 1e9)
        self.on_lag = on_lag
        self.on_stall = on_stall
        self.stalls = 0
        self._due_ns = 0
        self._timer: LoopTimer | None = None
        #: The thread's observation and the beat (its due time) it belongs to.
        self._seen: tuple[int, Stall] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._schedule(time.monotonic_ns())
        self._thread = threading.Thread(target=self._watch, name="bridge-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    # --- on the loop ----------------------------------------------------------------------

    def _schedule(self, now_ns: int) -> None:
        self._due_ns = now_ns + self.period_ns
        if self._timer is None:
            self._timer = LoopTimer(self.loop, self._beat)
        self._timer.arm_at(self._due_ns)

    def _beat(self) -> None:
        now = time.monotonic_ns()
        due = self._due_ns
        lag_ns = max(0, now - due)
        if self.on_lag is not None:
            self.on_lag(lag_ns / 1e9)
        if lag_ns >= self.threshold_ns:
            seen = self._seen
            self._stalled(lag_ns, seen[1] if seen is not None and seen[0] == due else None)
        self._seen = None
        if not self._stop.is_set():
            self._schedule(now)

    def _stalled(self, lag_ns: int, seen: Stall | None) -> None:
        self.stalls += 1
        blocked_ms = round(lag_ns / 1e6, 1)
        log.warning(
            "event loop blocked for at least %.0f ms",
            blocked_ms,
            extra={
                "blocked_ms": blocked_ms,
                "call_id": seen.call_id if seen else None,
                "task": seen.task if seen else None,
                "where": seen.where if seen else "unknown",
                "stack": seen.stack if seen else None,
            },
        )
        if self.on_stall is not None:
            self.on_stall(lag_ns / 1e9, seen)

    # --- on the watchdog thread ---------------------------------------------------------------

    def _watch(self) -> None:
        period_s = self.period_ns / 1e9
        while not self._stop.wait(period_s):
            due = self._due_ns
            seen = self._seen
            if seen is not None and seen[0] == due:
                continue  # this stall is already observed
            if time.monotonic_ns() - due >= self.threshold_ns:
                self._seen = (due, self._observe())

    def _observe(self) -> Stall:
        """The loop thread's call and innermost frame, now (it is stuck there)."""
        task_name: str | None = None
        try:
            task = asyncio.current_task(self.loop)
        except RuntimeError:
            task = None
        if task is not None:
            task_name = task.get_name()
        call_id = ACTIVE.call_id
        if task_name is not None and task_name.startswith(TASK_PREFIX):
            call_id = task_name[len(TASK_PREFIX) :]
        frame = sys._current_frames().get(self._loop_thread)
        stack: list[str] = []
        while frame is not None and len(stack) < STACK_FRAMES:
            code = frame.f_code
            stack.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
            frame = frame.f_back
        return Stall(call_id, task_name, stack)
