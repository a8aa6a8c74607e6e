"""The test agent's timing on a fake clock: when it answers, what it sends, when it stops.

The integration tests measure it with the simulator; these pin down what it does by itself,
so a discrepancy there is the simulator's, not the agent's.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from bridge.audio.pcm import to_samples
from bridge.errors import ConfigError
from bridge.pacing import FakeClock, Scheduler
from bridge.sim.agent import AgentCall, AgentOptions
from bridge.units import FRAME_NS, MS, SECOND, frame_samples

RATE = 16000
N = frame_samples(RATE)
START = 100 * SECOND


class Conn:
    """What the agent sent, with the fake clock's time."""

    is_open = True

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[int, Any]] = []

    def send_binary(self, data: bytes) -> None:
        self.sent.append((self.clock.now_ns(), data))

    def send_text(self, text: str) -> None:
        self.sent.append((self.clock.now_ns(), json.loads(text)))


def caller(call: AgentCall, clock: FakeClock, scheduler: Scheduler, speech: list[bool]) -> None:
    """Feed 20 ms caller frames (speech or silence) at their arrival, serving the agent."""
    for i, loud in enumerate(speech):
        run_until(clock, scheduler, START + (i + 1) * FRAME_NS)
        samples = np.full(N, 5000 if loud else 0, dtype=np.int16)
        call.audio(samples, clock.now_ns())


def run_until(clock: FakeClock, scheduler: Scheduler, until_ns: int) -> None:
    """Serve every wake-up exactly when it is due, up to ``until_ns``."""
    while scheduler.next_wake_ns <= until_ns:
        clock.set_ns(max(clock.now_ns(), scheduler.next_wake_ns))
        scheduler.service()
    clock.set_ns(until_ns)


def make(**options: Any) -> tuple[AgentCall, Conn, FakeClock, Scheduler]:
    clock = FakeClock(START)
    scheduler = Scheduler(clock, 0)
    conn = Conn(clock)
    call = AgentCall(AgentOptions(**options), conn, scheduler, RATE)  # type: ignore[arg-type]
    return call, conn, clock, scheduler


def test_it_answers_exactly_the_delay_after_the_callers_last_speech_sample() -> None:
    call, conn, clock, scheduler = make(answer_after_ms=300, reply_ms=400)
    caller(call, clock, scheduler, [True] * 25 + [False] * 15)
    run_until(clock, scheduler, START + 2 * SECOND)
    speech_end = START + 25 * FRAME_NS
    # The reply's first speech sample (sample 1 of a sine) is due at the end + 300 ms.
    first = call.first_ns
    assert first == SECOND // RATE
    times = {t for t, _ in conn.sent}
    assert times == {speech_end + 300 * MS - first}  # sent ahead: all at once
    assert len(conn.sent) == 20


def test_realtime_replies_are_paced_and_cut_where_the_caller_barged_in() -> None:
    call, conn, clock, scheduler = make(
        answer_after_ms=300, send="realtime", stop_after_ms=250, reply_ms=2000
    )
    caller(call, clock, scheduler, [True] * 25 + [False] * 30)  # the reply starts
    reply = call.reply
    assert reply is not None
    run_until(clock, scheduler, reply.start_ns + 500 * MS)
    # The caller speaks over it: speech from this frame's first sample.
    frame_start = clock.now_ns()
    run_until(clock, scheduler, frame_start + FRAME_NS)
    call.audio(np.full(N, 5000, dtype=np.int16), clock.now_ns())
    run_until(clock, scheduler, START + 5 * SECOND)
    stop = frame_start + 250 * MS
    frames = [data for _, data in conn.sent]
    heard_end = reply.start_ns + (len(frames) - 1) * FRAME_NS
    last = to_samples(frames[-1])
    cut = int(np.flatnonzero(last)[-1]) + 1
    assert heard_end + cut * SECOND // RATE == stop  # nothing heard after the stop
    # Paced: each frame 40 ms ahead of when it plays (the first three at the start).
    for f, (t, _) in enumerate(conn.sent):
        assert t == max(reply.start_ns, reply.start_ns + f * FRAME_NS - 40 * MS)


def test_a_clear_is_sent_at_the_stop_when_the_reply_went_ahead() -> None:
    call, conn, clock, scheduler = make(
        answer_after_ms=300, stop_after_ms=200, clear=True, reply_ms=3000
    )
    caller(call, clock, scheduler, [True] * 10 + [False] * 30)
    reply = call.reply
    assert reply is not None
    run_until(clock, scheduler, reply.start_ns + 700 * MS)
    barge = clock.now_ns()
    call.audio(np.full(N, 5000, dtype=np.int16), barge + FRAME_NS)
    run_until(clock, scheduler, barge + SECOND)
    clears = [(t, m) for t, m in conn.sent if isinstance(m, dict)]
    assert clears == [(barge + 200 * MS, {"action": "clear"})]


def test_it_cannot_answer_before_it_knows_the_caller_finished() -> None:
    with pytest.raises(ConfigError, match="cannot answer before"):
        AgentOptions(answer_after_ms=100, end_silence_ms=200)
    with pytest.raises(ConfigError, match="stop-after-ms"):
        AgentOptions(stop_after_ms=50)
