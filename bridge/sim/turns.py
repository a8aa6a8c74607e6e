"""A conversation with a voice agent: the caller's utterances, and when the agent answered
and stopped, as the caller heard it.

The caller says the utterance (``--wav``) ``turns`` times. Each turn measures:

* **turn latency**: from the end of the caller's last speech sample to the first speech
  sample of the agent's answer, as the caller *hears* it: on the playout clock of
  ``bridge.sim.playback`` (docs/lessons.md s.9), not when the audio arrived; an agent that
  sends its answer early is heard only when playback reaches it;
* **whether the agent answered** within ``answer_timeout_ms``;
* **barge-in reaction** (``barge_in_after_ms``): the next utterance starts that long into the
  agent's answer; the reaction runs from the caller's first speech sample to the end of the
  agent's last one heard, i.e. until its audio stopped arriving or a ``clear`` emptied the
  buffer.

Speech is what ``bridge.sim.level`` says it is (a sample at or above the threshold); the
agent's speech is grouped into *spurts*: silences shorter than ``gap_ms`` (between words)
do not end one. The caller decides as a person would, from what it has heard so far: the
next utterance starts once the agent has been silent for ``pause_ms`` (or, for a barge-in,
``barge_in_after_ms`` after its answer began).

Times: frame ``k`` is sent at ``start + k * frame`` and holds the audio of the frame before
that (Vonage sends a frame once it has captured it), so a speech sample's time is exact to
the sample on the caller's own clock. Sans-I/O: the call hands each frame heard, with the
time it starts to play, and each clear; the engine chooses each frame to send.

Import rule: standard library, numpy, ``bridge.audio``, ``bridge.stats``, ``bridge.units``,
``bridge.errors``, ``bridge.sim.level``, ``bridge.sim.options``, ``bridge.sim.source`` and
``bridge.sim.timeline``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.audio.pcm import Samples, to_bytes
from bridge.errors import ConfigError
from bridge.sim.level import frame_bounds, speech_bounds
from bridge.sim.options import TurnOptions
from bridge.sim.source import SEQ_MASK, FrameSource, read_samples, stamp_frame
from bridge.sim.timeline import Envelope
from bridge.stats import Histogram
from bridge.units import MS, frame_bytes, frame_samples

#: An answer is heard for at most this long before the caller takes the turn anyway.
MAX_REPLY_MS = 60_000
#: Turn rows kept per load process for the report (every turn counts in the percentiles).
MAX_ROWS = 10_000


@dataclass(frozen=True)
class Utterance:
    """What the caller says each turn: exact frames, and where its speech starts and ends."""

    frames: tuple[bytes, ...]
    #: The first speech sample, and the one after the last.
    first: int
    end: int
    rate: int

    @classmethod
    def load(cls, path: Path | str, rate: int, threshold: int) -> Utterance:
        samples = read_samples(path, rate)
        bounds = speech_bounds(samples, threshold)
        if bounds is None:
            raise ConfigError(f"the utterance {path} has no speech above the threshold")
        return cls.of(samples, rate, *bounds)

    @classmethod
    def of(cls, samples: Samples, rate: int, first: int, end: int) -> Utterance:
        n = frame_samples(rate)
        padded = np.zeros(-(-len(samples) // n) * n, dtype=np.int16)
        padded[: len(samples)] = samples
        frames = tuple(to_bytes(padded[i : i + n]) for i in range(0, len(padded), n))
        return cls(frames, first, end, rate)


@dataclass
class Spurt:
    """A stretch of the agent's speech as heard: from its first to its last speech sample."""

    start_ns: int
    end_ns: int
    #: Ended for good: silence for ``gap_ms`` after it, or a clear.
    final: bool = False
    cleared: bool = False


@dataclass
class TurnRow:
    """One turn, as reported: times in ms since the call started."""

    turn: int
    speech_start_ms: float
    speech_end_ms: float
    answered: bool | None = None
    answer_start_ms: float | None = None
    latency_ms: float | None = None
    reply_end_ms: float | None = None
    #: The agent was still talking when the caller stopped (its answer is the next spurt).
    overlap: bool = False
    #: This utterance started over the agent (``barge_in_after_ms``).
    barge_in: bool = False
    barge_in_ms: float | None = None
    #: How the agent's audio stopped after the barge-in: "clear", "silence", "not talking"
    #: (it had already stopped) or "not stopped".
    stopped_by: str | None = None


@dataclass
class TurnStats:
    """Turn figures of one call, or merged over a load run's calls (bounded memory)."""

    turns: int = 0
    turns_done: int = 0
    answered: int = 0
    unanswered: int = 0
    overlaps: int = 0
    barge_ins: int = 0
    barge_in_stopped: int = 0
    barge_in_cleared: int = 0
    barge_in_not_talking: int = 0
    barge_in_not_stopped: int = 0
    #: 12 sub-bits: a percentile within 0.05 % (0.4 ms at 800 ms).
    latency: Histogram = field(default_factory=lambda: Histogram(sub_bits=12))
    barge_in: Histogram = field(default_factory=lambda: Histogram(sub_bits=12))
    rows: list[TurnRow] = field(default_factory=list)

    def merge(self, other: TurnStats) -> None:
        for name in (
            "turns",
            "turns_done",
            "answered",
            "unanswered",
            "overlaps",
            "barge_ins",
            "barge_in_stopped",
            "barge_in_cleared",
            "barge_in_not_talking",
            "barge_in_not_stopped",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.merge(other.latency)
        self.barge_in.merge(other.barge_in)
        self.rows.extend(other.rows[: max(0, MAX_ROWS - len(self.rows))])

    def counter(self, name: str) -> int:
        value: int = getattr(self, name)
        return value

    def histogram(self, name: str) -> Histogram:
        hist: Histogram = getattr(self, name)
        return hist


class Hearing:
    """The agent's speech on the playout clock, as spurts (see the module doc)."""

    def __init__(self, threshold: int, gap_ns: int, samples_per_frame: int) -> None:
        self.threshold = threshold
        self.gap_ns = gap_ns
        self.n = samples_per_frame
        self.spurts: list[Spurt] = []

    def frame(self, data: bytes, start_ns: int, frame_ns: int) -> None:
        """A frame that starts to play at ``start_ns`` and lasts ``frame_ns``."""
        bounds = frame_bounds(data, self.threshold)
        if bounds is None:
            return
        n = self.n
        begin = start_ns + bounds[0] * frame_ns // n
        end = start_ns + bounds[1] * frame_ns // n
        spurts = self.spurts
        if spurts and not spurts[-1].final and begin - spurts[-1].end_ns < self.gap_ns:
            spurts[-1].end_ns = end
            return
        if spurts:
            spurts[-1].final = True
        spurts.append(Spurt(begin, end))

    def clear(self, at_ns: int) -> None:
        """A clear at ``at_ns``: audio queued to play from then on is never heard, and the
        spurt playing ends there, cleared (one already silent, between words or done, ends
        where its audio did: the agent had stopped by itself)."""
        spurts = self.spurts
        while spurts and spurts[-1].start_ns >= at_ns:
            spurts.pop()
        if spurts:
            # Final because a later spurt was queued (now cleared) is not final: only the
            # gap heard after it, or this clear, ends it.
            last = spurts[-1]
            if at_ns < last.end_ns:  # it cut audio; after its end, the agent had fallen silent
                last.end_ns = at_ns
                last.cleared = True
            last.final = True

    def settle(self, now_ns: int) -> None:
        """The last spurt is over once ``gap_ms`` of silence has been heard after it."""
        spurts = self.spurts
        if spurts and not spurts[-1].final and now_ns >= spurts[-1].end_ns + self.gap_ns:
            spurts[-1].final = True

    def first_from(self, at_ns: int, heard_by_ns: int) -> Spurt | None:
        """The first spurt starting at or after ``at_ns`` that was heard by ``heard_by_ns``."""
        for spurt in self.spurts:
            if spurt.start_ns >= at_ns:
                return spurt if spurt.start_ns <= heard_by_ns else None
        return None

    def talking_at(self, at_ns: int) -> Spurt | None:
        """The spurt the agent was in at ``at_ns`` (between words counts), if any."""
        for spurt in reversed(self.spurts):
            if spurt.start_ns <= at_ns:
                return spurt if at_ns < spurt.end_ns + self.gap_ns else None
        return None

    def audible_at(self, at_ns: int) -> Spurt | None:
        """The spurt being heard at ``at_ns`` (not between words), if any."""
        for spurt in reversed(self.spurts):
            if spurt.start_ns <= at_ns:
                return spurt if at_ns < spurt.end_ns else None
        return None

    def silent_since(self, now_ns: int) -> int:
        """When the agent last spoke (as heard by ``now_ns``); 0 if never."""
        for spurt in reversed(self.spurts):
            if spurt.start_ns <= now_ns:
                return spurt.end_ns
        return 0


@dataclass
class _Turn:
    row: TurnRow
    speech_start_ns: int
    speech_end_ns: int
    answer: Spurt | None = None
    #: A barge-in whose start has not been heard yet (the agent may stop before it).
    barge_pending: bool = False
    #: The spurt the caller barged in on, until it has stopped.
    barged: Spurt | None = None
    done: bool = False


class TurnEngine:
    """Chooses each frame the caller sends, and measures each turn (see the module doc)."""

    def __init__(self, opts: TurnOptions, utterance: Utterance) -> None:
        self.opts = opts
        self.utterance = utterance
        self.n = frame_samples(utterance.rate)
        self.hearing = Hearing(opts.threshold, opts.gap_ms * MS, self.n)
        self.stats = TurnStats(turns=opts.turns)
        self.start_ns = 0
        self.frame_ns = 0
        #: The frame the current utterance started at (-1: not speaking).
        self.k0 = -1
        self.current: _Turn | None = None
        self.turns: list[_Turn] = []
        self.done = False
        #: Past this the conversation ends whatever happens (bounded call length).
        self.deadline_ns = 0

    def begin(self, start_ns: int, frame_ns: int) -> None:
        """Frame ``k`` is sent at ``start_ns + k * frame_ns``."""
        self.start_ns = start_ns
        self.frame_ns = frame_ns
        per_turn = (
            len(self.utterance.frames) * frame_ns
            + (self.opts.pause_ms + self.opts.answer_timeout_ms + MAX_REPLY_MS) * MS
        )
        self.deadline_ns = start_ns + self.opts.turns * per_turn

    def _ms(self, at_ns: int) -> float:
        return round((at_ns - self.start_ns) / MS, 3)

    # --- what the caller says -----------------------------------------------------------

    def next_frame(self, k: int) -> int:
        """Which utterance frame frame ``k`` carries (-1: silence)."""
        if self.k0 >= 0:
            j = k - self.k0
            if j < len(self.utterance.frames):
                return j
            self.k0 = -1
        # The frame's audio begins one frame before it is sent: decide as of then.
        now = self.start_ns + (k - 1) * self.frame_ns
        self.update(now)
        if self.done or not self._may_start(now):
            return -1
        self._start_turn(k, now)
        return 0

    def _start_turn(self, k: int, now_ns: int) -> None:
        u = self.utterance
        per_sample = self.frame_ns / self.n
        start = now_ns + round(u.first * per_sample)
        end = now_ns + round(u.end * per_sample)
        row = TurnRow(len(self.turns), self._ms(start), self._ms(end))
        turn = _Turn(row, start, end)
        if self.turns and self.opts.barge_in_after_ms is not None and self.turns[-1].answer:
            row.barge_in = True
            self.stats.barge_ins += 1
            turn.barge_pending = True  # whether the agent is talking: once speech starts
        self.turns.append(turn)
        self.current = turn
        self.k0 = k

    def _may_start(self, now_ns: int) -> bool:
        if len(self.turns) >= self.opts.turns:
            return False
        pause = self.opts.pause_ms * MS
        if not self.turns:
            return now_ns >= self.start_ns + pause and (
                now_ns >= self.hearing.silent_since(now_ns) + pause
            )
        last = self.turns[-1]
        barge = self.opts.barge_in_after_ms
        if barge is not None and last.answer is not None:
            return now_ns >= last.answer.start_ns + barge * MS
        if not last.done:
            return False  # its answer is awaited or still being heard
        return now_ns >= max(last.speech_end_ns, self.hearing.silent_since(now_ns)) + pause

    # --- what the caller hears ----------------------------------------------------------

    def heard(self, data: bytes, start_ns: int, frame_ns: int) -> None:
        """A frame of the agent's audio that starts to play at ``start_ns``."""
        self.hearing.frame(data, start_ns, frame_ns)

    def cleared(self, at_ns: int) -> None:
        self.hearing.clear(at_ns)

    def update(self, now_ns: int) -> None:
        """Resolve what ``now_ns`` decides: answers heard, replies and barged spurts over."""
        hearing = self.hearing
        hearing.settle(now_ns)
        opts = self.opts
        for turn in self.turns:
            if turn.done:
                continue
            row = turn.row
            if turn.barge_pending and now_ns >= turn.speech_start_ns:
                turn.barge_pending = False
                turn.barged = hearing.talking_at(turn.speech_start_ns)
                if turn.barged is None:
                    row.stopped_by = "not talking"
                    self.stats.barge_in_not_talking += 1
            if turn.barged is not None and turn.barged.final:
                spurt = turn.barged
                row.barge_in_ms = round(max(0, spurt.end_ns - turn.speech_start_ns) / MS, 3)
                row.stopped_by = "clear" if spurt.cleared else "silence"
                self.stats.barge_in.record(max(0, spurt.end_ns - turn.speech_start_ns))
                self.stats.barge_in_stopped += 1
                self.stats.barge_in_cleared += spurt.cleared
                turn.barged = None
            if row.answered is None and now_ns >= turn.speech_end_ns:
                answer = hearing.first_from(turn.speech_end_ns, now_ns)
                if answer is not None:
                    turn.answer = answer
                    row.answered = True
                    row.answer_start_ms = self._ms(answer.start_ns)
                    latency = answer.start_ns - turn.speech_end_ns
                    row.latency_ms = round(latency / MS, 3)
                    self.stats.latency.record(latency)
                    self.stats.answered += 1
                    talking = hearing.audible_at(turn.speech_end_ns)
                    if talking is not None and talking is not answer:
                        row.overlap = True
                        self.stats.overlaps += 1
                elif now_ns >= turn.speech_end_ns + opts.answer_timeout_ms * MS:
                    row.answered = False
                    self.stats.unanswered += 1
            if turn.answer is not None and turn.answer.final:
                row.reply_end_ms = self._ms(turn.answer.end_ns)
            over = now_ns >= turn.speech_end_ns + (opts.answer_timeout_ms + MAX_REPLY_MS) * MS
            finished = row.answered is False or (turn.answer is not None and turn.answer.final)
            if (finished and turn.barged is None and not turn.barge_pending) or over:
                if turn.barged is not None:
                    row.stopped_by = "not stopped"
                    self.stats.barge_in_not_stopped += 1
                    turn.barged = None
                if row.answered is None:
                    row.answered = False
                    self.stats.unanswered += 1
                turn.done = True
                self.stats.turns_done += 1
                self._keep(row)
        if len(self.turns) >= opts.turns and all(t.done for t in self.turns):
            self.done = True
        if now_ns >= self.deadline_ns:
            self.done = True

    def finish(self, now_ns: int) -> None:
        """The call is over: what is decided by now counts; turns still open are reported
        as they stand (not answered, not stopped)."""
        self.update(now_ns)
        for turn in self.turns:
            if turn.done:
                continue
            row = turn.row
            if row.answered is None:
                row.answered = False
                self.stats.unanswered += 1
            if turn.barged is not None:
                row.stopped_by = "not stopped"
                self.stats.barge_in_not_stopped += 1
            turn.done = True
            self._keep(row)
        self.done = True

    def _keep(self, row: TurnRow) -> None:
        if len(self.stats.rows) < MAX_ROWS:
            self.stats.rows.append(row)


class TurnSource:
    """The caller's audio for a conversation: the engine chooses each frame; ``on_done``
    hears the number of the first frame sent once the conversation is over."""

    def __init__(
        self,
        engine: TurnEngine,
        rate: int,
        sent: Envelope | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.silence = bytes(frame_bytes(rate))
        self.sent = sent
        self.on_done = on_done

    def frame(self, k: int) -> bytes:
        j = self.engine.next_frame(k)
        if self.engine.done and self.on_done is not None:
            self.on_done(k)
        frame = self.silence if j < 0 else self.engine.utterance.frames[j]
        if self.sent is not None:
            engine = self.engine
            self.sent.add(engine.start_ns + (k - 1) * engine.frame_ns, frame)
        return frame

    def stamped(self, k: int) -> bytes:
        return stamp_frame(self.frame(k), k & SEQ_MASK)


class EnvelopeSource:
    """Any source, with the level of each frame sent kept for the timeline."""

    def __init__(self, source: FrameSource, sent: Envelope, frame_ns: int) -> None:
        self.source = source
        self.sent = sent
        self.frame_ns = frame_ns

    def frame(self, k: int) -> bytes:
        frame = self.source.frame(k)
        self.sent.add(self.sent.start_ns + (k - 1) * self.frame_ns, frame)
        return frame

    def stamped(self, k: int) -> bytes:
        return stamp_frame(self.frame(k), k & SEQ_MASK)
