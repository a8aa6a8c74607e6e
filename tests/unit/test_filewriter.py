"""The file writer: order, its bound, waiting for it, failures that stay loud, its process.

Real files and a real writer process; ``/dev/full`` stands in for a full disk (every write
fails with ENOSPC), so a recording and a call log can fail for real. SIGSTOP holds the
writer still (a disk that does not keep up), SIGKILL ends it (a crash or the OOM killer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audio.pcm import to_bytes, tone
from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.filewriter import PIPE_BYTES, WRITER_NICE, FileWriter, file_writer
from bridge.handlers.calllog import CallLog
from bridge.handlers.record import Recorder
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Connected
from tests.helpers import wait_s
from tests.unit.test_call import RecordingIO


@pytest.fixture
def writer() -> Iterator[FileWriter]:
    files = FileWriter()
    try:
        yield files
    finally:
        if files.pid is not None:
            os.kill(files.pid, signal.SIGCONT)  # in case a test stopped it
        files.stop(timeout=10)


def _until(condition: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s(seconds)
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_operations_run_in_order_in_a_process_below_the_servers_priority(
    writer: FileWriter, tmp_path: Path
) -> None:
    path = tmp_path / "x"
    handle = writer.open(path)
    for i in range(500):
        assert writer.write(handle, f"{i}\n".encode())
    assert writer.pwrite(handle, b"X", 0)  # in place, the position untouched
    assert writer.write(handle, b"end\n")
    writer.close(handle)
    assert writer.flush(timeout=wait_s(10))
    assert path.read_text().split() == ["X", *[str(i) for i in range(1, 500)], "end"]
    assert writer.pid is not None and writer.pid != os.getpid()
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, writer.pid) == min(19, mine + WRITER_NICE)
    assert writer.pending_bytes == 0


def test_what_the_pipe_cannot_take_waits_here_up_to_the_bound(
    writer: FileWriter, tmp_path: Path
) -> None:
    writer.max_pending_bytes = 2 * PIPE_BYTES
    path = tmp_path / "x"
    handle = writer.open(path)
    assert writer.flush(timeout=wait_s(10))
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)  # the disk stopped keeping up
    block = bytes(range(256)) * 400  # 100 KiB
    accepted = 0
    while writer.write(handle, block):
        accepted += 1
        assert accepted < 100, "the bound never refused"
    assert writer.refused == 1
    # The pipe holds its megabyte; no more than the bound waits here.
    assert accepted * len(block) >= 2 * PIPE_BYTES
    assert writer.pending_bytes <= writer.max_pending_bytes
    assert not writer.flush(timeout=0.3)  # a flush gives up at its timeout
    os.kill(writer.pid, signal.SIGCONT)
    assert writer.flush(timeout=wait_s(10))
    assert path.read_bytes() == block * accepted  # every accepted write, in order
    assert writer.write(handle, block)  # room again


async def test_written_waits_without_blocking_the_loop(writer: FileWriter, tmp_path: Path) -> None:
    path = tmp_path / "x"
    handle = writer.open(path)
    await writer.written()
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)
    writer.write(handle, b"last words")
    waiting = asyncio.create_task(writer.written())
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not waiting.done() and ticks == 20  # the loop ran on while the writer stood still
    os.kill(writer.pid, signal.SIGCONT)
    await asyncio.wait_for(waiting, wait_s(10))
    assert path.read_bytes() == b"last words"


def test_a_writer_that_dies_fails_the_open_files_loudly_and_the_next_file_works(
    writer: FileWriter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[OSError] = []
    first = writer.open(tmp_path / "a", on_error=errors.append)
    writer.write(first, b"a")
    assert writer.flush(timeout=wait_s(10))
    dead = writer.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    assert _until(lambda: errors)
    assert "file-writer process exited" in str(errors[0])
    assert any("file-writer process exited" in r.getMessage() for r in caplog.records)
    assert not writer.write(first, b"late")  # refused: that file failed with its writer
    second = writer.open(tmp_path / "b")
    writer.write(second, b"b")
    writer.close(second)
    assert writer.flush(timeout=wait_s(10))
    assert writer.pid not in (None, dead)
    assert (tmp_path / "b").read_bytes() == b"b"


def test_the_writer_ignores_the_signals_meant_for_its_server(
    writer: FileWriter, tmp_path: Path
) -> None:
    """Ctrl-C (the whole process group) or a service manager's SIGTERM to every process must
    not end the writer before the server has drained its calls' files."""
    handle = writer.open(tmp_path / "x")
    assert writer.flush(timeout=wait_s(10))
    pid = writer.pid
    assert pid is not None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, sig)
    time.sleep(0.2)
    writer.write(handle, b"still here")
    writer.close(handle)
    assert writer.flush(timeout=wait_s(10))
    assert writer.pid == pid
    assert (tmp_path / "x").read_bytes() == b"still here"


async def test_a_writer_that_dies_while_the_loop_waits_for_room_leaves_the_loop_running(
    writer: FileWriter, tmp_path: Path
) -> None:
    errors: list[OSError] = []
    handle = writer.open(tmp_path / "x", on_error=errors.append)
    await writer.written()
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)
    block = bytes(64 << 10)
    for _ in range(40):  # 2.5 MiB: the pipe fills, the loop watches it for room
        assert writer.write(handle, block)
    await asyncio.sleep(0.05)
    assert writer.pending_bytes > 0
    os.kill(writer.pid, signal.SIGKILL)
    for _ in range(round(wait_s(5) / 0.01)):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert errors and writer.pid is None
    await asyncio.sleep(0.05)  # the loop stopped watching the closed pipe, on its own thread
    second = writer.open(tmp_path / "y")
    writer.write(second, b"y")
    writer.close(second)
    await writer.written()
    assert (tmp_path / "y").read_bytes() == b"y"


def _call() -> Call:
    return Call(Connected(sample_rate=16000), RecordingIO(), Scheduler(FakeClock(), 100))


def test_a_full_disk_fails_the_recording_once_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = _call()
    recorder = Recorder(call, Path("/dev/full"))  # the disk filled up: every write fails
    call.add_taps(inbound=recorder.on_inbound, outbound=recorder.on_outbound)
    frame = to_bytes(tone(300, 16000, 320))
    for _ in range(100):
        call.feed_audio(frame)
        assert file_writer().flush(timeout=wait_s(10))
    recorder.close()
    assert file_writer().flush(timeout=wait_s(10))
    assert recorder.failed
    failures = [r for r in caplog.records if r.getMessage().startswith("recording failed")]
    assert len(failures) == 1 and "No space left" in str(getattr(failures[0], "error", ""))
    assert call.stats.frames_in == 100 and not call.ended


def test_a_recording_is_a_valid_wav_at_every_block(tmp_path: Path) -> None:
    """What the writer has written is always a WAV whose header covers exactly its data."""
    call = _call()
    recorder = Recorder(call, tmp_path / "rec.wav")
    call.add_taps(inbound=recorder.on_inbound, outbound=recorder.on_outbound)
    frame = to_bytes(tone(300, 16000, 320))
    for k in range(60):
        call.feed_audio(frame)
        if k % 10 == 9:
            assert file_writer().flush(timeout=wait_s(10))
            samples, rate = read_wav(recorder.path)
            assert rate == 16000 and len(samples) == 320 * recorder.written_rows
    assert recorder.written_rows == 50  # 60 rows in, 10 held back
    recorder.close()
    assert file_writer().flush(timeout=wait_s(10))
    samples, _ = read_wav(recorder.path)
    assert len(samples) == 320 * 60


async def test_a_call_log_on_a_full_disk_counts_its_lost_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    call = _call()
    log = CallLog(tmp_path, call)
    files = file_writer()
    files.close(log._file)
    log._file = files.open(Path("/dev/full"), append=True, on_error=log._on_error)  # disk full
    for i in range(3):
        log.write("event", n=i)
    await log.aclose()
    assert log.lost_lines == 3
    assert len([r for r in caplog.records if "event log" in r.getMessage()]) == 1
