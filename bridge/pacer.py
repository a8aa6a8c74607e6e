"""The asyncio half of pacing: a :class:`~bridge.pacing.Scheduler` driven by one loop timer.

Everything a process paces (the server's outbound streams; the simulator's callers, delay
lines and test agents) is a ``Paced`` item of one scheduler, and the scheduler asks for one
wake-up at a time: the earliest one. Each wake-up serves every item due within ``early_ns``
of it in one pass. The timer is a :class:`~bridge.looptimer.LoopTimer` (a timerfd on Linux):
uvloop's own timers have whole-millisecond steps and fired 2-5 ms late often enough to put
the pacing error's p99 over 2 ms (docs/architecture.md s.5).

:meth:`Pacer.poll` lets a connection serve what is due when data arrives: a burst of reads
handled in one loop iteration would otherwise hold back every send due meanwhile (timers run
only between iterations).

Import rule: asyncio, ``bridge.looptimer``, ``bridge.pacing`` and ``bridge.units``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bridge.looptimer import LoopTimer
from bridge.pacing import Clock, MonotonicClock, Scheduler
from bridge.units import MS


class Pacer:
    """One scheduler and the single loop timer for its earliest wake-up."""

    __slots__ = (
        "_monotonic",
        "_timer",
        "_timer_ns",
        "clock",
        "early_ns",
        "loop",
        "on_fire",
        "scheduler",
    )

    def __init__(
        self,
        clock: Clock,
        lead_ms: int = 0,
        early_ns: int = MS,
        on_fire: Callable[[int], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.clock = clock
        #: The timer counts on ``time.monotonic_ns``: another clock's deadlines are converted.
        self._monotonic = isinstance(clock, MonotonicClock)
        self.early_ns = early_ns
        #: Called with each timer wake-up's lateness (ns after the wake-up it was armed for).
        self.on_fire = on_fire
        #: The loop the timer runs on; until it is set, nothing is armed (a server not started).
        self.loop = loop
        self.scheduler = Scheduler(clock, lead_ms, arm=self._arm)
        self._timer: LoopTimer | None = None
        #: The deadline the timer is armed for (None: not armed).
        self._timer_ns: int | None = None

    def poll(self, now_ns: int) -> None:
        """Serve what is due by ``now_ns`` (plus ``early_ns``), if anything is: cheap if not."""
        if now_ns + self.early_ns >= self.scheduler.next_wake_ns:
            self.scheduler.service(now_ns, self.early_ns)

    def open(self) -> None:
        """Create the timer now (``loop`` set), not at the first wake-up: a server then holds
        the same file descriptors before and after its first outbound frame, so a check of
        its resources against a baseline (``scripts/fuzz``) sees a leak, not the timer."""
        if self._timer is None and self.loop is not None:
            self._timer = LoopTimer(self.loop, self._on_timer)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._timer_ns = None

    def _arm(self, wake_ns: int) -> None:
        loop = self.loop
        if loop is None:
            return
        timer_ns = self._timer_ns
        if timer_ns is not None and timer_ns <= wake_ns + self.early_ns:
            return  # the armed wake-up serves this one too
        if self._timer is None:
            self.open()
        timer = self._timer
        assert timer is not None
        self._timer_ns = wake_ns
        if self._monotonic:
            timer.arm_at(wake_ns)
        else:
            timer.arm_at(time.monotonic_ns() + wake_ns - self.clock.now_ns())

    def _on_timer(self) -> None:
        due = self._timer_ns
        self._timer_ns = None
        now = self.clock.now_ns()
        if due is not None and self.on_fire is not None:
            self.on_fire(now - due)
        self.scheduler.service(now, self.early_ns)
