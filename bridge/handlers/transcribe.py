"""Transcribe: write what the caller says to ``DIR/<call id>.jsonl`` with offline ASR.

The caller's frames come through an inbound tap (exactly as Vonage sent them), are resampled
to 16 kHz by the live-path resampler and sent to a recogniser process (``bridge.transcribe``)
every ``BATCH_MS``; decoding never runs on the event loop. Each utterance the recogniser ends
becomes one JSON line (``type: "utterance"``, ``start_s``/``end_s`` in the call's audio,
``text``, ``words`` with times) and one log line; a ``type: "summary"`` line ends the file.
When the call ends, what the recogniser still holds is decoded, up to the last sample.

If the recognisers fall more than ``MAX_BEHIND_S`` behind, further audio is not decoded
(counted, and replaced by silence of the same length so that later times stay right).

A recogniser failure is never silent: the first one logs an error, the call's transcription
stops there, and the summary line says ``"status": "failed"`` with the error and how many ms
of the call were never decoded (everything after the last settled point, see
``bridge.transcribe.FeedResult``); ``/metrics`` counts both. Other calls are not affected.

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.transcribe``,
``bridge.handlers.calllog``, standard library.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from bridge.audio.pcm import to_bytes, to_samples
from bridge.audio.resample import Resampler
from bridge.call import Call, Handler
from bridge.handlers.calllog import open_call_log
from bridge.transcribe import ASR_RATE, AsrPool, FeedResult, RecogniserError

log = logging.getLogger("bridge.transcribe")

#: Audio is sent to the recogniser in batches of this length (fewer, larger messages).
BATCH_MS = 200
#: Batches in flight beyond this (30 s of audio) are not decoded: the workers are overloaded.
MAX_BEHIND_S = 30
FINISH_TIMEOUT_S = 10.0
_BPS = ASR_RATE * 2  # bytes per second of 16 kHz 16-bit audio
_BATCH_BYTES = _BPS * BATCH_MS // 1000
_MAX_IN_FLIGHT = MAX_BEHIND_S * 1000 // BATCH_MS


class Transcriber:
    """One call's audio to the recogniser, and its utterances to the call's JSON lines."""

    def __init__(self, call: Call, pool: AsrPool, directory: Path, suffix: str = ".jsonl") -> None:
        self._call = call
        self._pool = pool
        self._index = pool.assign()
        self._key = f"{call.id}/{uuid.uuid4().hex}"  # unique even if two calls share an id
        self._resampler = Resampler(call.rate, ASR_RATE)
        self._pending = bytearray()
        self._in_flight = 0
        self._skipped = 0
        #: Bytes of the call's 16 kHz audio so far (sent, skipped or pending), and how far the
        #: recogniser has settled it.
        self._total_bytes = 0
        self._settled_bytes = 0
        #: (start, length) of each run of audio skipped because the workers were behind.
        self._skips: list[tuple[int, int]] = []
        self.skipped_bytes_total = 0
        self.utterances = 0
        #: Why the transcription failed (``None`` while it has not).
        self.error: str | None = None
        self.log = open_call_log(directory, call, suffix)

    def on_inbound(self, frame: bytes) -> None:
        """The inbound tap: resample, batch, send (never blocks, never decodes here)."""
        pcm = to_bytes(self._resampler.process(to_samples(frame)))
        self._total_bytes += len(pcm)
        if self.error is not None:
            return  # failed: counted as not decoded at the end
        self._pending += pcm
        if len(self._pending) >= _BATCH_BYTES:
            self._submit()

    @property
    def not_decoded_ms(self) -> int:
        """Audio of this call the recogniser never decoded (overload, failure)."""
        skipped = self.skipped_bytes_total
        if self.error is not None:
            settled = self._settled_bytes
            skipped = sum(min(n, max(0, settled - start)) for start, n in self._skips)
            skipped += self._total_bytes - settled
        return skipped * 1000 // _BPS

    async def finish(self) -> None:
        """The call ended: decode what is left, wait for the last utterances, close."""
        tail = to_bytes(self._resampler.flush())
        self._total_bytes += len(tail)
        try:
            if self.error is None:
                self._pending += tail
                final = self._submit(final=True)
                done, _ = await asyncio.wait({final}, timeout=FINISH_TIMEOUT_S)
                if not done:
                    self._fail(f"recogniser did not finish within {FINISH_TIMEOUT_S:g} s")
            else:
                # The worker forgets the call (no-op if its process died).
                self._pool.feed(self._index, self._key, b"", final=True)
        except asyncio.CancelledError:
            self._fail("stopped before the recogniser finished (server shutting down)")
            raise
        finally:
            self._pool.release(self._index)
            not_decoded_ms = self.not_decoded_ms
            totals = self._pool.totals
            totals.not_decoded_ms += not_decoded_ms
            if self.error is not None:
                totals.failed_calls += 1
            if self.log is not None:
                fields: dict[str, object] = {
                    "status": "complete" if self.error is None else "failed",
                    "utterances": self.utterances,
                    "not_decoded_ms": not_decoded_ms,
                }
                if self.error is not None:
                    fields["error"] = self.error
                self.log.write("summary", **fields)
                await self.log.aclose()

    def _submit(self, final: bool = False) -> asyncio.Future[FeedResult]:
        pcm = bytes(self._pending)
        self._pending.clear()
        if self._in_flight >= _MAX_IN_FLIGHT and not final:
            if self._skipped == 0:
                log.warning(
                    "recognisers behind by %d s: audio not decoded",
                    MAX_BEHIND_S,
                    extra={"call_id": self._call.id},
                )
            start = self._total_bytes - len(pcm)
            if self._skips and sum(self._skips[-1]) == start:
                self._skips[-1] = (self._skips[-1][0], self._skips[-1][1] + len(pcm))
            else:
                self._skips.append((start, len(pcm)))
            self._skipped += len(pcm)
            self.skipped_bytes_total += len(pcm)
            return asyncio.get_running_loop().create_future()  # never awaited
        future = self._pool.feed(
            self._index, self._key, pcm, skipped_bytes=self._skipped, final=final
        )
        self._skipped = 0
        self._in_flight += 1
        wrapped = asyncio.wrap_future(future)
        wrapped.add_done_callback(self._on_result)
        return wrapped

    def _fail(self, error: str) -> None:
        if self.error is not None:
            return
        self.error = error
        self._pending.clear()
        log.error(
            "transcription failed: %s",
            error,
            extra={"call_id": self._call.id, "settled_s": round(self._settled_bytes / _BPS, 2)},
        )

    def _on_result(self, future: asyncio.Future[FeedResult]) -> None:
        self._in_flight -= 1
        if self.error is not None or future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, BrokenProcessPool):
                self._fail("recogniser process died")
            elif isinstance(exc, RecogniserError):
                self._fail(str(exc))
            else:
                self._fail(f"recogniser failed: {type(exc).__name__}: {exc}")
            return
        result = future.result()
        self._settled_bytes = max(self._settled_bytes, result.settled_bytes)
        for utterance in result.utterances:
            self.utterances += 1
            if self.log is not None:
                self.log.write("utterance", **utterance.to_json())
            log.info(
                "utterance",
                extra={
                    "call_id": self._call.id,
                    "start_s": utterance.start_s,
                    "end_s": utterance.end_s,
                    "text": utterance.text,
                },
            )


async def _listen(call: Call) -> None:
    # The tap gets every frame; the handler itself only waits (no task wakes per frame).
    call.on_audio(_ignore)
    await call.wait_ended()


def _ignore(frame: bytes) -> None:
    pass


def transcribed(
    handler: Handler, pool: AsrPool, directory: Path, suffix: str = ".asr.jsonl"
) -> Handler:
    """``handler`` with the caller transcribed alongside (``--transcribe`` with any mode).

    The recogniser listens through an inbound tap, so the mode's own handler still gets
    every frame; its utterances go to their own file so a forward mode's upstream log and
    the local transcript never interleave.
    """

    async def transcribed_call(call: Call) -> None:
        transcriber = Transcriber(call, pool, directory, suffix)
        call.add_taps(inbound=transcriber.on_inbound)
        try:
            await handler(call)
        finally:
            await transcriber.finish()

    return transcribed_call


def transcribe(pool: AsrPool, directory: Path) -> Handler:
    """The ``--mode transcribe`` handler: listen, transcribe, send nothing back."""
    return transcribed(_listen, pool, directory, suffix=".jsonl")
