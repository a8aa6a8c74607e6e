"""The file-writer thread: order, its bound, waiting for it, and failures that stay loud.

Real files and a real thread; ``/dev/full`` stands in for a full disk (every write fails
with ENOSPC), so a recording and a call log can fail for real.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

import pytest

from bridge.audio.pcm import to_bytes, tone
from bridge.call import Call
from bridge.filewriter import FileWriter, file_writer
from bridge.handlers.calllog import CallLog
from bridge.handlers.record import Recorder
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Connected
from tests.unit.test_call import RecordingIO


def test_operations_run_in_order_off_the_calling_thread(tmp_path: Path) -> None:
    writer = FileWriter()
    path = tmp_path / "x"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    threads: set[str] = set()

    def put(i: int) -> None:
        threads.add(threading.current_thread().name)
        os.write(fd, f"{i}\n".encode())

    for i in range(500):
        assert writer.submit(functools.partial(put, i), size=4)
    assert writer.flush(timeout=10)
    os.close(fd)
    assert path.read_text().split() == [str(i) for i in range(500)]
    assert threads == {"bridge-file-writer"}
    assert writer.pending_bytes == 0


def test_the_queue_is_bounded_in_bytes_and_refuses_past_it() -> None:
    writer = FileWriter(max_pending_bytes=1000)
    gate = threading.Event()
    assert writer.submit(gate.wait, size=600)  # the thread is stuck on this one
    assert not writer.submit(lambda: None, size=600)
    assert writer.refused == 1
    assert writer.submit(lambda: None, size=400)  # exactly up to the bound
    gate.set()
    assert writer.flush(timeout=10)
    assert writer.submit(lambda: None, size=1000)


async def test_written_waits_without_blocking_the_loop() -> None:
    writer = FileWriter()
    gate = threading.Event()
    done: list[int] = []
    writer.submit(gate.wait)
    writer.submit(lambda: done.append(1))
    waiting = writer.written()
    gate.set()
    await waiting
    assert done == [1]


def _call() -> Call:
    return Call(Connected(sample_rate=16000), RecordingIO(), Scheduler(FakeClock(), 100))


def test_a_full_disk_fails_the_recording_once_and_the_call_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call = _call()
    recorder = Recorder(call, tmp_path / "rec.wav")
    writer = recorder._writer
    writer._file.close()
    writer._file = Path("/dev/full").open("wb")  # noqa: SIM115 - the disk filled up: writes fail
    call.add_taps(inbound=recorder.on_inbound, outbound=recorder.on_outbound)
    frame = to_bytes(tone(300, 16000, 320))
    for _ in range(100):
        call.feed_audio(frame)
        assert file_writer().flush(timeout=10)
    recorder.close()
    assert file_writer().flush(timeout=10)
    assert recorder.failed
    failures = [r for r in caplog.records if r.getMessage().startswith("recording failed")]
    assert len(failures) == 1 and "No space left" in str(getattr(failures[0], "error", ""))
    assert call.stats.frames_in == 100 and not call.ended


async def test_a_call_log_on_a_full_disk_counts_its_lost_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    call = _call()
    log = CallLog(tmp_path, call)
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # the disk filled up mid-call
    for i in range(3):
        log.write("event", n=i)
    await log.aclose()
    assert log.lost_lines == 3
    assert len([r for r in caplog.records if "event log" in r.getMessage()]) == 1
