"""Offline speech recognition for ``--mode transcribe``: pocketsphinx in worker processes.

Why processes: pocketsphinx holds the GIL while it decodes (measured here: a thread decoding
1 s chunks stopped the event loop for 180 ms at a time), and it costs about 0.15 s of CPU per
second of speech. In a worker process it never delays another call's audio, and it gets a
core of its own. Each worker is a single-process executor, so the chunks of one call, always
sent to the same worker, are decoded in order.

In the worker, each call has a voice-activity endpointer (pocketsphinx's ``Endpointer``: 30 ms
frames, an utterance starts after 0.3 s mostly speech and ends after 0.3 s mostly silence) and
a decoder (reused across calls: loading the model takes ~0.3 s). Each utterance is decoded
whole when it ends (see ``_decode``) and comes back with its start and end time in the call's
audio and its words with their times.

pocketsphinx is an optional dependency (``pip install 'bridge[asr]'``); it is imported only in
the workers, and :func:`check_available` tells the CLI early when it is missing.

Import rule: standard library and ``bridge.errors``; pocketsphinx in worker functions only.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError

#: The rate the recogniser's acoustic model wants.
ASR_RATE = 16000
#: pocketsphinx's decoder works in 10 ms frames.
_DECODER_FRAMES_PER_S = 100
_BPS = ASR_RATE * 2  # bytes per second of 16-bit audio
#: Endpointer frames (30 ms) kept before an utterance and decoded with it (see ``_feed``).
PREROLL_FRAMES = 5
#: A longer utterance is cut and decoded in pieces (bounded memory and latency).
MAX_UTTERANCE_S = 30
_FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "<unk>")


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: its times in the call's audio (seconds) and what was said."""

    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "text": self.text,
            "words": [{"word": w.word, "start_s": w.start_s, "end_s": w.end_s} for w in self.words],
        }


def check_available(needed_by: str) -> None:
    """Raise ``ConfigError`` with the fix when pocketsphinx is not installed; the message
    names ``needed_by`` (the setting that asked for transcription)."""
    if importlib.util.find_spec("pocketsphinx") is None:
        raise ConfigError(
            f"{needed_by} needs pocketsphinx: pip install 'bridge[asr]' "
            "(or pip install pocketsphinx)"
        )


class AsrPool:
    """``processes`` single-worker executors; a call sticks to one (``assign``)."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("need at least one ASR process")
        # spawn, not fork: forking a process that runs an event loop and threads is unsafe
        # (and deprecated from Python 3.12); the worker imports only this module and numpy.
        context = multiprocessing.get_context("spawn")
        self._executors = [
            ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in range(processes)
        ]
        self._load = [0] * processes
        # Start the workers and load the model now, not when the first call speaks.
        self.ready: list[Future[None]] = [ex.submit(_warm_up) for ex in self._executors]

    def assign(self) -> int:
        """The least busy worker for a new call."""
        index = min(range(len(self._load)), key=self._load.__getitem__)
        self._load[index] += 1
        return index

    def release(self, index: int) -> None:
        self._load[index] -= 1

    def feed(
        self, index: int, key: str, pcm: bytes, *, skipped_bytes: int = 0, final: bool = False
    ) -> Future[list[Utterance]]:
        """Decode more 16 kHz PCM of call ``key``; the future gives the utterances it ended.

        ``skipped_bytes`` of silence go first: audio the caller sent that was not decoded
        (the workers fell behind), so that later times stay right. ``final``: the call is
        over, decode the rest and forget it.
        """
        return self._executors[index].submit(_feed, key, pcm, skipped_bytes, final)

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)


# --- in the worker process -----------------------------------------------------------------


class _Stream:
    """One call's recogniser state, inside a worker."""

    def __init__(self, decoder: Any) -> None:
        from pocketsphinx import Endpointer  # noqa: PLC0415 - optional, worker only

        self.endpointer = Endpointer(sample_rate=ASR_RATE)
        self.decoder = decoder
        self.pending = b""
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_FRAMES)
        self.utterance: list[bytes] = []
        self.utterance_bytes = 0
        self.utterance_start_s = 0.0
        self.active = False  # inside an utterance
        self.fed_bytes = 0  # endpointer input so far: the stream's clock


_streams: dict[str, _Stream] = {}
_idle_decoders: list[Any] = []


def _new_decoder() -> Any:
    from pocketsphinx import Decoder  # noqa: PLC0415 - optional, worker only

    return Decoder(samprate=ASR_RATE, loglevel="FATAL")


def _warm_up() -> None:
    if not _idle_decoders:
        _idle_decoders.append(_new_decoder())


def _feed(key: str, pcm: bytes, skipped_bytes: int, final: bool) -> list[Utterance]:
    stream = _streams.get(key)
    if stream is None:
        decoder = _idle_decoders.pop() if _idle_decoders else _new_decoder()
        stream = _streams[key] = _Stream(decoder)
    done: list[Utterance] = []
    data = stream.pending + bytes(skipped_bytes) + pcm
    endpointer = stream.endpointer
    size = endpointer.frame_bytes
    whole = len(data) - len(data) % size
    for start in range(0, whole, size):
        frame = data[start : start + size]
        stream.fed_bytes += size
        speech = endpointer.process(frame)
        if speech is None:
            if not stream.active:
                stream.preroll.append(frame)
            continue
        if not stream.active:
            stream.active = True
            # The endpointer decides a little late that speech began: the frames before its
            # window (PREROLL) often hold the first phoneme, so they go to the decoder too.
            stream.utterance = list(stream.preroll)
            stream.utterance_bytes = sum(len(f) for f in stream.utterance)
            stream.utterance_start_s = endpointer.speech_start - stream.utterance_bytes / _BPS
            stream.preroll.clear()
        stream.utterance.append(speech)
        stream.utterance_bytes += len(speech)
        if not endpointer.in_speech:
            stream.active = False
            _decode(stream, float(endpointer.speech_end), done)
        elif stream.utterance_bytes >= MAX_UTTERANCE_S * _BPS:
            _decode(stream, stream.fed_bytes / _BPS, done)  # a monologue: cut it here
            stream.utterance_start_s = stream.fed_bytes / _BPS
    stream.pending = data[whole:]
    if final:
        if stream.active:
            tail = endpointer.end_stream(stream.pending)
            if tail is not None:
                stream.utterance.append(tail)
            _decode(stream, (stream.fed_bytes + len(stream.pending)) / _BPS, done)
        del _streams[key]
        _idle_decoders.append(stream.decoder)
    return done


def _decode(stream: _Stream, end_s: float, done: list[Utterance]) -> None:
    """Decode the utterance collected so far as one batch.

    Whole-utterance decoding (rather than frame by frame as the audio comes) lets the decoder
    normalise the utterance's cepstra over all of it, which measured here turned 12 of 15
    words right into 15 of 15 on the same sentence; the text comes at the utterance's end.
    """
    audio = b"".join(stream.utterance)
    stream.utterance = []
    stream.utterance_bytes = 0
    decoder = stream.decoder
    decoder.start_utt()
    decoder.process_raw(audio, False, True)
    decoder.end_utt()
    start = stream.utterance_start_s
    hypothesis = decoder.hyp()
    text = hypothesis.hypstr.strip() if hypothesis is not None else ""
    if not text:
        return
    words = tuple(
        Word(
            _clean(seg.word),
            round(start + seg.start_frame / _DECODER_FRAMES_PER_S, 2),
            round(start + (seg.end_frame + 1) / _DECODER_FRAMES_PER_S, 2),
        )
        for seg in decoder.seg()
        if seg.word not in _FILLERS and not seg.word.startswith("[")
    )
    done.append(Utterance(round(start, 2), round(max(end_s, start), 2), text, words))


def _clean(word: str) -> str:
    """``the(2)`` (an alternative pronunciation) is the word ``the``."""
    return word.split("(", 1)[0]
