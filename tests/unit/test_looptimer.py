"""The pacing timer fires at the nanosecond it is armed for, once per arming (bridge/looptimer.py).

Real loops (uvloop through ``bridge.runtime.run``, and asyncio's own), real timerfds, the real
clock: what is asserted is never "on time within X ms" (a busy machine wakes anyone late) but
what holds however busy it is: never before the deadline, once per arming, the latest arming
wins, a cancelled or closed timer stays silent and gives its file descriptor back.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from bridge.looptimer import LoopTimer
from bridge.runtime import run

MS = 1_000_000

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


def on_uvloop(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    run(test())


class Recorder:
    """The callback: when each firing happened, and an event for the next one."""

    def __init__(self) -> None:
        self.fired: list[int] = []
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.fired.append(time.monotonic_ns())
        self.event.set()

    async def next(self, limit_s: float = 2.0) -> None:
        await asyncio.wait_for(self.event.wait(), limit_s)
        self.event.clear()


async def _never_early(precise: bool) -> list[int]:
    """40 armings at deadlines on every sub-millisecond phase; how late each fired (ns)."""
    record = Recorder()
    timer = LoopTimer(asyncio.get_running_loop(), record, precise=precise)
    late: list[int] = []
    try:
        for k in range(40):
            due = time.monotonic_ns() + 2 * MS + k * 37_000
            timer.arm_at(due)
            await record.next()
            assert len(record.fired) == k + 1
            late.append(record.fired[-1] - due)
    finally:
        timer.close()
    return late


@linux_only
def test_on_uvloop_it_never_fires_before_its_deadline() -> None:
    """uvloop's ``call_later`` counts whole milliseconds from a cached loop time, so it fires
    up to about 1.5 ms early; this timer's kernel deadline is the nanosecond asked for."""
    result: list[int] = []

    async def test() -> None:
        result.extend(await _never_early(precise=True))

    on_uvloop(test)
    assert len(result) == 40
    assert min(result) >= 0, f"fired {-min(result) / MS:.3f} ms before its deadline"


@linux_only
async def test_on_asyncios_own_loop_it_never_fires_before_its_deadline_either() -> None:
    late = await _never_early(precise=True)
    assert min(late) >= 0, f"fired {-min(late) / MS:.3f} ms before its deadline"


def test_the_millisecond_fallback_fires_once_per_arming_and_at_most_1_5_ms_early() -> None:
    """Where there is no timerfd: the delay rounded up to whole milliseconds, so the only
    early firing left is libuv's own cached-millisecond clock (under 1 ms, plus rounding)."""
    result: list[int] = []

    async def test() -> None:
        result.extend(await _never_early(precise=False))

    on_uvloop(test)
    assert len(result) == 40
    assert min(result) >= -1.5 * MS


async def _latest_arming_wins() -> tuple[list[int], int, int]:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    timer = LoopTimer(loop, lambda: fired.append(time.monotonic_ns()))
    try:
        start = time.monotonic_ns()
        timer.arm_at(start + 60 * MS)
        early = start + 5 * MS
        timer.arm_at(early)  # moved earlier: fires at 5 ms, and not again at 60 ms
        await asyncio.sleep(0.09)
        first = list(fired)
        later = time.monotonic_ns() + 30 * MS
        timer.arm_at(time.monotonic_ns() + 5 * MS)
        timer.arm_at(later)  # moved later: nothing at 5 ms, once at 30 ms
        await asyncio.sleep(0.06)
        return [*first, *fired[len(first) :]], early, later
    finally:
        timer.close()


def test_rearming_moves_the_one_pending_wake_up_either_way() -> None:
    out: list[tuple[list[int], int, int]] = []

    async def test() -> None:
        out.append(await _latest_arming_wins())

    on_uvloop(test)
    fired, early, later = out[0]
    assert len(fired) == 2, fired
    assert early <= fired[0] < early + 55 * MS  # before the abandoned 60 ms deadline
    assert fired[1] >= later


def test_a_cancelled_timer_stays_silent_and_a_past_deadline_fires_at_once() -> None:
    fired: list[int] = []

    async def test() -> None:
        loop = asyncio.get_running_loop()
        timer = LoopTimer(loop, lambda: fired.append(time.monotonic_ns()))
        try:
            timer.arm_at(time.monotonic_ns() + 5 * MS)
            timer.cancel()
            await asyncio.sleep(0.05)
            assert fired == []
            record = Recorder()
            timer.callback = record
            timer.arm_at(time.monotonic_ns() - 10 * MS)  # already past: due now
            await record.next()
            assert fired == [] and len(record.fired) == 1
        finally:
            timer.close()

    on_uvloop(test)


@linux_only
def test_an_expired_arming_replaced_before_the_loop_saw_it_does_not_fire() -> None:
    """The pacer re-arms from inside a tick; an expiry the loop has not read yet belongs to
    the arming it replaced and must not wake the new one early."""
    fired: list[int] = []
    due: list[int] = []

    async def test() -> None:
        loop = asyncio.get_running_loop()
        timer = LoopTimer(loop, lambda: fired.append(time.monotonic_ns()))
        try:
            timer.arm_at(time.monotonic_ns() + 1)
            time.sleep(0.003)  # noqa: ASYNC251 - expired, unread: the loop has not run
            due.append(time.monotonic_ns() + 20 * MS)
            timer.arm_at(due[0])
            await asyncio.sleep(0.06)
        finally:
            timer.close()

    on_uvloop(test)
    assert len(fired) == 1, fired
    assert fired[0] >= due[0]


@linux_only
def test_closing_gives_the_file_descriptor_back_and_refuses_new_armings() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def test() -> None:
        loop = asyncio.get_running_loop()
        before = open_fds()
        timers = [LoopTimer(loop, lambda: None) for _ in range(20)]
        assert all(t.precise for t in timers)
        assert open_fds() == before + 20
        for timer in timers:
            timer.arm_at(time.monotonic_ns() + 50 * MS)
            timer.close()
        assert open_fds() == before
        with pytest.raises(RuntimeError, match="closed"):
            timers[0].arm_at(time.monotonic_ns())

    on_uvloop(test)
