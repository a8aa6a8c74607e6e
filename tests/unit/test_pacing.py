"""Outbound pacing on a fake clock: exact send times, catch-up after a stall, no sliding grid.

``Owner`` plays the asyncio side: it keeps one timer (the earliest ``arm`` request, as the
server's single ``call_later`` handle does) and calls ``Scheduler.service`` when the fake
time reaches it. Every send is recorded with the fake time it happened at and the slot it
took, so tests assert exact times rather than counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.audio.playout import PlayoutBuffer
from bridge.pacing import FakeClock, OutboundStream, Scheduler
from bridge.units import FRAME_NS, MS


@dataclass
class Sent:
    """What one stream sent: (time, slot, frame) per frame, and every item in order."""

    frames: list[tuple[int, int, bytes]] = field(default_factory=list)
    log: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def times_ms(self) -> list[float]:
        return [t / MS for t, _, _ in self.frames]

    @property
    def slots(self) -> list[int]:
        return [slot for _, slot, _ in self.frames]


class Owner:
    """The event loop's part: one timer, fired when fake time reaches it."""

    def __init__(self, lead_ms: int, start_ns: int = 0) -> None:
        self.clock = FakeClock(start_ns)
        self.arms: list[int] = []
        self.timer_ns: int | None = None
        self.scheduler = Scheduler(self.clock, lead_ms, arm=self._arm)

    def _arm(self, wake_ns: int) -> None:
        self.arms.append(wake_ns)
        if self.timer_ns is None or wake_ns < self.timer_ns:
            self.timer_ns = wake_ns

    def open(
        self, start_ns: int | None = None, max_ms: int = 60_000
    ) -> tuple[OutboundStream, Sent]:
        sent = Sent()
        holder: list[OutboundStream] = []

        def send_frame(frame: bytes) -> None:
            stream = holder[0]
            # called before next_slot advances: next_slot is the slot this frame takes
            sent.frames.append((self.clock.now_ns(), stream.next_slot, frame))
            sent.log.append((self.clock.now_ns(), frame))

        def send_marker(payload: Any) -> None:
            sent.log.append((self.clock.now_ns(), ("marker", payload)))

        stream = self.scheduler.open_stream(
            PlayoutBuffer(max_ms), send_frame, send_marker, start_ns=start_ns
        )
        holder.append(stream)
        return stream, sent

    def run_until_ms(self, ms: float) -> None:
        """Let fake time pass, firing the timer at exactly the times it was armed for."""
        end = round(ms * MS)
        while self.timer_ns is not None and self.timer_ns <= end:
            self.clock.set_ns(max(self.timer_ns, self.clock.now_ns()))
            self.timer_ns = None
            self.scheduler.service()
        self.clock.set_ns(end)

    def stall_until_ms(self, ms: float) -> None:
        """The loop was blocked: time jumps, then the (late) timer fires once."""
        self.clock.set_ns(round(ms * MS))
        if self.timer_ns is not None and self.timer_ns <= self.clock.now_ns():
            self.timer_ns = None
            self.scheduler.service()


def frame(i: int) -> bytes:
    return i.to_bytes(4, "little") * 160  # 640 bytes, distinct per i


def push(owner: Owner, stream: OutboundStream, first: int, count: int) -> None:
    for i in range(first, first + count):
        owner.scheduler.push(stream, frame(i))


# --- a burst leaves on the grid ----------------------------------------------------------


@pytest.mark.parametrize("lead_ms", [0, 20, 60, 100])
def test_burst_leaves_at_deadline_minus_lead(lead_ms: int) -> None:
    owner = Owner(lead_ms)
    stream, sent = owner.open()
    push(owner, stream, 0, 20)
    owner.run_until_ms(1000)
    assert sent.slots == list(range(20))
    assert sent.times_ms == [max(0, k * 20 - lead_ms) for k in range(20)]
    assert [f for _, _, f in sent.frames] == [frame(k) for k in range(20)]
    assert stream.frames_sent == 20
    assert stream.underrun_slots == 0
    assert stream.max_lateness_ns == 0


def test_burst_with_a_grid_that_starts_between_ticks() -> None:
    owner = Owner(40, start_ns=1_000 * MS)
    stream, sent = owner.open(start_ns=1_007 * MS)  # the call's grid, not the clock's
    push(owner, stream, 0, 6)
    owner.run_until_ms(2000)
    assert sent.times_ms == [1000, 1000, 1007, 1027, 1047, 1067]


def test_never_more_than_lead_ahead_of_real_time() -> None:
    lead_ms = 60
    owner = Owner(lead_ms)
    stream, sent = owner.open()
    rng = random.Random(3)
    t_ms = 0.0
    pushed = 0
    while t_ms < 5000:
        n = rng.choice([0, 0, 1, 1, 2, 5, 30])
        push(owner, stream, pushed, n)
        pushed += n
        t_ms += rng.uniform(1, 120)
        owner.run_until_ms(t_ms)
    owner.run_until_ms(t_ms + 60_000)
    assert stream.frames_sent == pushed
    for t, slot, _ in sent.frames:
        assert stream.deadline_ns(slot) - t <= lead_ms * MS
    times = [t for t, _, _ in sent.frames]
    assert times == sorted(times)
    assert sent.slots == sorted(set(sent.slots))  # each slot used once, in order


# --- stalls: catch up, keep the grid -----------------------------------------------------


def test_stall_sends_overdue_frames_at_once_then_keeps_the_grid() -> None:
    owner = Owner(lead_ms=40)
    stream, sent = owner.open()
    push(owner, stream, 0, 20)
    owner.run_until_ms(100)  # slots 0..7 (deadline <= 140) are out
    assert stream.frames_sent == 8
    owner.stall_until_ms(300)  # the loop was blocked for 200 ms with frames queued
    owner.run_until_ms(1000)
    assert sent.slots == list(range(20))  # no slot skipped, none reused: no sliding
    expected = [max(0, k * 20 - 40) for k in range(8)]  # before the stall
    expected += [300] * 10  # slots 8..17 (deadline <= 340): overdue or within lead, at once
    expected += [320, 340]  # then back on the original grid: deadline 360, 380 minus lead
    assert sent.times_ms == expected
    assert stream.max_lateness_ns == (300 - 8 * 20) * MS  # slot 8 left 140 ms late
    assert stream.underrun_slots == 0


def test_stall_longer_than_the_queue_then_new_audio_resumes_on_the_grid() -> None:
    owner = Owner(lead_ms=20)
    stream, sent = owner.open()
    push(owner, stream, 0, 5)
    owner.stall_until_ms(500)  # everything queued is long overdue
    assert sent.times_ms == [0, 0, 500, 500, 500]
    push(owner, stream, 5, 3)  # slot 25 is current: slots 5..24 were never used
    owner.run_until_ms(1000)
    assert sent.slots == [0, 1, 2, 3, 4, 25, 26, 27]
    assert sent.times_ms[5:] == [500, 500, 520]
    assert stream.underrun_slots == 20


# --- underruns: unused slots are gone ----------------------------------------------------


def test_after_underrun_new_audio_takes_the_current_slot() -> None:
    owner = Owner(lead_ms=40)
    stream, sent = owner.open()
    push(owner, stream, 0, 3)  # slots 0, 1, 2 (deadline 0, 20, 40): all within the lead
    assert sent.times_ms == [0, 0, 0]
    owner.run_until_ms(165)  # slots 3..7 (deadlines 60..140) pass with nothing queued
    push(owner, stream, 3, 6)
    owner.run_until_ms(1000)
    assert stream.underrun_slots == 5
    # slot 8 is current (deadline 160): it and the slots within the lead leave now, and
    # the unused slots 3..7 are not spent on a burst.
    assert sent.slots == [0, 1, 2, 8, 9, 10, 11, 12, 13]
    assert sent.times_ms[3:] == [165, 165, 165, 180, 200, 220]
    for t, slot, _ in sent.frames:
        assert stream.deadline_ns(slot) - t <= 40 * MS


def test_silence_before_the_first_frame_is_not_an_underrun() -> None:
    owner = Owner(lead_ms=0)
    stream, sent = owner.open()
    owner.run_until_ms(1000)
    push(owner, stream, 0, 2)
    owner.run_until_ms(2000)
    assert stream.underrun_slots == 0
    assert sent.slots == [50, 51]
    assert sent.times_ms == [1000, 1020]


def test_a_frame_arriving_within_its_own_slot_is_not_an_underrun() -> None:
    owner = Owner(lead_ms=0)
    stream, sent = owner.open()
    push(owner, stream, 0, 1)
    owner.run_until_ms(39)  # slot 1 is current: its deadline passed 19 ms ago
    push(owner, stream, 1, 1)
    assert stream.underrun_slots == 0
    assert sent.slots == [0, 1]
    assert sent.times_ms == [0, 39]


# --- markers, clear ------------------------------------------------------------------------


def test_markers_follow_the_frames_queued_before_them() -> None:
    owner = Owner(lead_ms=0)
    stream, sent = owner.open()
    owner.scheduler.mark(stream, "before anything")
    push(owner, stream, 0, 2)
    owner.scheduler.mark(stream, "after 1")
    push(owner, stream, 2, 1)
    owner.scheduler.mark(stream, "after 2")
    owner.run_until_ms(1000)
    owner.scheduler.mark(stream, "idle")
    assert sent.log == [
        (0, ("marker", "before anything")),
        (0, frame(0)),
        (20 * MS, frame(1)),
        (20 * MS, ("marker", "after 1")),
        (40 * MS, frame(2)),
        (40 * MS, ("marker", "after 2")),
        (1000 * MS, ("marker", "idle")),
    ]


def test_clear_drops_queued_audio_and_markers() -> None:
    owner = Owner(lead_ms=0)
    stream, sent = owner.open()
    rooms: list[int] = []
    stream.on_room = lambda: rooms.append(owner.clock.now_ns())
    push(owner, stream, 0, 10)
    owner.scheduler.mark(stream, "end")
    owner.run_until_ms(50)
    assert stream.frames_sent == 3
    assert stream.clear() == 7
    assert stream.queued_ms() == 0
    assert rooms[-1] == 50 * MS  # waiters are told there is room
    owner.run_until_ms(1000)
    assert stream.frames_sent == 3
    assert ("marker", "end") not in [item for _, item in sent.log]


def test_after_clear_new_audio_gets_the_full_lead_again() -> None:
    # Vonage empties its buffer on clear, so the frames sent ahead are gone; new audio must
    # not queue behind their slots (that would leave Vonage one frame of margin, not lead).
    owner = Owner(lead_ms=100)
    stream, sent = owner.open()
    push(owner, stream, 0, 50)
    owner.run_until_ms(50)  # slots 0..7 sent (deadline <= 150)
    assert stream.frames_sent == 8
    stream.clear()
    push(owner, stream, 100, 10)
    owner.run_until_ms(1000)
    after = sent.frames[8:]
    assert [s for _, s, _ in after] == list(range(2, 12))  # slot 2 is current at 50 ms
    assert [t / MS for t, _, _ in after] == [50] * 6 + [60, 80, 100, 120]
    assert stream.underrun_slots == 0


def test_queued_ms_counts_frames_not_markers() -> None:
    owner = Owner(lead_ms=0)
    stream, _ = owner.open()
    push(owner, stream, 0, 6)
    owner.scheduler.mark(stream, "m")
    assert stream.queued_ms() == 100  # frame 0 left at once


# --- the scheduler -------------------------------------------------------------------------


def test_arm_receives_the_earliest_wake_time() -> None:
    owner = Owner(lead_ms=0)
    a, _ = owner.open(start_ns=0)
    b, _ = owner.open(start_ns=5 * MS)
    push(owner, a, 0, 2)  # frame 0 now; frame 1 at 20 ms
    assert owner.arms == [20 * MS]
    push(owner, b, 0, 2)  # b's frame 0 is due at 5 ms: earlier, so re-armed
    assert owner.arms == [20 * MS, 5 * MS]
    push(owner, a, 2, 1)  # a still wakes at 20 ms: nothing new to ask
    assert owner.arms == [20 * MS, 5 * MS]
    owner.run_until_ms(5)
    assert owner.arms[-1] == 20 * MS  # after b's frame, a's wake is the earliest
    owner.run_until_ms(1000)
    assert owner.timer_ns is None or owner.timer_ns <= 1000 * MS
    assert a.frames_sent == 3 and b.frames_sent == 2


def test_service_returns_the_next_wake_and_none_when_idle() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock, lead_ms=0)
    stream = scheduler.open_stream(PlayoutBuffer(1000), lambda f: None, lambda p: None)
    scheduler.push(stream, frame(0))
    scheduler.push(stream, frame(1))
    assert scheduler.service() == 20 * MS
    clock.set_ns(20 * MS)
    assert scheduler.service() is None
    assert stream.frames_sent == 2


def test_many_streams_each_keep_their_own_grid() -> None:
    owner = Owner(lead_ms=20)
    starts_ms = [0, 7, 13, 19]
    streams = [owner.open(start_ns=s * MS) for s in starts_ms]
    for stream, _ in streams:
        push(owner, stream, 0, 25)
    owner.run_until_ms(2000)
    for start, (stream, sent) in zip(starts_ms, streams, strict=True):
        assert sent.slots == list(range(25))
        assert sent.times_ms == [max(0, start + k * 20 - 20) for k in range(25)]
        assert stream.frames_sent == 25


def test_closed_stream_is_no_longer_serviced() -> None:
    owner = Owner(lead_ms=0)
    stream, sent = owner.open()
    push(owner, stream, 0, 5)
    stream.closed = True
    owner.run_until_ms(1000)
    assert sent.slots == [0]


def test_negative_lead_is_refused() -> None:
    with pytest.raises(ValueError, match="lead_ms"):
        Scheduler(FakeClock(), lead_ms=-1)


def test_fake_clock_cannot_go_back() -> None:
    clock = FakeClock(10)
    clock.advance_ms(1.5)
    assert clock.now_ns() == 10 + 1_500_000
    with pytest.raises(ValueError, match="back"):
        clock.set_ns(0)


# --- no drift over a long call --------------------------------------------------------------


def test_zero_drift_over_ten_minutes() -> None:
    """One frame per 20 ms with seeded arrival jitter for 10 minutes of fake time."""
    lead_ms = 60
    t0 = 1_000 * MS
    owner = Owner(lead_ms, start_ns=t0)
    stream, sent = owner.open(start_ns=t0, max_ms=2000)
    rng = random.Random(11)
    n = 10 * 60 * 50
    pushed_at: list[int] = []
    last = t0
    for k in range(n):
        # arrives from 50 ms early to 15 ms late, never before the previous frame
        at = max(last, t0 + k * FRAME_NS + rng.randint(-50, 15) * MS)
        owner.run_until_ms(at / MS)
        owner.scheduler.push(stream, frame(k))
        pushed_at.append(at)
        last = at
    owner.run_until_ms(last / MS + 1000)
    assert stream.frames_sent == n == 30_000
    assert stream.underrun_slots == 0
    assert sent.slots == list(range(n))
    for k, (t, _, _) in enumerate(sent.frames):
        deadline = t0 + k * FRAME_NS
        assert t == max(pushed_at[k], deadline - lead_ms * MS)
        assert abs(t - deadline) <= lead_ms * MS
    assert sent.frames[-1][0] <= t0 + (n - 1) * FRAME_NS + 15 * MS


def test_one_pass_serves_every_call_due_within_the_early_window() -> None:
    owner = Owner(lead_ms=0)
    # Three calls whose grids are 0.4 ms apart: one wake-up with a 1 ms window sends all
    # three, each at most 1 ms early; a fourth, 5 ms later, keeps its own wake-up.
    streams = [owner.open(start_ns=round(offset * MS)) for offset in (10.0, 10.4, 10.8, 15.0)]
    for i, (stream, _) in enumerate(streams):
        owner.scheduler.push(stream, frame(i))
    owner.clock.set_ns(10 * MS)
    next_wake = owner.scheduler.service(early_ns=MS)
    assert [len(sent.frames) for _, sent in streams] == [1, 1, 1, 0]
    assert next_wake == 15 * MS
    # Without the window, only the call that is due now goes.
    late = Owner(lead_ms=0)
    pairs = [late.open(start_ns=round(offset * MS)) for offset in (10.0, 10.4)]
    for i, (stream, _) in enumerate(pairs):
        late.scheduler.push(stream, frame(i))
    late.clock.set_ns(10 * MS)
    assert late.scheduler.service() == round(10.4 * MS)
    assert [len(sent.frames) for _, sent in pairs] == [1, 0]


@dataclass
class Ticker:
    """A ``Paced`` item: runs every ``every_ns``; when it runs at ``add_at_ns``, it adds
    ``add`` to be served at ``add_due_ns``."""

    name: str
    every_ns: int
    log: list[tuple[str, int]]
    scheduler: Scheduler | None = None
    add: Any = None
    add_at_ns: int = -1
    add_due_ns: int = 0
    until_ns: int = 1 << 60
    wake_ns: int | None = None
    closed: bool = False

    def pump(self, now_ns: int) -> int | None:
        self.log.append((self.name, now_ns))
        if now_ns == self.add_at_ns and self.scheduler is not None:
            self.scheduler.add(self.add, self.add_due_ns)
        nxt = now_ns + self.every_ns
        return nxt if nxt <= self.until_ns else None


def test_items_due_again_keep_their_times_when_a_pump_adds_an_earlier_item() -> None:
    """An item due again is moved down the heap in place; one whose pump added an item due
    before it (an overdue one, which then heads the heap) is still served once per wake-up,
    and so is the item it added."""
    clock = FakeClock()
    scheduler = Scheduler(clock, 0)
    log: list[tuple[str, int]] = []
    late = Ticker("late", 30 * MS, log, until_ns=90 * MS)
    a = Ticker("a", 20 * MS, log, scheduler, late, 20 * MS, 15 * MS, until_ns=100 * MS)
    b = Ticker("b", 25 * MS, log, until_ns=100 * MS)
    scheduler.add(a, 0)
    scheduler.add(b, 0)
    for t in range(0, 121 * MS, MS):
        clock.set_ns(t)
        scheduler.service(t)
    times = {name: [t // MS for n, t in log if n == name] for name in ("a", "b", "late")}
    assert times == {
        "a": [0, 20, 40, 60, 80, 100],
        "b": [0, 25, 50, 75, 100],
        "late": [20, 50, 80],
    }
