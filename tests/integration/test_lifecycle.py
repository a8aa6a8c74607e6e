"""Graceful restarts (README: "Lifecycle"): on SIGTERM /ready turns 503 at once, new upgrades
get 503, live calls run on for up to --drain-seconds and are then closed with 1001, the
recording of every call is a valid WAV, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import wave
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.sim import CallOptions, run_call
from tests.helpers import ServerProcess, start_server_process, wait_s
from tests.integration._http import get


def _port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def _recording(folder: Path) -> tuple[int, int, int]:
    """(channels, rate, frames) of the one WAV in ``folder``; ``wave`` checks the header."""
    files = sorted(folder.glob("*.wav"))
    assert len(files) == 1, files
    with wave.open(str(files[0])) as wav:
        frames = wav.getnframes()
        data = wav.readframes(frames)
        assert len(data) == frames * wav.getnchannels() * wav.getsampwidth()
        return wav.getnchannels(), wav.getframerate(), frames


async def _exit_code(server: ServerProcess) -> int:
    return await asyncio.to_thread(server.stop, None, 15.0)


async def test_sigterm_drains_a_live_call_to_its_end(tmp_path: Path) -> None:
    server = start_server_process(["--drain-seconds", "20", "--record-dir", str(tmp_path)])
    try:
        port = _port(server)
        call = asyncio.create_task(run_call(CallOptions(url=server.url, seconds=2.5)))
        await asyncio.sleep(wait_s(0.8))
        assert (await get(port, "/ready")).status == 200
        loop = asyncio.get_running_loop()
        server.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        # /ready turns 503 at once (bounded wait for the signal to be handled).
        for _ in range(100):
            ready = await get(port, "/ready")
            if ready.status == 503:
                break
            await asyncio.sleep(0.02)
        ready_after = loop.time() - signalled
        health = await get(port, "/health")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url, compression=None):
                pass
        report = await call
        ended = loop.time()
        code = await _exit_code(server)
        exited_after_call = loop.time() - ended
    finally:
        server.stop(signal.SIGKILL)
    assert ready.status == 503 and ready.headers["retry-after"] == "5"
    assert ready_after < wait_s(0.5)
    assert health.status == 200, "alive while draining"
    assert refused.value.response.status_code == 503
    assert report.exact and report.close_code == 1000, "the call ran to its own end"
    assert code == 0
    assert exited_after_call < wait_s(3), "no waiting for the rest of --drain-seconds"
    messages = server.messages()
    assert "shutting down" in messages and "drained" in messages
    channels, rate, frames = _recording(tmp_path)
    assert (channels, rate) == (2, 16000)
    assert abs(frames - 2.5 * rate) <= 0.2 * rate


async def test_drain_time_over_closes_calls_with_1001(tmp_path: Path) -> None:
    server = start_server_process(["--drain-seconds", "0.5", "--record-dir", str(tmp_path)])
    try:
        call = asyncio.create_task(run_call(CallOptions(url=server.url, seconds=6.0)))
        await asyncio.sleep(wait_s(0.7))
        loop = asyncio.get_running_loop()
        server.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        report = await asyncio.wait_for(call, wait_s(10))
        closed_after = loop.time() - signalled
        code = await _exit_code(server)
    finally:
        server.stop(signal.SIGKILL)
    assert report.close_code == 1001 and report.close_reason == "server shutting down"
    assert 0.5 <= closed_after < 0.5 + wait_s(1.0)
    assert report.frames_lost <= 1  # a frame in flight at the close may not come back
    assert code == 0
    assert "drain time over: closing calls" in server.messages()
    channels, rate, frames = _recording(tmp_path)
    assert channels == 2
    # Recorded up to the close (about 1.2 s of a 6 s call), finalised: a readable file.
    assert 0.9 * rate <= frames <= 2.5 * rate


async def test_second_signal_ends_the_drain_at_once() -> None:
    server = start_server_process(["--drain-seconds", "30"])
    try:
        call = asyncio.create_task(run_call(CallOptions(url=server.url, seconds=6.0)))
        await asyncio.sleep(wait_s(0.5))
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(wait_s(0.3))
        loop = asyncio.get_running_loop()
        server.proc.send_signal(signal.SIGINT)
        second = loop.time()
        report = await asyncio.wait_for(call, wait_s(10))
        closed_after = loop.time() - second
        code = await _exit_code(server)
    finally:
        server.stop(signal.SIGKILL)
    assert report.close_code == 1001
    assert closed_after < wait_s(1.0)
    assert code == 0
