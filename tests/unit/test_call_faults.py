"""One call's fault never touches another: the pacing tick, inbound taps, waiters, markers.

No network: the calls share one :class:`Scheduler` on a fake clock, each with a recording
CallIO, so the tests assert exact send times and exactly what each call sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from bridge.audio.playout import PlayoutBuffer
from bridge.call import Call
from bridge.handlers.forward import PLAY_QUEUE_MAX_MARKERS, Player
from bridge.pacing import FakeClock, OutboundStream, Scheduler
from bridge.protocol.vonage import Connected
from bridge.units import FRAME_NS, MS
from tests.unit.test_call import RecordingIO

FRAME = bytes(640)  # 20 ms at 16 kHz


class Timer:
    """The event loop's part: one timer, fired when fake time reaches it."""

    def __init__(self, lead_ms: int = 0) -> None:
        self.clock = FakeClock(0)
        self.due: int | None = None
        self.scheduler = Scheduler(self.clock, lead_ms, arm=self._arm)

    def _arm(self, wake_ns: int) -> None:
        if self.due is None or wake_ns < self.due:
            self.due = wake_ns

    def fire(self) -> None:
        """Fire the armed timer at exactly its time (what ``call_at`` does)."""
        assert self.due is not None, "the timer is not armed"
        self.clock.set_ns(max(self.due, self.clock.now_ns()))
        self.due = None
        self.scheduler.service()

    def run_ms(self, ms: float) -> None:
        end = round(ms * MS)
        while self.due is not None and self.due <= end:
            self.fire()
        self.clock.set_ns(max(end, self.clock.now_ns()))


def _stream(timer: Timer, sent: list[int], fail_at: int | None = None) -> OutboundStream:
    def send(frame: bytes) -> None:
        if fail_at is not None and len(sent) == fail_at:
            raise RuntimeError("outbound tap broke")
        sent.append(timer.clock.now_ns())

    return timer.scheduler.open_stream(PlayoutBuffer(2000), send, lambda p: None, start_ns=0)


# --- the pacing tick ----------------------------------------------------------------------


def test_a_stream_that_raises_ends_alone_and_the_others_keep_exact_pacing() -> None:
    timer = Timer()
    sent: list[list[int]] = [[], [], []]
    streams = [_stream(timer, sent[i], fail_at=2 if i == 1 else None) for i in range(3)]
    errors: list[tuple[int, BaseException]] = []
    for i, stream in enumerate(streams):
        stream.on_error = lambda exc, i=i: errors.append((i, exc))
        for _ in range(10):
            timer.scheduler.push(stream, FRAME)
    timer.run_ms(300)
    # Stream 1 raised on its third frame, at 40 ms, in the same tick as the others' third.
    assert sent[1] == [0, 20 * MS]
    assert streams[1].closed
    assert [(i, str(exc)) for i, exc in errors] == [(1, "outbound tap broke")]
    # The others: all ten frames, each exactly on its 20 ms deadline, the timer kept armed.
    for i in (0, 2):
        assert sent[i] == [k * FRAME_NS for k in range(10)]


def test_without_on_error_the_tick_finishes_and_rearms_before_raising() -> None:
    timer = Timer()
    good: list[int] = []
    bad: list[int] = []
    bad_stream = _stream(timer, bad, fail_at=1)
    good_stream = _stream(timer, good)
    for stream in (bad_stream, good_stream):
        for _ in range(5):
            timer.scheduler.push(stream, FRAME)
    with pytest.raises(RuntimeError, match="tap broke"):
        timer.run_ms(20)
    assert good == [0, 20 * MS] and timer.due == 40 * MS  # serviced, and armed again
    timer.run_ms(200)
    assert good == [k * FRAME_NS for k in range(5)]


# --- calls on one scheduler ----------------------------------------------------------------


def _call(timer: Timer, playout_max_ms: int = 2000) -> tuple[Call, RecordingIO]:
    io = RecordingIO()
    call = Call(Connected(sample_rate=16000), io, timer.scheduler, playout_max_ms=playout_max_ms)
    return call, io


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_faulty_outbound_tap_closes_its_call_with_1011_and_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timer = Timer()
    faulty, faulty_io = _call(timer)
    healthy, healthy_io = _call(timer)
    seen: list[int] = []

    def tap(frame: bytes, slot: int) -> None:
        seen.append(slot)
        if slot == 3:
            raise ValueError("recorder broke")

    faulty.add_taps(outbound=tap)
    for call in (faulty, healthy):
        await call.play(np.zeros(16000, np.int16))  # 1 s each, queued at once
    timer.run_ms(1100)
    assert [k for k, _ in faulty_io.sent if k == "close"] == ["close"]
    assert ("close", 1011) in faulty_io.sent
    assert len(faulty_io.binaries()) == 3 and seen == [0, 1, 2, 3]
    assert len(healthy_io.binaries()) == 50
    (record,) = _errors(caplog)
    assert record.exc_info is not None and "recorder broke" in str(record.exc_info[1])
    assert getattr(record, "call_id", None) == faulty.id


async def test_a_faulty_inbound_tap_closes_its_call_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timer = Timer()
    faulty, faulty_io = _call(timer)
    healthy, healthy_io = _call(timer)
    calls = 0

    def tap(frame: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyError("transcriber broke")

    faulty.add_taps(inbound=tap)
    for _ in range(5):
        faulty.feed_audio(FRAME)  # never raises into the transport
        healthy.feed_audio(FRAME)
    assert faulty_io.sent == [("close", 1011)]
    assert calls == 2  # nothing more reached the broken tap
    (record,) = _errors(caplog)
    assert record.exc_info is not None and getattr(record, "call_id", None) == faulty.id
    assert healthy.stats.frames_in == 5 and healthy_io.sent == []


# --- waiters --------------------------------------------------------------------------------


async def test_any_number_of_tasks_can_wait_in_play_and_drain() -> None:
    timer = Timer()
    call, io = _call(timer, playout_max_ms=40)  # room for two frames
    await call.play(np.zeros(960, np.int16))  # one frame sent (no lead), two queued: full
    players = [asyncio.create_task(call.play(np.full(320, i, np.int16))) for i in (1, 2, 3)]
    drainers = [asyncio.create_task(call.drain()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in players + drainers)
    for _ in range(20):
        timer.run_ms(timer.clock.now_ns() / MS + 20)
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*players, *drainers), 1)
    # Every player's frame went out, each exactly once.
    firsts = sorted(int(np.frombuffer(f, "<i2")[0]) for f in io.binaries()[3:])
    assert firsts == [1, 2, 3]


# --- notify markers -------------------------------------------------------------------------


async def test_markers_are_bounded_the_oldest_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timer = Timer()
    call, io = _call(timer, playout_max_ms=1000)  # 50 frames: at most 50 markers wait
    await call.play(np.zeros(16000, np.int16))  # 1 s of audio ahead of them
    for i in range(10_000):
        call.notify({"n": i})
    assert call.stats.notifies_dropped == 10_000 - 50
    timer.run_ms(1100)
    notified: list[Any] = [v["payload"]["n"] for k, v in io.sent if k == "text"]  # type: ignore[index]
    assert notified == list(range(10_000 - 50, 10_000))  # the newest, in order
    assert call.summary()["notifies_dropped"] == 10_000 - 50
    warnings = [r for r in caplog.records if "marker" in r.getMessage()]
    assert len(warnings) == 1  # said once per call, not once per marker


async def test_forward_mode_bounds_the_markers_an_upstream_queues_behind_its_audio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timer = Timer()
    call, io = _call(timer, playout_max_ms=1000)
    player = Player(call)
    player.start()
    player.put_audio(np.zeros(5 * 16000, np.int16))  # 5 s: the player waits in play()
    await asyncio.sleep(0)
    flood = PLAY_QUEUE_MAX_MARKERS + 1000
    for i in range(flood):
        player.put_marker(i)
    assert player.dropped_markers == 1000
    for _ in range(300):  # 6 s of ticks: the audio plays, then the markers go to the call
        timer.run_ms(timer.clock.now_ns() / MS + 20)
        await asyncio.sleep(0)
    player.stop()
    notified = [v["payload"] for k, v in io.sent if k == "text"]  # type: ignore[index]
    # The call's own bound (50 here) keeps the newest of what reached it, in order.
    assert notified == list(range(flood - 50, flood))
    assert call.stats.notifies_dropped == PLAY_QUEUE_MAX_MARKERS - 50
    assert len([r for r in caplog.records if "markers" in r.getMessage()]) == 2
