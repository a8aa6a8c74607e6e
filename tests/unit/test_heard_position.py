"""The heard-audio position (``bridge.heard``) on a real Call, driven by a fake clock.

Lead 100 ms: at t0 the first six frames (slots 0-5) leave at once and Vonage plays them back
to back from t0; after that one frame leaves every 20 ms, 100 ms ahead of its slot.
"""

from __future__ import annotations

import asyncio

import numpy as np

from bridge.call import Call
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Cleared, Connected, Notified

T0 = 1_000_000_000
MS = 1_000_000


class NullIO:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def send_binary(self, data: bytes) -> None: ...

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def close(self, code: int, reason: str) -> None: ...


def make_call() -> tuple[Call, FakeClock, Scheduler, NullIO]:
    clock = FakeClock(start_ns=T0)
    scheduler = Scheduler(clock, lead_ms=100)
    io = NullIO()
    return Call(Connected(sample_rate=16000), io, scheduler), clock, scheduler, io


def advance(clock: FakeClock, scheduler: Scheduler, ms: int) -> None:
    for _ in range(ms // 10):
        clock.advance_ms(10)
        scheduler.service()


async def queue_ms(call: Call, ms: int) -> None:
    await call.play(np.ones(16 * ms, dtype=np.int16))


async def test_position_follows_the_send_schedule() -> None:
    call, clock, scheduler, _ = make_call()
    await queue_ms(call, 1000)
    assert call.sent_ms == 120  # six frames left at once (the lead)...
    assert call.heard_ms == 0  # ...and none has played yet
    advance(clock, scheduler, 50)
    assert call.sent_ms == 160
    assert call.heard_ms == 50
    advance(clock, scheduler, 450)
    assert call.heard_ms == 500
    assert call.heard_samples == 8000
    assert call.sent_ms - call.heard_ms == 120  # the lead plus the frame playing now


async def test_clear_drops_what_vonage_still_held() -> None:
    call, clock, scheduler, io = make_call()
    await queue_ms(call, 1000)
    advance(clock, scheduler, 500)
    call.clear()
    assert io.texts == ['{"action":"clear"}']
    assert call.heard.ms(call.heard.discarded_samples) == 120
    advance(clock, scheduler, 1000)
    assert call.heard_ms == 500  # nothing sent before the clear plays after it
    call.feed_event(Cleared())
    await queue_ms(call, 100)  # new audio plays from now
    advance(clock, scheduler, 40)
    assert call.heard_ms == 540
    summary = call.summary()
    assert summary["cleared_unheard_ms"] == 120
    assert summary["heard_ms"] == 540


async def test_a_late_notify_answer_moves_the_position_back_by_the_lag() -> None:
    call, clock, scheduler, io = make_call()
    await queue_ms(call, 200)
    call.notify({"n": 1})
    await queue_ms(call, 1000)
    advance(clock, scheduler, 200)
    assert '{"action":"notify","payload":{"n":1}}' in io.texts
    assert call.heard_ms == 200  # by the schedule
    advance(clock, scheduler, 30)
    call.feed_event(Notified({"n": 1}))  # Vonage finished the 200 ms only now: 30 ms late
    assert call.heard.lag_ns == 30 * MS
    assert call.heard.confirmed_samples == 200 * 16
    assert call.heard_ms == 200  # 230 ms by the schedule, less the measured lag
    advance(clock, scheduler, 100)
    assert call.heard_ms == 300
    assert call.summary()["playback_lag_ms"] == 30.0


async def test_a_marker_after_a_silence_measures_the_lag_from_now_not_from_the_old_grid() -> None:
    # A voice agent's answer comes 1.5 s into the call: nothing was sent before. The marker
    # at its start belongs to the current slot; Vonage answers it 10 ms later (it played
    # everything before it, i.e. nothing): a lag of 10 ms, not 1.5 s.
    call, clock, scheduler, _ = make_call()
    advance(clock, scheduler, 1500)
    call.notify({"item": "a"})
    await queue_ms(call, 2000)
    advance(clock, scheduler, 10)
    call.feed_event(Notified({"item": "a"}))
    assert call.heard.lag_ns is not None and abs(call.heard.lag_ns) <= 20 * MS
    advance(clock, scheduler, 490)
    assert abs(call.heard_ms - 500) <= 20
    # The agent's answer starts at the caller's timeline position 0 and all of it is queued.
    assert call.outbound_samples == 2000 * 16


async def test_unknown_notify_payloads_change_nothing() -> None:
    call, clock, scheduler, _ = make_call()
    await queue_ms(call, 200)
    advance(clock, scheduler, 100)
    call.feed_event(Notified("not ours"))
    assert call.heard.lag_ns is None
    assert call.heard_ms == 100


async def test_the_position_freezes_when_the_call_ends() -> None:
    call, clock, scheduler, _ = make_call()
    await queue_ms(call, 1000)
    advance(clock, scheduler, 300)
    call.end()
    advance(clock, scheduler, 500)
    assert call.heard_ms == 300  # the caller hung up: what Vonage held was never heard
    assert call.summary()["heard_ms"] == 300
    assert call.summary()["sent_ms"] == 420


async def test_early_inbound_frames_reach_a_tap_added_before_audio_is_read() -> None:
    call, _, _, _ = make_call()
    frames = [bytes([i]) * 640 for i in range(3)]
    for frame in frames[:2]:
        call.feed_audio(frame)  # arrived with the first message, before the handler ran
    seen: list[bytes] = []
    call.add_taps(inbound=seen.append)
    call.feed_audio(frames[2])
    assert seen == frames
    later: list[bytes] = []
    _ = call.audio()  # the handler started reading: nothing more is kept for later taps
    call.add_taps(inbound=later.append)
    call.feed_audio(frames[0])
    assert later == [frames[0]]
    assert seen == [*frames, frames[0]]
    await asyncio.sleep(0)
