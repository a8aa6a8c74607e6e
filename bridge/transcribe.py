"""Offline speech recognition for ``--mode transcribe``: pocketsphinx in worker processes.

Why processes: pocketsphinx holds the GIL while it decodes (measured here: a thread decoding
1 s chunks stopped the event loop for 180 ms at a time), and it costs about 0.15 s of CPU per
second of speech. In a worker process it never holds the event loop's GIL, and it runs
below the loops' priority (:data:`WORKER_NICE`), so a decode takes the CPU they leave. Each
worker is a single-process executor, so the chunks of one call, always sent to the same
worker, are decoded in order.

In the worker, each call has a voice-activity endpointer (pocketsphinx's ``Endpointer``: 30 ms
frames, an utterance starts after 0.3 s mostly speech and ends after 0.3 s mostly silence) and
a decoder (reused across calls: loading the model takes ~0.3 s). Each utterance is decoded
whole when it ends (see ``_decode``) and comes back with its start and end time in the call's
audio and its words with their times.

A recogniser that fails never fails silently, nor for more than the calls it was serving: an
exception while decoding one call ends that call's transcription only (the worker forgets its
state and keeps serving the others), and a worker process that dies (killed, out of memory, a
crash in the C library) fails the calls it held and is replaced for the next ones. Every
result says how far the call's audio is *settled* (decoded, or judged not to be speech), so
that a failed call can say exactly how much of it was never decoded.

pocketsphinx is an optional dependency (``pip install 'bridge[asr]'``); it is imported only in
the workers, and :func:`check_available` tells the CLI early when it is missing.

Import rule: standard library and ``bridge.errors``; pocketsphinx in worker functions only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError

log = logging.getLogger("bridge.transcribe")

#: The rate the recogniser's acoustic model wants.
ASR_RATE = 16000
#: pocketsphinx's decoder works in 10 ms frames.
_DECODER_FRAMES_PER_S = 100
_BPS = ASR_RATE * 2  # bytes per second of 16-bit audio
#: Endpointer frames (30 ms) kept before an utterance and decoded with it (see ``_feed``).
PREROLL_FRAMES = 5
#: The endpointer decides speech/non-speech over this window (pocketsphinx's default): the
#: last window of audio it was given is not decided yet.
ENDPOINTER_WINDOW_S = 0.3
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


@dataclass(frozen=True)
class FeedResult:
    """What one batch of a call's audio gave: the utterances it ended, and how far (in bytes
    of 16 kHz audio from the call's start) everything is settled: decoded into utterances
    already returned, or judged not to be speech. Audio past it is still in the recogniser."""

    utterances: list[Utterance]
    settled_bytes: int


class RecogniserError(Exception):
    """A call's recogniser failed: its process died, or decoding raised."""


@dataclass
class AsrTotals:
    """Process-wide transcription counters, read by the metrics sampler (``counters``)."""

    failed_calls: int = 0
    not_decoded_ms: int = 0

    def counters(self) -> dict[str, float]:
        return {
            "transcription_failures": self.failed_calls,
            "transcription_not_decoded_seconds": self.not_decoded_ms / 1000,
        }


def check_available(needed_by: str) -> None:
    """Raise ``ConfigError`` with the fix when pocketsphinx is not installed; the message
    names ``needed_by`` (the setting that asked for transcription)."""
    if importlib.util.find_spec("pocketsphinx") is None:
        raise ConfigError(
            f"{needed_by} needs pocketsphinx: pip install 'bridge[asr]' "
            "(or pip install pocketsphinx)"
        )


#: How much lower than the server a recogniser process runs (``nice`` steps).
WORKER_NICE = 5


def _lower_priority() -> None:
    """In the worker: decode below the event loops' priority.

    A decode is a burst of CPU (an utterance at once), and the worker shares the machine's
    cores with event loops that must wake within a millisecond or two to keep 20 ms frames
    on time. At equal priority a loop woken behind a decode waited for the scheduler's slice
    (10-20 ms loop-lag windows in the soak, docs/reliability.md s.4). Below it, the decode
    takes what the loops leave; a recogniser that then falls 30 s behind is the overload the
    transcribe handler already counts (``MAX_BEHIND_S``: audio not decoded).
    """
    os.nice(WORKER_NICE)


class AsrPool:
    """``processes`` single-worker executors; a call sticks to one (``assign``).

    A worker process that dies is replaced when the next batch is sent to it; the calls whose
    state it held get :class:`RecogniserError` for every later batch (their audio cannot be
    decoded from the middle of an utterance), new calls go to the new process.
    """

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("need at least one ASR process")
        # spawn, not fork: forking a process that runs an event loop and threads is unsafe
        # (and deprecated from Python 3.12); the worker imports only this module and numpy.
        self._context = multiprocessing.get_context("spawn")
        self._executors = [self._new_executor() for _ in range(processes)]
        self._load = [0] * processes
        #: Calls with state in each worker (fed and not yet final).
        self._keys: list[set[str]] = [set() for _ in range(processes)]
        #: Calls whose worker died under them.
        self._lost: set[str] = set()
        self.totals = AsrTotals()
        # Start the workers and load the model now, not when the first call speaks.
        self.ready: list[Future[None]] = [ex.submit(_warm_up) for ex in self._executors]

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1, mp_context=self._context, initializer=_lower_priority
        )

    def assign(self) -> int:
        """The least busy worker for a new call."""
        index = min(range(len(self._load)), key=self._load.__getitem__)
        self._load[index] += 1
        return index

    def release(self, index: int) -> None:
        self._load[index] -= 1

    def feed(
        self, index: int, key: str, pcm: bytes, *, skipped_bytes: int = 0, final: bool = False
    ) -> Future[FeedResult]:
        """Decode more 16 kHz PCM of call ``key``; the future gives the utterances it ended.

        ``skipped_bytes`` of silence go first: audio the caller sent that was not decoded
        (the workers fell behind), so that later times stay right. ``final``: the call is
        over, decode the rest and forget it. Never raises: a failure is the future's.
        """
        if key in self._lost:
            if final:
                self._lost.discard(key)
            return _failed(RecogniserError("recogniser process died"))
        try:
            future = self._executors[index].submit(_feed, key, pcm, skipped_bytes, final)
        except BrokenProcessPool:
            self._replace(index)  # its process died since the last batch
            if key in self._lost:
                return self.feed(index, key, pcm, skipped_bytes=skipped_bytes, final=final)
            try:  # a call that had nothing there starts on the new process
                future = self._executors[index].submit(_feed, key, pcm, skipped_bytes, final)
            except RuntimeError as exc:
                return _failed(RecogniserError(f"recogniser unavailable: {exc}"))
        except RuntimeError as exc:  # shut down (the server is stopping)
            return _failed(RecogniserError(f"recogniser stopped: {exc}"))
        if final:
            self._keys[index].discard(key)
        else:
            self._keys[index].add(key)
        return future

    async def pids(self) -> list[int]:
        """The worker processes' ids, in worker order (for operators and tests)."""
        return [await asyncio.wrap_future(ex.submit(os.getpid)) for ex in self._executors]

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)

    def _replace(self, index: int) -> None:
        lost = self._keys[index]
        log.error(
            "recogniser process died; starting a new one",
            extra={"asr_worker": index, "calls_failed": len(lost)},
        )
        self._executors[index].shutdown(wait=False, cancel_futures=True)
        self._lost |= lost
        self._keys[index] = set()
        self._executors[index] = self._new_executor()
        self.ready[index] = self._executors[index].submit(_warm_up)


def _failed(exc: BaseException) -> Future[FeedResult]:
    future: Future[FeedResult] = Future()
    future.set_exception(exc)
    return future


# --- in the worker process -----------------------------------------------------------------


class _Stream:
    """One call's recogniser state, inside a worker."""

    def __init__(self, decoder: Any) -> None:
        from pocketsphinx import Endpointer  # noqa: PLC0415 - optional, worker only

        self.endpointer = Endpointer(window=ENDPOINTER_WINDOW_S, sample_rate=ASR_RATE)
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
#: Calls whose decoding raised: their later batches are ignored until their final one.
_failed_keys: set[str] = set()
_ONE_SAMPLE = bytes(2)


def _new_decoder() -> Any:
    from pocketsphinx import Decoder  # noqa: PLC0415 - optional, worker only

    return Decoder(samprate=ASR_RATE, loglevel="FATAL")


def _warm_up() -> None:
    if not _idle_decoders:
        _idle_decoders.append(_new_decoder())


def _feed(key: str, pcm: bytes, skipped_bytes: int, final: bool) -> FeedResult:
    if key in _failed_keys:
        if final:
            _failed_keys.discard(key)
        return FeedResult([], 0)
    try:
        return _feed_stream(key, pcm, skipped_bytes, final)
    except Exception:
        # Forget the call (its decoder too: its state is unknown); the others go on.
        _streams.pop(key, None)
        if not final:
            _failed_keys.add(key)
        raise


def _feed_stream(key: str, pcm: bytes, skipped_bytes: int, final: bool) -> FeedResult:
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
        end_bytes = stream.fed_bytes + len(stream.pending)
        if stream.active:
            tail = _end_stream(endpointer, stream.pending)
            if tail is not None:
                stream.utterance.append(tail)
            _decode(stream, end_bytes / _BPS, done)
        del _streams[key]
        _idle_decoders.append(stream.decoder)
        return FeedResult(done, end_bytes)
    if stream.active:
        settled = round(stream.utterance_start_s * _BPS)
    else:  # the endpointer's window and the preroll may still become speech
        undecided = round(ENDPOINTER_WINDOW_S * _BPS) + PREROLL_FRAMES * size
        settled = stream.fed_bytes - undecided
    return FeedResult(done, max(0, settled))


def _end_stream(endpointer: Any, pending: bytes) -> bytes | None:
    """The speech the endpointer still holds at the end of a call (up to its window).

    pocketsphinx's wrapper reads the first byte of the frame it is given, so a call that
    ended exactly on an endpointer frame boundary (nothing pending) made it raise instead of
    returning the end of the last utterance: give it one silent sample then, and take that
    sample back off what it returns.
    """
    if pending:
        tail: bytes | None = endpointer.end_stream(pending)
        return tail
    tail = endpointer.end_stream(_ONE_SAMPLE)
    return None if tail is None else tail[: -len(_ONE_SAMPLE)]


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
