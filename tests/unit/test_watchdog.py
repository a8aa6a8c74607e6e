"""The event-loop watchdog names the call that blocked the loop, and where (bridge/watchdog.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bridge.watchdog import ACTIVE, TASK_PREFIX, Watchdog


def _stall_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bridge.watchdog"]


async def _blocking_handler() -> None:
    await asyncio.sleep(0.05)
    time.sleep(0.25)  # noqa: ASYNC251 - a handler that blocks the loop: what the watchdog is for


async def test_a_blocking_handler_task_is_named_with_where_it_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lags: list[float] = []
    dog = Watchdog(asyncio.get_running_loop(), on_lag=lags.append)
    dog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.watchdog"):
            await asyncio.create_task(_blocking_handler(), name=f"{TASK_PREFIX}CALL-7")
            await asyncio.sleep(0.1)  # the heartbeat runs again, and logs
    finally:
        dog.stop()
    lines = _stall_lines(caplog)
    assert len(lines) == 1, "one line per stall"
    line = lines[0]
    assert line.__dict__["call_id"] == "CALL-7"
    assert "test_watchdog.py" in line.__dict__["where"]
    assert "_blocking_handler" in line.__dict__["where"]
    assert 150 <= line.__dict__["blocked_ms"] <= 400
    assert dog.stalls == 1
    assert max(lags) >= 0.15, "the lag histogram sees the stall too"


async def test_synchronous_work_is_blamed_on_the_active_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dog = Watchdog(asyncio.get_running_loop())
    dog.start()

    def sink() -> None:  # as a handler's on_audio sink runs: inside the server's read
        ACTIVE.call_id = "CALL-9"
        try:
            time.sleep(0.2)
        finally:
            ACTIVE.call_id = None

    try:
        with caplog.at_level(logging.WARNING, logger="bridge.watchdog"):
            await asyncio.sleep(0.05)
            asyncio.get_running_loop().call_soon(sink)
            await asyncio.sleep(0.35)
    finally:
        dog.stop()
    lines = _stall_lines(caplog)
    assert [r.__dict__["call_id"] for r in lines] == ["CALL-9"]
    assert "in sink" in lines[0].__dict__["where"]


async def test_an_idle_or_busy_but_responsive_loop_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dog = Watchdog(asyncio.get_running_loop())
    dog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.watchdog"):
            for _ in range(20):  # 20 slices of 10 ms of work: never 100 ms in one piece
                time.sleep(0.01)  # noqa: ASYNC251 - busy, in slices
                await asyncio.sleep(0.005)
    finally:
        dog.stop()
    assert _stall_lines(caplog) == []
    assert dog.stalls == 0
