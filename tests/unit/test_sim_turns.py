"""The conversation engine on exact times, no sockets: a simulated agent whose answers and
stops are placed to the sample, and the playback model between them.

The agent here is arithmetic: it hears the caller's frames when they are sent, answers
``D`` after the caller's last speech sample (its reply reaching the caller's buffer then), and
stops ``R`` after the caller starts over it, by a clear or by cutting what it streams. The
engine must report exactly ``D`` and ``R`` (to the nanosecond rounding of a sample), judged
on the playout clock: audio sent early is heard only when playback reaches it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from bridge.audio.pcm import to_bytes, tone
from bridge.sim.options import TurnOptions
from bridge.sim.playback import Playback
from bridge.sim.turns import Hearing, TurnEngine, Utterance
from bridge.units import FRAME_NS, MS, frame_samples

RATE = 16000
N = frame_samples(RATE)
SAMPLE_NS = FRAME_NS // N  # 62 500 ns at 16 kHz


def utterance(lead_samples: int, speech_samples: int, tail_samples: int) -> Utterance:
    """Silence, a tone (speech), silence: speech from ``lead`` to ``lead + speech``."""
    samples = np.zeros(lead_samples + speech_samples + tail_samples, dtype=np.int16)
    samples[lead_samples : lead_samples + speech_samples] = 8000
    return Utterance.of(samples, RATE, lead_samples, lead_samples + speech_samples)


def reply_frames(ms: int) -> list[bytes]:
    audio = np.full(ms * RATE // 1000, 8000, dtype=np.int16)
    return [to_bytes(audio[i : i + N]) for i in range(0, len(audio), N)]


@dataclass
class World:
    """The caller's engine, its playback buffer, and an agent that answers on cue."""

    opts: TurnOptions
    utt: Utterance
    answer_after_ns: int
    stop_after_ns: int | None = None
    clear: bool = True
    reply_ms: int = 1000
    engine: TurnEngine = field(init=False)
    playback: Playback = field(default_factory=Playback)
    arrivals: list[tuple[int, int, bytes]] = field(default_factory=list)
    seq: int = 0
    reply_until_ns: int = -1
    clears: list[int] = field(default_factory=list)
    k0: int = -1

    def __post_init__(self) -> None:
        self.engine = TurnEngine(self.opts, self.utt)
        self.engine.begin(0, FRAME_NS)

    def arrive(self, at_ns: int, frame: bytes) -> None:
        self.seq += 1
        heapq.heappush(self.arrivals, (at_ns, self.seq, frame))

    def deliver_until(self, now_ns: int) -> None:
        while self.arrivals and self.arrivals[0][0] <= now_ns:
            at, _, frame = heapq.heappop(self.arrivals)
            if self.clears and at >= self.clears[0]:
                self.playback.clear(self.clears[0])
                self.engine.cleared(self.clears.pop(0))
            start = self.playback.add(at)
            if start >= 0:  # not dropped: the buffer was not full
                self.engine.heard(frame, start, FRAME_NS)
        while self.clears and self.clears[0] <= now_ns:
            at = self.clears.pop(0)
            self.playback.clear(at)
            self.engine.cleared(at)

    def run(self, frames: int) -> None:
        for k in range(frames):
            now = k * FRAME_NS
            self.deliver_until(now)
            j = self.engine.next_frame(k)
            if j == 0:
                self.caller_started(k)
            if self.engine.done:
                return
        raise AssertionError("the conversation did not end")

    def caller_started(self, k: int) -> None:
        capture = (k - 1) * FRAME_NS
        start = capture + self.utt.first * SAMPLE_NS
        end = capture + self.utt.end * SAMPLE_NS
        if self.stop_after_ns is not None and start < self.reply_until_ns:
            stop = start + self.stop_after_ns
            if self.clear:
                self.clears.append(stop)
            else:  # a streamed reply: cut at the stop, nothing after it sent
                kept = []
                for at, seq, frame in self.arrivals:
                    if at + FRAME_NS <= stop:
                        kept.append((at, seq, frame))
                    elif at < stop:
                        samples = np.frombuffer(frame, dtype="<i2").copy()
                        samples[(stop - at) // SAMPLE_NS :] = 0
                        kept.append((at, seq, to_bytes(samples)))
                self.arrivals = kept
                heapq.heapify(self.arrivals)
                self.reply_until_ns = stop
        at = end + self.answer_after_ns
        frames = reply_frames(self.reply_ms)
        for i, frame in enumerate(frames):
            # Streamed in real time: each frame arrives as it is due to play.
            self.arrive(at + i * FRAME_NS if not self.clear else at, frame)
        self.reply_until_ns = at + len(frames) * FRAME_NS


@pytest.mark.parametrize("answer_ms", [300, 800])
@pytest.mark.parametrize("lead", [0, 37, 319])
def test_turn_latency_is_exactly_the_agents_delay(answer_ms: int, lead: int) -> None:
    opts = TurnOptions(turns=10, pause_ms=200, answer_timeout_ms=2000)
    world = World(opts, utterance(lead, 5000, 600), answer_ms * MS, reply_ms=400)
    world.run(10_000)
    stats = world.engine.stats
    assert (stats.turns_done, stats.answered, stats.unanswered) == (10, 10, 0)
    assert [r.latency_ms for r in stats.rows] == [pytest.approx(answer_ms, abs=0.001)] * 10
    assert stats.latency.count == 10
    # Each turn starts once the agent has been silent for the pause.
    for before, after in zip(stats.rows, stats.rows[1:], strict=False):
        assert before.reply_end_ms is not None
        assert after.speech_start_ms - lead / 16 >= before.reply_end_ms + 200 - 20


def test_an_answer_sent_early_counts_when_it_is_heard() -> None:
    """A reply that reaches the caller's buffer behind audio still playing is heard later:
    the latency is taken on the playout clock, not at arrival."""
    opts = TurnOptions(turns=1, pause_ms=100, answer_timeout_ms=3000)
    world = World(opts, utterance(0, 3200, 0), 300 * MS)
    world.engine.begin(0, FRAME_NS)
    # Before the caller speaks, 3 s of silence from the agent fill the buffer: anything the
    # agent sends next plays after it.
    for _ in range(150):
        world.arrive(0, bytes(2 * N))
    world.run(1000)
    row = world.engine.stats.rows[0]
    assert row.answered
    assert row.latency_ms is not None and row.answer_start_ms is not None
    # The buffer held 3 s from t=0; the caller's turn ended at 0.1 s (pause) + 0.2 s.
    assert row.answer_start_ms == pytest.approx(3000, abs=0.01)


@pytest.mark.parametrize("clear", [True, False])
@pytest.mark.parametrize("stop_ms", [200, 450])
def test_barge_in_reaction_is_exactly_the_agents_stop(clear: bool, stop_ms: int) -> None:
    opts = TurnOptions(turns=5, pause_ms=200, barge_in_after_ms=300, answer_timeout_ms=2000)
    world = World(
        opts, utterance(101, 9000, 200), 300 * MS, stop_ms * MS, clear=clear, reply_ms=1500
    )
    world.run(20_000)
    stats = world.engine.stats
    rows = stats.rows
    assert [r.barge_in for r in rows] == [False, True, True, True, True]
    assert [r.barge_in_ms for r in rows[1:]] == [pytest.approx(stop_ms, abs=0.001)] * 4
    assert [r.stopped_by for r in rows[1:]] == ["clear" if clear else "silence"] * 4
    assert (stats.barge_ins, stats.barge_in_stopped) == (4, 4)
    assert stats.barge_in_cleared == (4 if clear else 0)
    # Each barge-in starts 300 ms into the answer (the utterance's first frame, at most one
    # frame later, then its leading silence of 101 samples).
    for answered, barged in itertools.pairwise(rows):
        assert answered.answer_start_ms is not None
        offset = barged.speech_start_ms - answered.answer_start_ms - 101 / 16
        assert 300 <= offset < 320
    # The answers after the barge-ins are still measured.
    assert [r.latency_ms for r in rows] == [pytest.approx(300, abs=0.001)] * 5


def test_an_agent_that_never_stops_is_reported_so() -> None:
    opts = TurnOptions(turns=2, pause_ms=200, barge_in_after_ms=100, answer_timeout_ms=500)
    world = World(opts, utterance(0, 3200, 0), 300 * MS, None, reply_ms=60_000)
    world.run(10_000)
    world.engine.finish(10_000 * FRAME_NS)
    rows = world.engine.stats.rows
    assert rows[1].barge_in and rows[1].barge_in_ms is None
    assert rows[1].stopped_by == "not stopped"
    assert world.engine.stats.barge_in_not_stopped == 1


def test_an_agent_that_never_answers_times_out_and_the_next_turn_starts() -> None:
    opts = TurnOptions(turns=3, pause_ms=100, answer_timeout_ms=700)
    engine = TurnEngine(opts, utterance(0, 1600, 0))
    engine.begin(0, FRAME_NS)
    starts = [k for k in range(1000) if engine.next_frame(k) == 0]
    assert engine.done
    rows = engine.stats.rows
    assert [r.answered for r in rows] == [False, False, False]
    assert engine.stats.unanswered == 3 and engine.stats.latency.count == 0
    # The caller waits the timeout after it stopped, then speaks again.
    assert len(starts) == 3
    ends = [r.speech_end_ms for r in rows]
    for end, nxt in zip(ends, rows[1:], strict=False):
        assert end + 700 <= nxt.speech_start_ms <= end + 700 + 20


def test_hearing_groups_speech_into_spurts_and_a_clear_cuts_them() -> None:
    hearing = Hearing(threshold=328, gap_ns=300 * MS, samples_per_frame=N)
    loud = to_bytes(tone(300, RATE, N, amplitude=8000))
    quiet = bytes(2 * N)
    hearing.frame(loud, 0, FRAME_NS)
    hearing.frame(quiet, FRAME_NS, FRAME_NS)
    hearing.frame(loud, 10 * FRAME_NS, FRAME_NS)  # 180 ms gap: the same spurt
    assert len(hearing.spurts) == 1
    hearing.frame(loud, 40 * FRAME_NS, FRAME_NS)  # 580 ms gap: a new one
    assert len(hearing.spurts) == 2 and hearing.spurts[0].final
    hearing.frame(loud, 41 * FRAME_NS, FRAME_NS)
    hearing.frame(loud, 60 * FRAME_NS, FRAME_NS)  # queued to play later
    hearing.clear(41 * FRAME_NS + 5 * MS)
    last = hearing.spurts[-1]
    assert last.cleared and last.final
    assert last.end_ns == 41 * FRAME_NS + 5 * MS
    assert hearing.audible_at(41 * FRAME_NS) is last
    assert hearing.talking_at(100 * FRAME_NS) is None


def test_a_clear_after_the_agent_fell_silent_is_not_what_stopped_it() -> None:
    """The answer played to its end; a clear 100 ms later (within the gap that would have
    made it final) cut nothing: the agent had stopped by itself, and its end stays."""
    hearing = Hearing(threshold=328, gap_ns=300 * MS, samples_per_frame=N)
    loud = to_bytes(tone(300, RATE, N, amplitude=8000))
    for k in range(10):
        hearing.frame(loud, k * FRAME_NS, FRAME_NS)
    end = hearing.spurts[-1].end_ns
    hearing.clear(10 * FRAME_NS + 100 * MS)
    last = hearing.spurts[-1]
    assert last.final and not last.cleared and last.end_ns == end


def test_a_silent_utterance_is_refused(tmp_path: object) -> None:
    from pathlib import Path  # noqa: PLC0415

    from bridge.audio.wav import write_wav  # noqa: PLC0415
    from bridge.errors import ConfigError  # noqa: PLC0415

    path = Path(str(tmp_path)) / "quiet.wav"
    write_wav(path, np.full(1600, 100, dtype=np.int16), RATE)  # -50 dBFS: below -40
    with pytest.raises(ConfigError, match="no speech above the threshold"):
        Utterance.load(path, RATE, TurnOptions(1).threshold)
    assert Utterance.load(path, RATE, TurnOptions(1, threshold_dbfs=-60).threshold).end == 1600
