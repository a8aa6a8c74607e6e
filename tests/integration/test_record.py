"""Recording (``--record-dir``): stereo WAV per call, time-aligned, streamed, crash-safe.

Real speech (flite, tests/data) is the caller's audio; the simulator keeps its own copy of
what it sent and what it received, which the recording must match exactly.
"""

from __future__ import annotations

import asyncio
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.pcm import to_bytes, tone
from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.config import ServerConfig
from bridge.filewriter import file_writer
from bridge.handlers import build_handler
from bridge.handlers.record import start_recording
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Connected
from bridge.sim import CallOptions, run_call
from tests.helpers import (
    DATA,
    running_server,
    skipped_silent_rows,
    start_server_process,
    url_of,
    wait_s,
)


@pytest.fixture(scope="module")
def speech() -> Path:
    """A 16 kHz sentence, 2.97 s (flite voice slt)."""
    return DATA / "fox_slt_16k.wav"


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    """The raw interleaved samples (``read_wav`` mixes to mono)."""
    blob = path.read_bytes()
    assert blob[22:24] == b"\x02\x00"  # two channels
    rate = int.from_bytes(blob[24:28], "little")
    data_size = int.from_bytes(blob[40:44], "little")
    data = np.frombuffer(blob[44 : 44 + data_size], dtype="<i2")
    return data.reshape(-1, 2), rate


async def test_echo_call_is_recorded_left_caller_right_bridge_aligned(
    speech: Path, tmp_path: Path
) -> None:
    records = tmp_path / "rec"
    sent, received = tmp_path / "sent.wav", tmp_path / "received.wav"
    handler = build_handler(ServerConfig(record_dir=str(records)))
    async with running_server(handler) as server:
        report = await run_call(
            CallOptions(
                url=url_of(server, query="call=../../etc/rec-1"),  # a hostile id, made safe
                rate=16000,
                seconds=2.5,
                wav=speech,
                record_sent=sent,
                record=received,
            )
        )
    assert report.exact
    (path,) = records.iterdir()
    assert path.name == "_.._etc_rec-1.wav"
    stereo, rate = read_stereo(path)
    assert rate == 16000
    # Duration: the call's, from its first message to the caller's hang-up, to 40 ms.
    assert abs(len(stereo) / rate - report.duration_s) < 0.04
    caller, _ = read_wav(sent)
    back, _ = read_wav(received)
    left, right = stereo[:, 0], stereo[:, 1]
    # Left is exactly what the caller sent, from the first sample.
    assert np.array_equal(left[: len(caller)], caller)
    assert not left[len(caller) :].any()
    # Right is exactly what bridge sent, placed at the time it played: the echo of frame k
    # sits in the 20 ms slot k or k + 1 (it leaves as soon as frame k arrives).
    start = int(np.flatnonzero(right)[0]) // 320 * 320
    assert start in (0, 320)
    # Every frame bridge sent, in order; a stalled test host may hold the caller's audio back
    # past a slot, and then bridge's schedule (bridge.pacing) moves on, so Vonage plays (and
    # the file holds) a silent slot there: only such slots may sit between the frames.
    skipped = skipped_silent_rows(right[start:].reshape(-1, 320), back.reshape(-1, 320))
    assert skipped <= 10, skipped


async def test_a_server_killed_mid_call_leaves_a_playable_recording(
    speech: Path, tmp_path: Path
) -> None:
    records = tmp_path / "rec"
    sent = tmp_path / "sent.wav"
    server = start_server_process(["--record-dir", str(records)])
    try:
        call = asyncio.create_task(
            run_call(
                CallOptions(url=server.url, rate=16000, seconds=3.0, wav=speech, record_sent=sent)
            )
        )
        await asyncio.sleep(wait_s(2.3))
        (writer,) = _writer_processes(server.proc.pid)  # started with the server
        server.proc.send_signal(signal.SIGKILL)  # no chance to finish the file
        await call
    finally:
        server.stop(sig=None)
    # The writer writes what it was handed, then ends with its server (no orphan).
    deadline = asyncio.get_running_loop().time() + wait_s(5)
    while _is_writer(writer):  # a zombie has no command line
        assert asyncio.get_running_loop().time() < deadline, "the writer outlived its server"
        await asyncio.sleep(0.05)
    (path,) = records.iterdir()
    mono, rate = read_wav(path)  # still a valid WAV: its header was kept current
    stereo, _ = read_stereo(path)
    assert len(mono) == len(stereo)
    caller, _ = read_wav(sent)
    # Every row handed over before the kill: up to the last 200 ms block that was 200 ms
    # behind the caller (rows from 2.0 s on were not written yet at 2.3 s).
    assert len(stereo) >= 2 * rate
    assert np.array_equal(stereo[:, 0], caller[: len(stereo)])


def _is_writer(pid: int) -> bool:
    try:
        return b"writerproc" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _writer_processes(server: int) -> list[int]:
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    return [int(c) for c in children if _is_writer(int(c))]


def test_a_ten_minute_recording_keeps_memory_flat(tmp_path: Path) -> None:
    """10 minutes of 16 kHz call through the real Call and Recorder on a fake clock."""
    clock = FakeClock(start_ns=0)
    scheduler = Scheduler(clock, lead_ms=100)

    class NullIO:
        def send_binary(self, data: bytes) -> None: ...

        def send_text(self, text: str) -> None: ...

        def close(self, code: int, reason: str) -> None: ...

    call = Call(Connected(sample_rate=16000), NullIO(), scheduler)
    recorder = start_recording(call, tmp_path)
    assert recorder is not None
    frame = to_bytes(tone(300, 16000, 320))
    frames = 10 * 60 * 50
    writer = file_writer()
    tracemalloc.start()
    try:
        for k in range(frames):
            call.feed_audio(frame)
            scheduler.push(call._stream, frame)  # what the handler plays goes out on time
            clock.advance_ms(20)
            scheduler.service()
            if k % 50 == 0:
                # Fake time runs far faster than real time: let the writer process keep up as
                # it does at real time (its own queue is bounded: tests/unit/test_filewriter).
                writer.flush()
            if k == 1000:
                tracemalloc.reset_peak()
                baseline, _ = tracemalloc.get_traced_memory()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    call.end()
    assert writer.flush(timeout=30)  # the writer process has written everything
    assert recorder.duration_s == pytest.approx(600, abs=0.05)
    assert recorder.path.stat().st_size == 44 + frames * 320 * 2 * 2
    growth = peak - baseline
    print(f"10-minute recording: peak memory growth {growth / 1024:.0f} KiB")
    assert growth < 512 * 1024  # a few frames in flight, never the call
