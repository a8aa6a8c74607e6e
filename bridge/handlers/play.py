"""Play: a WAV file (once) or a tone (until the caller hangs up) into each call.

The file is read once when the server starts: any integer PCM WAV, any rate, width or channel
count, mixed to mono and converted with ``resample_whole`` (soxr VHQ: the whole file is at
hand, so quality costs no delay) to each call's ``pipeline_rate``; ``Call.play`` frames and
paces it. At the end of the file a ``notify`` marker is placed; when Vonage answers, the
prompt has been heard in full (logged with the heard position). The call stays up afterwards
(play then record is a voicemail greeting), until the caller hangs up.

``--barge-in``: the caller's first DTMF digit stops playback at once: the player is
cancelled (so nothing more is queued), then ``Call.clear`` drops bridge's queue and Vonage's
buffer.

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.protocol``, ``bridge.errors``,
``bridge.units``, standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from bridge.audio.pcm import Samples, tone
from bridge.audio.resample import resample_whole
from bridge.audio.wav import read_wav
from bridge.call import Call, Handler
from bridge.errors import ConfigError
from bridge.protocol.vonage import Dtmf, Notified
from bridge.units import SUPPORTED_RATES

log = logging.getLogger("bridge.play")

#: Audio handed to ``Call.play`` at a time: small, so a barge-in leaves little to cancel.
CHUNK_MS = 100
PROMPT_DONE = "bridge:prompt-played"


@dataclass(frozen=True)
class PlaySettings:
    #: The file's audio at each supported rate (``None`` when a tone is played instead).
    prompt: dict[int, Samples] | None = None
    name: str = ""
    tone_hz: float | None = None
    barge_in: bool = False


def load_prompt(path: str | Path, source: str = "prompt") -> dict[int, Samples]:
    """Read a WAV file once and convert it to every rate a call's pipeline can have;
    an error names ``source`` (the setting that gave the path)."""
    try:
        samples, rate = read_wav(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc}") from exc
    if not len(samples):
        raise ConfigError(f"{source}: {path} holds no audio")
    return {r: resample_whole(samples, rate, r) for r in SUPPORTED_RATES}


def play(settings: PlaySettings) -> Handler:
    """The ``--mode play`` handler with its settings bound."""

    async def play_call(call: Call) -> None:
        player = asyncio.get_running_loop().create_task(_play(call, settings))
        watcher = asyncio.get_running_loop().create_task(_watch_events(call, settings, player))
        try:
            call.on_audio(_ignore)  # caller audio is not needed: no task wakes for it
            await call.wait_ended()  # the call lasts until the caller hangs up
        finally:
            for task in (player, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return play_call


async def _play(call: Call, settings: PlaySettings) -> None:
    rate = call.pipeline_rate
    chunk = rate * CHUNK_MS // 1000
    if settings.prompt is not None:
        samples = settings.prompt[rate]
        for start in range(0, len(samples), chunk):
            await call.play(samples[start : start + chunk])
        await call.flush()
        call.notify({"event": PROMPT_DONE, "file": settings.name})
        return
    assert settings.tone_hz is not None
    position = 0
    while not call.ended:
        await call.play(tone(settings.tone_hz, rate, chunk, start_sample=position))
        position += chunk


async def _watch_events(call: Call, settings: PlaySettings, player: asyncio.Task[None]) -> None:
    # Barge-in applies while the caller may still hear the prompt: the player may be done
    # (the prompt is queued in bridge or Vonage) long before the prompt's notify returns.
    barged_in = prompt_heard = False
    async for event in call.events():
        if isinstance(event, Dtmf) and settings.barge_in and not (barged_in or prompt_heard):
            barged_in = True
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
            call.clear()
            log.info(
                "barge-in",
                extra={"call_id": call.id, "digit": event.digit, "heard_ms": call.heard_ms},
            )
        elif isinstance(event, Notified) and _is_prompt_done(event.payload):
            prompt_heard = True
            log.info(
                "prompt heard",
                extra={"call_id": call.id, "file": settings.name, "heard_ms": call.heard_ms},
            )


def _ignore(frame: bytes) -> None:
    pass


def _is_prompt_done(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("event") == PROMPT_DONE
