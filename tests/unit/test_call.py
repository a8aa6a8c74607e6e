"""The Call object without a network: a recording CallIO and a fake clock drive it."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from bridge.audio.pcm import Samples, to_bytes, tone
from bridge.call import Call
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Cleared, Connected, Dtmf, Notified, parse_connected


class RecordingIO:
    """Keeps everything the call sent, in order, as ('binary'|'text'|'close', value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def send_binary(self, data: bytes) -> None:
        self.sent.append(("binary", data))

    def send_text(self, text: str) -> None:
        self.sent.append(("text", json.loads(text)))

    def close(self, code: int, reason: str) -> None:
        self.sent.append(("close", code))

    def binaries(self) -> list[bytes]:
        return [v for k, v in self.sent if k == "binary"]  # type: ignore[misc]


def make_call(
    rate: int = 16000,
    pipeline_rate: int | None = None,
    lead_ms: int = 100,
    playout_max_ms: int = 2000,
) -> tuple[Call, RecordingIO, FakeClock, Scheduler]:
    clock = FakeClock(start_ns=1_000_000_000)
    scheduler = Scheduler(clock, lead_ms)
    io = RecordingIO()
    connected = Connected(sample_rate=rate)
    call = Call(
        connected, io, scheduler, pipeline_rate=pipeline_rate, playout_max_ms=playout_max_ms
    )
    return call, io, clock, scheduler


def frames_of(n: int, rate: int = 16000, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    size = rate // 50
    return [to_bytes(rng.integers(-2000, 2000, size).astype(np.int16)) for _ in range(n)]


async def test_audio_at_call_rate_comes_out_byte_exact() -> None:
    call, io, _, _ = make_call()
    sent = frames_of(5)

    async def echo() -> None:
        async for frame in call.audio():
            await call.play(frame)

    task = asyncio.create_task(echo())
    for frame in sent:
        call.feed_audio(frame)
        await asyncio.sleep(0)
    call.end()
    await task
    assert io.binaries() == sent


async def test_inbound_odd_chunks_are_reframed() -> None:
    call, _, _, _ = make_call(rate=8000)
    stream = b"".join(frames_of(4, rate=8000))
    for i in range(0, len(stream), 77):
        call.feed_audio(stream[i : i + 77])
    call.end()
    got = [frame async for frame in call.audio()]
    assert [len(f) for f in got] == [160] * 4
    assert b"".join(to_bytes(f) for f in got) == stream
    assert call.stats.frames_in == 4


async def test_play_sends_only_up_to_the_lead_then_follows_the_clock() -> None:
    call, io, clock, scheduler = make_call(lead_ms=100)
    audio = tone(440, 16000, 16000)  # one second
    task = asyncio.create_task(call.play(audio))
    await task
    # Slots 0..5 have deadlines start..start+100 ms: all within the 100 ms lead.
    assert len(io.binaries()) == 6
    clock.advance_ms(20)
    scheduler.service()
    assert len(io.binaries()) == 7
    clock.advance_ms(2000)
    scheduler.service()
    assert len(io.binaries()) == 50
    assert all(len(f) == 640 for f in io.binaries())
    assert b"".join(io.binaries()) == to_bytes(audio)


async def test_partial_frame_waits_and_flush_pads_it() -> None:
    call, io, _, _ = make_call(rate=8000)
    await call.play(np.ones(250, dtype=np.int16))
    assert [len(f) for f in io.binaries()] == [320]
    await call.flush()
    frames = io.binaries()
    assert [len(f) for f in frames] == [320, 320]
    tail = np.frombuffer(frames[1], dtype="<i2")
    assert (tail[:90] == 1).all() and (tail[90:] == 0).all()


async def test_play_waits_for_room_instead_of_dropping() -> None:
    call, io, clock, scheduler = make_call(lead_ms=0, playout_max_ms=100)
    audio = np.arange(16000, dtype=np.int16)
    task = asyncio.create_task(call.play(audio))
    await asyncio.sleep(0)
    assert not task.done()
    for _ in range(60):
        clock.advance_ms(20)
        scheduler.service()
        await asyncio.sleep(0)
    await asyncio.wait_for(task, 1)
    assert b"".join(io.binaries()) == to_bytes(audio)
    assert call.stats.frames_out == 50


async def test_clear_drops_queue_and_tells_vonage() -> None:
    call, io, clock, _ = make_call(lead_ms=0)
    await call.play(tone(300, 16000, 16000))
    assert len(io.binaries()) == 1
    call.clear()
    assert io.sent[-1] == ("text", {"action": "clear"})
    assert call.queued_ms == 0
    clock.advance_ms(35)
    call.feed_event(Cleared())
    assert call.stats.last_clear_to_cleared_ms == pytest.approx(35)


async def test_notify_goes_out_after_the_audio_queued_before_it() -> None:
    call, io, clock, scheduler = make_call(lead_ms=0)
    await call.play(tone(300, 16000, 3 * 320))
    call.notify({"id": 1})
    await call.play(tone(300, 16000, 2 * 320))
    for _ in range(10):
        clock.advance_ms(20)
        scheduler.service()
    kinds = [k for k, _ in io.sent]
    assert kinds == ["binary"] * 3 + ["text"] + ["binary"] * 2
    assert io.sent[3] == ("text", {"action": "notify", "payload": {"id": 1}})
    call.feed_event(Notified({"id": 1}))
    call.end()
    assert [e async for e in call.events()] == [Notified({"id": 1})]


async def test_pipeline_rate_resamples_both_ways_with_exact_frames() -> None:
    call, io, clock, scheduler = make_call(rate=8000, pipeline_rate=16000, lead_ms=0)
    for frame in frames_of(10, rate=8000):
        call.feed_audio(frame)
    got: list[Samples] = []
    while len(got) < 9:
        got.append(await anext(aiter(call.audio())))
    assert all(len(f) == 320 for f in got)  # 20 ms at the pipeline rate
    for piece in got:
        await call.play(piece)
        clock.advance_ms(20)
        scheduler.service()
    # Out at the call's rate: exact 20 ms frames of 8 kHz audio.
    assert [len(f) for f in io.binaries()] == [320] * 9


async def test_hangup_closes_once_and_events_arrive_in_order() -> None:
    call, io, _, _ = make_call()
    call.feed_event(Dtmf("1", 100))
    call.feed_event(Dtmf("#", 100))
    call.hangup(1000, "done")
    call.hangup(1000, "again")
    call.end()
    assert [e async for e in call.events()] == [Dtmf("1", 100), Dtmf("#", 100)]
    assert [s for s in io.sent if s[0] == "close"] == [("close", 1000)]


def test_call_id_comes_from_query_or_metadata() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock, 100)
    call = Call(
        parse_connected('{"content-type":"audio/l16;rate=8000"}', "call=abc"),
        RecordingIO(),
        scheduler,
    )
    assert call.id == "abc"
    other = Call(
        parse_connected('{"content-type":"audio/l16;rate=8000","uuid":"u-1"}'),
        RecordingIO(),
        scheduler,
    )
    assert other.id == "u-1"
    anonymous = Call(
        parse_connected('{"content-type":"audio/l16;rate=8000"}'), RecordingIO(), scheduler
    )
    assert len(anonymous.id) == 32


async def test_synchronous_echo_sends_the_very_bytes_that_arrived() -> None:
    call, io, _, _ = make_call()
    sent = frames_of(5)
    call.feed_audio(sent[0])  # before the sink is set: handed over when it is
    call.on_audio(call.play_now)
    for frame in sent[1:]:
        call.feed_audio(frame)  # no await: each frame goes out from the read itself
    assert io.binaries() == sent
    assert all(out is original for out, original in zip(io.binaries()[1:], sent[1:], strict=True))
    ended = asyncio.create_task(call.wait_ended())
    await asyncio.sleep(0)
    assert not ended.done()
    call.end()
    await asyncio.wait_for(ended, 1)


async def test_synchronous_path_resamples_both_ways_with_exact_frames() -> None:
    call, io, _, _ = make_call(rate=8000, pipeline_rate=16000, lead_ms=2000)
    got: list[bytes] = []

    def sink(frame: bytes) -> None:
        got.append(frame)
        call.play_now(frame)

    call.on_audio(sink)
    for frame in frames_of(10, rate=8000):
        call.feed_audio(frame)
    assert {len(f) for f in got} == {640}  # 20 ms at the pipeline's 16 kHz
    assert io.binaries() and {len(f) for f in io.binaries()} == {320}  # back at the call's 8 kHz


@pytest.mark.parametrize(("rate", "pipeline_rate"), [(16000, None), (8000, 16000)])
async def test_try_play_takes_audio_only_while_it_all_fits_and_never_drops(
    rate: int, pipeline_rate: int | None
) -> None:
    call, io, _, _ = make_call(rate=rate, pipeline_rate=pipeline_rate, lead_ms=0)
    call2, _, _, _ = make_call(rate=rate, pipeline_rate=pipeline_rate, lead_ms=0)
    call2.end()
    pr = pipeline_rate or rate
    chunk = tone(440, pr, pr // 10, 3000)  # 100 ms: 5 frames
    taken = 0
    while call.try_play(chunk):
        taken += 1
        assert taken < 100, "the 2000 ms queue never filled"
    assert 2000 - 140 <= call.queued_ms <= 2000  # refused only when 100 ms (+ a frame) did not fit
    before = call.queued_ms
    assert not call.try_play(chunk)
    assert call.queued_ms == before  # refused: nothing queued
    frame = tone(440, pr, pr // 50, 3000)
    while call.try_play(frame):
        taken += 1
        assert taken < 200
    assert call.queued_ms >= 2000 - 40  # single frames filled it (a frame kept for resampling)
    assert call.summary()["playout_dropped"] == 0  # never dropped, where play_now would
    assert len(io.binaries()) == 1  # only the first frame left (lead 0, nothing paced yet)
    assert call2.try_play(chunk)  # an ended call takes (and plays) nothing, like play()


async def test_play_now_drops_the_oldest_when_the_queue_is_full() -> None:
    call, io, _, _ = make_call(lead_ms=0, playout_max_ms=100)
    frames = frames_of(12)
    for frame in frames:
        call.play_now(frame)
    assert call.queued_ms == 100  # frame 0 left at once; 5 of the other 11 fit
    assert io.binaries() == frames[:1]
    assert call.summary()["playout_dropped"] == 6
