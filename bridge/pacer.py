"""The asyncio half of pacing: a :class:`~bridge.pacing.Scheduler` driven by one loop timer.

Everything a process paces (the server's outbound streams; the simulator's callers, delay
lines and test agents) is a ``Paced`` item of one scheduler, and the scheduler asks for one
wake-up at a time: the earliest one. Each wake-up serves every item due within ``early_ns``
of it in one pass: uvloop's timers have 1 ms resolution and fire up to 1 ms early or late, so
a wake-up per item would cost CPU and still be late (docs/architecture.md s.5).

:meth:`Pacer.poll` lets a connection serve what is due when data arrives: a burst of reads
handled in one loop iteration would otherwise hold back every send due meanwhile (timers run
only between iterations).

Import rule: asyncio, ``bridge.pacing`` and ``bridge.units``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.pacing import Clock, Scheduler
from bridge.units import MS, SECOND


class Pacer:
    """One scheduler and the single loop timer for its earliest wake-up."""

    __slots__ = ("_timer", "_timer_ns", "clock", "early_ns", "loop", "on_fire", "scheduler")

    def __init__(
        self,
        clock: Clock,
        lead_ms: int = 0,
        early_ns: int = MS,
        on_fire: Callable[[int], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.clock = clock
        self.early_ns = early_ns
        #: Called with each timer wake-up's lateness (ns after the wake-up it was armed for).
        self.on_fire = on_fire
        #: The loop the timer runs on; until it is set, nothing is armed (a server not started).
        self.loop = loop
        self.scheduler = Scheduler(clock, lead_ms, arm=self._arm)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ns: int | None = None

    def poll(self, now_ns: int) -> None:
        """Serve what is due by ``now_ns`` (plus ``early_ns``), if anything is: cheap if not."""
        if now_ns + self.early_ns >= self.scheduler.next_wake_ns:
            self.scheduler.service(now_ns, self.early_ns)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_ns = None

    def _arm(self, wake_ns: int) -> None:
        loop = self.loop
        if loop is None:
            return
        timer_ns = self._timer_ns
        if self._timer is not None and timer_ns is not None and timer_ns <= wake_ns + self.early_ns:
            return  # the armed wake-up serves this one too
        if self._timer is not None:
            self._timer.cancel()
        delay_s = max(0, wake_ns - self.clock.now_ns()) / SECOND
        self._timer_ns = wake_ns
        self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_ns
        self._timer = None
        self._timer_ns = None
        now = self.clock.now_ns()
        if due is not None and self.on_fire is not None:
            self.on_fire(now - due)
        self.scheduler.service(now, self.early_ns)
