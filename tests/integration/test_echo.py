"""The real server and the real simulator on loopback: echo, rates, DTMF, load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.protocol.vonage import Dtmf
from bridge.sim import CallOptions, run_call, run_load
from tests.helpers import running_server, url_of


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_echo_is_byte_exact_at_the_call_rate(rate: int) -> None:
    async with running_server() as server:
        report = await run_call(
            CallOptions(url=url_of(server), rate=rate, seconds=2.0, tone_hz=440)
        )
    assert report.exact
    assert report.frames_sent == 100
    assert report.frames_received == report.frames_sent
    assert report.bad_frames == 0
    assert report.rtt_p50_ms is not None


@pytest.mark.parametrize(("rate", "pipeline_rate"), [(8000, 16000), (16000, 8000), (24000, 16000)])
async def test_echo_through_pipeline_rate_keeps_tone_and_frame_sizes(
    rate: int, pipeline_rate: int, tmp_path: Path
) -> None:
    out = tmp_path / "back.wav"
    async with running_server(pipeline_rate=pipeline_rate) as server:
        report = await run_call(
            CallOptions(
                url=url_of(server), rate=rate, seconds=2.0, tone_hz=1000, stamp=False, record=out
            )
        )
    # Every frame that came back had the call's exact size (the simulator counts bad ones).
    assert report.bad_frames == 0
    assert report.frames_received >= report.frames_sent - 2
    # Resampled audio comes back changed: reported as not exact, never as lost.
    assert report.frames_lost <= 2
    assert report.frames_not_exact >= report.frames_sent - 2
    back, back_rate = read_wav(out)
    assert back_rate == rate
    steady = back[rate // 5 : rate * 9 // 5].astype(np.float64)  # skip start-up and tail
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.argmax(spectrum) * rate / len(steady)
    assert abs(peak_hz - 1000) < 10
    assert np.sqrt(np.mean(steady**2)) > 8000 / np.sqrt(2) * 0.9  # level preserved


async def test_dtmf_reaches_the_handler_mid_call() -> None:
    digits: list[str] = []

    async def handler(call: Call) -> None:
        async def collect() -> None:
            async for event in call.events():
                if isinstance(event, Dtmf):
                    digits.append(event.digit)

        task = asyncio.create_task(collect())
        async for frame in call.audio():
            await call.play(frame)
        await task

    async with running_server(handler) as server:
        report = await run_call(
            CallOptions(url=url_of(server), rate=16000, seconds=2.0, dtmf="12#*", dtmf_at_s=0.5)
        )
    assert digits == ["1", "2", "#", "*"]
    assert report.exact


async def test_metadata_and_query_reach_the_handler() -> None:
    seen: list[tuple[dict[str, object], dict[str, str], str]] = []

    async def handler(call: Call) -> None:
        seen.append((dict(call.metadata), dict(call.query), call.id))
        async for _ in call.audio():
            pass

    async with running_server(handler) as server:
        await run_call(
            CallOptions(
                url=url_of(server, query="call=c-42&lang=en"),
                rate=8000,
                seconds=0.5,
                headers={"caller": "447700900123"},
            )
        )
    assert seen == [({"caller": "447700900123"}, {"call": "c-42", "lang": "en"}, "c-42")]


async def test_fifty_concurrent_calls_are_all_exact() -> None:
    async with running_server() as server:
        report = await run_load(CallOptions(url=url_of(server), rate=16000, seconds=3.0), calls=50)
    assert report.calls_ok == 50
    assert report.calls_exact == 50
    assert report.frames_lost == 0


async def test_handler_error_closes_with_1011_and_other_calls_continue() -> None:
    async def handler(call: Call) -> None:
        if call.query.get("boom"):
            raise RuntimeError("handler bug")
        async for frame in call.audio():
            await call.play(frame)

    async with running_server(handler) as server:
        good = asyncio.create_task(run_call(CallOptions(url=url_of(server), seconds=1.5)))
        bad = await run_call(CallOptions(url=url_of(server, query="boom=1"), seconds=1.0))
        report = await good
    assert bad.close_code == 1011
    assert report.exact
