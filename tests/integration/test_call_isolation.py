"""One call's fault never touches another, on a real server with real calls over loopback.

A faulty outbound tap (what a broken recorder is) raises inside the process-wide pacing tick;
a faulty inbound tap (a broken transcriber) raises inside the socket's read path; a handler
raises. Each time the faulty call is closed with 1011 and one error line with its traceback,
and a call beside it keeps its audio on the exact 20 ms grid to the end.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.audio.pcm import tone
from bridge.call import Call
from bridge.sim import CallOptions, CallReport, run_call
from tests.helpers import running_server, url_of, wait_s

SECONDS = 2.0
#: Frames a 2 s call hears when bridge plays to it throughout (the last few may be cut).
FULL = round(SECONDS / 0.02)


async def _play_tone(call: Call) -> None:
    """Play a tone for as long as the call lasts, reading and dropping the caller's audio."""

    async def listen() -> None:
        async for _ in call.audio():
            pass

    listener = asyncio.create_task(listen())
    piece = tone(440, call.pipeline_rate, call.pipeline_rate // 10)
    try:
        while not call.ended:
            await call.play(piece)
    finally:
        listener.cancel()


async def _faulty_outbound(call: Call) -> None:
    def tap(frame: bytes, slot: int) -> None:
        if slot == 25:
            raise RuntimeError("recorder broke")

    call.add_taps(outbound=tap)
    await _play_tone(call)


async def _faulty_inbound(call: Call) -> None:
    def tap(frame: bytes) -> None:
        if call.stats.frames_in == 25:
            raise RuntimeError("transcriber broke")

    call.add_taps(inbound=tap)
    await _play_tone(call)


async def _raises(call: Call) -> None:
    async for _ in call.audio():
        if call.stats.frames_in == 25:
            raise RuntimeError("handler broke")


async def _route(call: Call) -> None:
    handlers = {"out": _faulty_outbound, "in": _faulty_inbound, "raise": _raises}
    await handlers.get(call.id, _play_tone)(call)


def _check_healthy(report: CallReport) -> None:
    assert report.completed and report.close_code in (1000, None), report
    assert report.frames_received >= FULL - 5, report.frames_received
    # Paced all along, no stall: every frame near its slot on a drift-free 20 ms grid. The
    # bound is loose because the client runs in this process on a shared machine (its own
    # loop lag is in these figures); the unit tests assert exact send times on a fake clock.
    assert report.pacing_error_max_ms is not None and report.pacing_drift_ms is not None
    assert report.pacing_error_max_ms < wait_s(100), report
    assert abs(report.pacing_drift_ms) < wait_s(20), report


@pytest.mark.parametrize(
    ("faulty", "message"),
    [
        ("out", "recorder broke"),
        ("in", "transcriber broke"),
        ("raise", "handler broke"),
    ],
)
async def test_a_faulty_call_ends_alone_with_1011_and_its_traceback(
    faulty: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    async with running_server(_route) as server:
        healthy, failed = await asyncio.gather(
            run_call(
                CallOptions(
                    url=url_of(server, query="call=healthy"),
                    seconds=SECONDS,
                    measure_pacing=True,
                )
            ),
            run_call(CallOptions(url=url_of(server, query=f"call={faulty}"), seconds=SECONDS)),
        )
    assert failed.close_code == 1011, failed
    assert failed.duration_s < SECONDS  # ended early, by bridge
    _check_healthy(healthy)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    (error,) = errors
    assert getattr(error, "call_id", None) == faulty
    assert error.exc_info is not None and message in str(error.exc_info[1])
    ended = [r for r in caplog.records if r.getMessage() == "call ended"]
    outcomes = {getattr(r, "call_id", None): getattr(r, "outcome", None) for r in ended}
    assert outcomes == {"healthy": "completed", faulty: "handler_error"}
