"""Transcribe: write what the caller says to ``DIR/<call id>.jsonl`` with offline ASR.

The caller's frames come through an inbound tap (exactly as Vonage sent them), are resampled
to 16 kHz by the live-path resampler and sent to a recogniser process (``bridge.transcribe``)
every ``BATCH_MS``; decoding never runs on the event loop. Each utterance the recogniser ends
becomes one JSON line (``type: "utterance"``, ``start_s``/``end_s`` in the call's audio,
``text``, ``words`` with times) and one log line; a ``type: "summary"`` line ends the file.

If the recognisers fall more than ``MAX_BEHIND_S`` behind, further audio is not decoded
(counted, and replaced by silence of the same length so that later times stay right).

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.transcribe``,
``bridge.handlers.calllog``, standard library.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from bridge.audio.pcm import to_bytes, to_samples
from bridge.audio.resample import Resampler
from bridge.call import Call, Handler
from bridge.handlers.calllog import open_call_log
from bridge.transcribe import ASR_RATE, AsrPool, Utterance

log = logging.getLogger("bridge.transcribe")

#: Audio is sent to the recogniser in batches of this length (fewer, larger messages).
BATCH_MS = 200
#: Batches in flight beyond this (30 s of audio) are not decoded: the workers are overloaded.
MAX_BEHIND_S = 30
FINISH_TIMEOUT_S = 10.0
_BATCH_BYTES = ASR_RATE * 2 * BATCH_MS // 1000
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
        self._errors = 0
        self.skipped_bytes_total = 0
        self.utterances = 0
        self.log = open_call_log(directory, call, suffix)

    def on_inbound(self, frame: bytes) -> None:
        """The inbound tap: resample, batch, send (never blocks, never decodes here)."""
        self._pending += to_bytes(self._resampler.process(to_samples(frame)))
        if len(self._pending) >= _BATCH_BYTES:
            self._submit()

    async def finish(self) -> None:
        """The call ended: decode what is left, wait for the last utterances, close."""
        self._pending += to_bytes(self._resampler.flush())
        try:
            final = self._submit(final=True)
            done, _ = await asyncio.wait({final}, timeout=FINISH_TIMEOUT_S)
            if not done:
                log.error("transcription did not finish in time", extra={"call_id": self._call.id})
        except RuntimeError as exc:  # the pool was shut down under us (server stopping)
            log.error(
                "transcription did not finish", extra={"call_id": self._call.id, "error": str(exc)}
            )
        finally:
            self._pool.release(self._index)
            if self.log is not None:
                self.log.write(
                    "summary",
                    utterances=self.utterances,
                    not_decoded_ms=self.skipped_bytes_total * 1000 // (2 * ASR_RATE),
                )
                self.log.close()

    def _submit(self, final: bool = False) -> asyncio.Future[list[Utterance]]:
        pcm = bytes(self._pending)
        self._pending.clear()
        if self._in_flight >= _MAX_IN_FLIGHT and not final:
            if self._skipped == 0:
                log.warning(
                    "recognisers behind by %d s: audio not decoded",
                    MAX_BEHIND_S,
                    extra={"call_id": self._call.id},
                )
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

    def _on_result(self, future: asyncio.Future[list[Utterance]]) -> None:
        self._in_flight -= 1
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._errors += 1
            if self._errors == 1:
                log.error("recogniser failed: %s", exc, extra={"call_id": self._call.id})
            return
        for utterance in future.result():
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
