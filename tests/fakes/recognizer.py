"""A deterministic "speech recogniser" for the fake services: tones are words.

The tests cannot run a real recogniser, and do not need to: what they check is the plumbing
and the protocol. So the caller's audio is made of tone bursts (:func:`speech`), each burst a
word whose text is named by its frequency (:data:`WORDS`), bursts less than
``UTTERANCE_GAP_S`` apart one utterance. The recogniser segments the audio it is fed by
energy in 10 ms blocks and measures each burst's frequency by counting zero crossings, so it
survives any resampling bridge does on the way.

It reports what a streaming recogniser reports: speech started, an interim result each time a
word ends, a final result when the silence after the last word reaches ``UTTERANCE_GAP_S``,
and, on :meth:`Recognizer.flush` (a service's end-of-stream), a final for whatever was still
pending, a word cut off by the end of the call included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.audio.pcm import Samples, tone
from bridge.audio.wav import write_wav

#: Word text by tone frequency (Hz).
WORDS = {
    500: "hello",
    600: "bridge",
    700: "world",
    800: "alpha",
    900: "bravo",
    1000: "charlie",
    1100: "delta",
    1200: "echo",
}
FREQUENCY = {word: hz for hz, word in WORDS.items()}
BLOCK_S = 0.01
#: RMS above this is speech (the bursts are at amplitude 8000, RMS about 5700).
THRESHOLD = 1000.0
WORD_GAP_S = 0.08
UTTERANCE_GAP_S = 0.4
WORD_S = 0.3
SPACE_S = 0.15


def speech(
    utterances: list[list[str]],
    rate: int,
    *,
    lead_s: float = 0.3,
    pause_s: float = 0.8,
    tail_s: float = 0.6,
    cut_last_s: float | None = None,
) -> Samples:
    """Caller audio: each word a ``WORD_S`` tone, words ``SPACE_S`` apart, utterances
    ``pause_s`` apart. ``cut_last_s``: the audio ends that far into the last word (a call that
    hangs up mid-sentence), no tail."""
    parts = [np.zeros(round(lead_s * rate), dtype=np.int16)]
    for u, words in enumerate(utterances):
        for w, word in enumerate(words):
            last = u == len(utterances) - 1 and w == len(words) - 1
            seconds = cut_last_s if last and cut_last_s is not None else WORD_S
            parts.append(tone(FREQUENCY[word], rate, round(seconds * rate)))
            if not last:
                gap = SPACE_S if w < len(words) - 1 else pause_s
                parts.append(np.zeros(round(gap * rate), dtype=np.int16))
    if cut_last_s is None:
        parts.append(np.zeros(round(tail_s * rate), dtype=np.int16))
    return np.concatenate(parts)


def speech_wav(path: Path, utterances: list[list[str]], rate: int, **kwargs: float | None) -> float:
    """Write :func:`speech` to ``path``; returns its duration in seconds."""
    samples = speech(utterances, rate, **kwargs)  # type: ignore[arg-type]
    write_wav(path, samples, rate)
    return len(samples) / rate


@dataclass
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass
class Result:
    """A recognition result: the words so far of the current utterance."""

    final: bool
    words: list[Word]

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)

    @property
    def start_s(self) -> float:
        return self.words[0].start_s

    @property
    def end_s(self) -> float:
        return self.words[-1].end_s


@dataclass
class Recognizer:
    """Feed 16-bit PCM at ``rate``; collect :class:`Result` and speech-start events."""

    rate: int
    results: list[Result] = field(default_factory=list)
    #: Stream times (s) at which an utterance began.
    speech_starts: list[float] = field(default_factory=list)
    #: Stream times (s) at which an utterance's final silence began (speech stopped).
    speech_stops: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._block = max(1, round(self.rate * BLOCK_S))
        self._pending = np.zeros(0, dtype=np.int16)
        self._blocks = 0
        self._voiced_from: int | None = None  # block where the current burst began
        self._crossings = 0
        self._last_voiced = -1
        self._prev_sign = 0
        self._words: list[Word] = []

    @property
    def seconds(self) -> float:
        """Audio fed so far."""
        return (self._blocks * self._block + len(self._pending)) / self.rate

    def feed(self, samples: Samples) -> list[Result]:
        """New results (and ``speech_starts``) produced by this audio."""
        before = len(self.results)
        data = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        n = len(data) // self._block
        for i in range(n):
            self._on_block(data[i * self._block : (i + 1) * self._block])
        self._pending = data[n * self._block :].copy()
        return self.results[before:]

    def flush(self) -> list[Result]:
        """End of stream: finish a word in progress and the utterance (a final, if any)."""
        before = len(self.results)
        if self._voiced_from is not None:
            self._end_word(self._last_voiced + 1)
        if self._words:
            self._final()
        return self.results[before:]

    @property
    def in_utterance(self) -> bool:
        return bool(self._words) or self._voiced_from is not None

    def _on_block(self, block: Samples) -> None:
        values = block.astype(np.float64)
        rms = float(np.sqrt(np.mean(values * values)))
        index = self._blocks
        self._blocks += 1
        if rms >= THRESHOLD:
            signs = np.sign(values)
            signs[signs == 0] = 1
            crossings = int(np.count_nonzero(np.diff(signs)))
            if self._prev_sign and signs[0] != self._prev_sign:
                crossings += 1
            self._prev_sign = int(signs[-1])
            if self._voiced_from is None:
                if not self.in_utterance:
                    self.speech_starts.append(index * BLOCK_S)
                self._voiced_from = index
                self._crossings = 0
            self._crossings += crossings
            self._last_voiced = index
            return
        self._prev_sign = 0
        if self._voiced_from is not None and (index - self._last_voiced) * BLOCK_S >= WORD_GAP_S:
            self._end_word(self._last_voiced + 1)
        if (
            self._words
            and self._voiced_from is None
            and (index + 1 - self._last_voiced - 1) * BLOCK_S >= UTTERANCE_GAP_S
        ):
            self.speech_stops.append((self._last_voiced + 1) * BLOCK_S)
            self._final()

    def _end_word(self, end_block: int) -> None:
        assert self._voiced_from is not None
        seconds = (end_block - self._voiced_from) * BLOCK_S
        hz = self._crossings / (2 * seconds) if seconds > 0 else 0.0
        nearest = min(WORDS, key=lambda f: abs(f - hz))
        text = WORDS[nearest] if abs(nearest - hz) < 50 else f"tone{round(hz)}"
        self._words.append(Word(text, self._voiced_from * BLOCK_S, end_block * BLOCK_S))
        self._voiced_from = None
        self.results.append(Result(False, list(self._words)))

    def _final(self) -> None:
        self.results.append(Result(True, list(self._words)))
        self._words = []
