"""Forward mode to a speech service: ``--upstream-dialect deepgram|assemblyai|openai-realtime|
elevenlabs|speechmatics``.

Written with the public handler API, the upstream link and a dialect (``bridge.services``):

* caller audio (``call.on_audio``, synchronously from the socket's read) is resampled to the
  rate the service wants and re-chunked to its chunk length by bridge's own pipeline, then
  handed to the :class:`~bridge.upstream.UpstreamLink`, which encodes it as the dialect says
  when it sends it, keeps the connection alive, replays what a reconnect lost (or starts a
  new session, for a voice agent) and ends the stream cleanly at hang-up;
* what the service sends is parsed by the dialect into normalised events: transcripts go to
  ``DIR/<call id>.jsonl`` (one schema for every service, below), finals to the log and to
  ``--transcript-url``; the service's errors to the log in its own words and to ``/metrics``
  by reason;
* a voice agent's audio is resampled to the call and played through the normal paced path
  (:class:`~bridge.handlers.forward.Player`); when the service hears the caller start
  speaking over it (barge-in) bridge drops its queue and Vonage's (``clear``) and tells the
  service how much of each answer the caller actually heard (``bridge.heard``).

A transcript line: ``call_id``, ``type`` ("transcript"), ``source`` (the dialect),
``speaker`` (``caller`` or ``agent``), ``final``, ``text``, ``start_s``/``end_s`` (seconds
of the call's audio, when the service gives times), ``t`` (seconds into the call when it
arrived), ``at`` (UTC).

API keys go into the upgrade request only: never into a log line, an error, a metric or a
transcript (errors from the connection layer are scrubbed of every secret before logging).

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.config``, ``bridge.errors``,
``bridge.handlers``, ``bridge.protocol``, ``bridge.services``, ``bridge.transcript_post``,
``bridge.units``, ``bridge.upstream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.audio.framing import ByteFramer, SampleFramer
from bridge.audio.pcm import to_bytes, to_samples
from bridge.audio.resample import Resampler
from bridge.call import Call, Handler
from bridge.config import ModeSettings
from bridge.errors import ConfigError
from bridge.handlers.calllog import CallLog, open_call_log
from bridge.handlers.forward import UPSTREAM_UNAVAILABLE, Player
from bridge.protocol.vonage import Dtmf
from bridge.services import DIALECTS, Dialect, ServiceSettings, merge_query
from bridge.services.base import (
    AgentAudio,
    AgentAudioDone,
    Ended,
    Info,
    Ready,
    ServiceError,
    ServiceMessageError,
    SpeechStarted,
    Transcript,
)
from bridge.services.openai_realtime import OpenAIRealtime
from bridge.transcript_post import TranscriptPoster
from bridge.units import BYTES_PER_SAMPLE, SECOND
from bridge.upstream import Item, UpstreamLink, UpstreamOptions

log = logging.getLogger("bridge.speech")

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Distinct error reasons counted per call (a service inventing new ones cannot grow memory).
MAX_ERROR_REASONS = 32
#: Agent items remembered for barge-in (start position, length): the recent ones only.
MAX_ITEMS = 32


# --- settings resolved once, at startup -------------------------------------------------------


def expand_env(value: str, environ: Mapping[str, str], source: str) -> str:
    """``${NAME}`` references in ``value`` replaced from ``environ``; a missing one is an
    error naming the variable (never the value around it: it may hold a secret)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"{source} refers to ${{{name}}}, which is not set")
        return environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def upstream_headers(
    config: ModeSettings, environ: Mapping[str, str]
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``--upstream-header`` items as (name, value) pairs with ``${NAME}`` expanded, and the
    expanded values (secrets to keep out of logs)."""
    source = config.option("upstream_header")
    headers: list[tuple[str, str]] = []
    for item in config.upstream_header:
        name, _, value = item.partition(":")
        expanded = expand_env(value.strip(), environ, source)
        headers.append((name.strip(), expanded))
    return tuple(headers), tuple(value for _, value in headers if value)


@dataclass(frozen=True)
class ServiceSetup:
    """Everything a named dialect's calls share, resolved (and checked) at startup."""

    dialect: type[Dialect]
    settings: ServiceSettings
    #: ``--upstream`` or the service's endpoint; each call merges its own query in.
    base_url: str
    options: UpstreamOptions = field(repr=False)
    #: Values that must never be logged: the key, expanded header values.
    secrets: tuple[str, ...] = field(repr=False, default=())
    upstream_rate: int | None = None
    log_dir: Path | None = None
    poster: TranscriptPoster | None = None


def resolve_service(config: ModeSettings, environ: Mapping[str, str] | None = None) -> ServiceSetup:
    """The setup for ``config.upstream_dialect`` (not ``raw``), or ``ConfigError`` as one line:
    a missing key names the variable to set."""
    env = os.environ if environ is None else environ
    dialect = DIALECTS[config.upstream_dialect]
    user_headers, secrets = upstream_headers(config, env)
    auth_given = {name.lower() for name, _ in user_headers}
    key_env = config.upstream_key_env or dialect.key_env
    key = env.get(key_env, "")
    auth = dialect.auth(key or "-")
    if not key and not {name.lower() for name, _ in auth.headers} <= auth_given:
        raise ConfigError(
            f"{config.option('upstream_dialect', dialect.name)} needs an API key: set "
            f"{key_env} (or name another variable with {config.option('upstream_key_env')})"
        )
    if key:
        secrets = (*secrets, key)
    # The user's headers win over the dialect's (a temporary token, a proxy's own auth).
    headers = tuple(h for h in auth.headers if h[0].lower() not in auth_given) + user_headers
    subprotocols = config.upstream_subprotocol or auth.subprotocols
    instructions = config.instructions
    if instructions is not None and instructions.startswith("@"):
        path = Path(instructions[1:])
        try:
            instructions = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{config.option('instructions')}: cannot read {path}: {exc.strerror or exc}"
            ) from exc
    options = UpstreamOptions(
        url=config.upstream or dialect.default_url,
        buffer_ms=config.upstream_buffer_ms,
        replay_max_ms=max(config.upstream_replay_max_ms, dialect.chunk_ms),
        max_attempts=config.upstream_max_attempts,
        backoff_ms=config.upstream_backoff_ms,
        timeout_s=config.upstream_timeout_s,
        headers=headers,
        subprotocols=tuple(subprotocols),
        chunk_ms=dialect.chunk_ms,
        end_timeout_s=config.upstream_end_timeout_s,
    )
    return ServiceSetup(
        dialect=dialect,
        settings=ServiceSettings(
            model=config.upstream_model,
            language=config.upstream_language,
            instructions=instructions,
            voice=config.voice,
            turn_detection=config.turn_detection,
        ),
        base_url=options.url,
        options=options,
        secrets=tuple(s for s in secrets if s),
        upstream_rate=config.upstream_rate,
        log_dir=Path(config.transcripts) if config.transcripts else None,
        poster=TranscriptPoster(config.transcript_url) if config.transcript_url else None,
    )


def speech(setup: ServiceSetup) -> Handler:
    """The handler for a named dialect, with its setup bound."""

    async def speech_call(call: Call) -> None:
        await ServiceCall(call, setup).run()

    return speech_call


# --- one call ---------------------------------------------------------------------------------


@dataclass
class _AgentItem:
    """One answer of a voice agent, on the caller's timeline (samples at the call's rate)."""

    start: int | None = None  # where its audio starts; None until the player reaches it
    samples: int = 0  # audio of it handed to the player, at the pipeline rate


class ServiceCall:
    """One call's stream to a speech service (see the module doc)."""

    def __init__(self, call: Call, setup: ServiceSetup) -> None:
        self.call = call
        self.setup = setup
        dialect = setup.dialect(setup.upstream_rate or call.rate, setup.settings)
        self.dialect = dialect
        self.source = dialect.name
        rate = dialect.rate
        chunk_samples = rate * dialect.chunk_ms // 1000
        self._same_rate = call.pipeline_rate == rate
        self._to_upstream = Resampler(call.pipeline_rate, rate)
        self._sample_framer = SampleFramer(chunk_samples)
        self._byte_framer = ByteFramer(chunk_samples * BYTES_PER_SAMPLE)
        self._whole_frames = dialect.chunk_ms == 20
        self._secrets = setup.secrets
        self._log: CallLog | None = open_call_log(setup.log_dir, call)
        self._player = Player(call) if dialect.speaks else None
        self._from_upstream = (
            Resampler(dialect.output_rate, call.pipeline_rate) if dialect.speaks else None
        )
        self._items: OrderedDict[str, _AgentItem] = OrderedDict()
        self._cut: OrderedDict[str, None] = OrderedDict()  # items truncated by a barge-in
        # The service reported an error on this connection: the close that follows is the
        # same incident (AssemblyAI, OpenAI, ElevenLabs send an error, then close).
        self._error_reported = False
        self.barge_ins = 0
        self.link = UpstreamLink(
            replace(setup.options, url=merge_query(setup.base_url, dialect.query())),
            on_message=self._on_message,
            on_give_up=self._on_give_up,
            call_id=call.id,
            wire=dialect,
            on_close=self._on_close,
            redact=self._scrub,
            on_refused=self._on_refused,
        )
        self.link.stats.source = dialect.name
        call.upstream_stats = self.link.stats

    async def run(self) -> None:
        call = self.call
        self.link.start()
        if self._player is not None:
            self._player.start()
        events = asyncio.get_running_loop().create_task(self._watch_events())
        log.info(
            "upstream service",
            extra={
                "call_id": call.id,
                "source": self.source,
                "rate": self.dialect.rate,
                "chunk_ms": self.dialect.chunk_ms,
            },
        )
        try:
            call.on_audio(self._on_caller_frame)
            await call.wait_ended()
            self._flush_caller_audio()
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
            await self.link.close()
            if self._player is not None:
                self._player.stop()
            if self._log is not None:
                self._log.close()
            log.info(
                "upstream link closed",
                extra={
                    "call_id": call.id,
                    "source": self.source,
                    "barge_ins": self.barge_ins,
                    **self.link.stats.summary(),
                },
            )

    # --- caller to service ------------------------------------------------------------------

    def _on_caller_frame(self, frame: bytes) -> None:
        if self._same_rate:
            if self._whole_frames:
                self.link.send_audio(frame)  # the caller's bytes as they are
                return
            for chunk in self._byte_framer.push(frame):
                self.link.send_audio(chunk)
            return
        for piece in self._sample_framer.push(self._to_upstream.process(to_samples(frame))):
            self.link.send_audio(to_bytes(piece))

    def _flush_caller_audio(self) -> None:
        """The call ended: the last partial chunk goes up zero-padded to a whole chunk (a
        service may refuse a short one, e.g. AssemblyAI's 50 ms minimum)."""
        if self._same_rate:
            last = self._byte_framer.flush()
            if last is not None:
                self.link.send_audio(last)
            return
        for piece in self._sample_framer.push(self._to_upstream.flush()):
            self.link.send_audio(to_bytes(piece))
        tail = self._sample_framer.flush()
        if tail is not None:
            self.link.send_audio(to_bytes(tail))

    async def _watch_events(self) -> None:
        """Vonage's events: DTMF is logged (services take no DTMF); markers and cleared
        answers only feed the call's own play-out model."""
        async for event in self.call.events():
            if isinstance(event, Dtmf):
                log.info("dtmf", extra={"call_id": self.call.id, "digit": event.digit})

    # --- service to call --------------------------------------------------------------------

    def _on_message(self, item: Item) -> None:
        try:
            events = self.dialect.parse(item)
        except ServiceMessageError as exc:
            log.warning(
                "upstream message not understood",
                extra={"call_id": self.call.id, "source": self.source, "error": str(exc)},
            )
            return
        for event in events:
            if isinstance(event, AgentAudio):
                self._agent_audio(event)
            elif isinstance(event, Transcript):
                self._transcript(event)
            elif isinstance(event, SpeechStarted):
                if self._player is not None:
                    self._barge_in()
            elif isinstance(event, Ready):
                self.link.ready()
            elif isinstance(event, Ended):
                self.link.ended()
            elif isinstance(event, ServiceError):
                self._error_reported = True
                self._service_error(event)
            elif isinstance(event, AgentAudioDone):
                pass
            elif isinstance(event, Info):
                log.info(
                    event.what,
                    extra={"call_id": self.call.id, "source": self.source, **event.detail},
                )

    def _transcript(self, event: Transcript) -> None:
        offset_s = self.link.connection_offset_ms / 1000
        line: dict[str, Any] = {
            "source": self.source,
            "speaker": event.speaker,
            "final": event.final,
            "text": event.text,
        }
        if event.start_s is not None:
            line["start_s"] = round(event.start_s + offset_s, 3)
        if event.end_s is not None:
            line["end_s"] = round(event.end_s + offset_s, 3)
        if self._log is not None:
            self._log.write("transcript", **line)
        if not event.final:
            return
        log.info(
            "transcript",
            extra={"call_id": self.call.id, "speaker": event.speaker, "text": event.text},
        )
        poster = self.setup.poster
        if poster is not None:
            call = self.call
            poster.post(
                {
                    "call_id": call.id,
                    **line,
                    "t": round((call.clock.now_ns() - call.start_ns) / SECOND, 3),
                }
            )

    def _service_error(self, event: ServiceError) -> None:
        errors = self.link.stats.service_errors
        reason = event.reason
        if reason not in errors and len(errors) >= MAX_ERROR_REASONS:
            reason = "other"
        errors[reason] = errors.get(reason, 0) + 1
        log.warning(
            "upstream service error",
            extra={
                "call_id": self.call.id,
                "source": self.source,
                "reason": event.reason,
                "error": self._scrub(event.message),
            },
        )

    def _on_close(self, code: int | None, reason: str) -> None:
        error = self.dialect.on_close(code, reason)
        reported, self._error_reported = self._error_reported, False
        if error is not None and not reported:
            self._service_error(error)

    def _on_refused(self, status: int, words: str) -> None:
        self._service_error(ServiceError(f"http {status}", words or f"HTTP {status}"))

    def _on_give_up(self, reason: str) -> None:
        self.call.hangup(UPSTREAM_UNAVAILABLE, "upstream unavailable")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # --- a voice agent ------------------------------------------------------------------------

    def _agent_audio(self, event: AgentAudio) -> None:
        player, resampler = self._player, self._from_upstream
        if player is None or resampler is None or event.item_id in self._cut:
            return  # audio of an answer the caller interrupted: never played
        item = self._items.get(event.item_id)
        if item is None:
            item = _AgentItem()
            self._items[event.item_id] = item
            while len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)
            player.put_hook(lambda: self._item_started(event.item_id))
        samples = resampler.process(to_samples(event.pcm))
        item.samples += len(samples)
        player.put_audio(samples)

    def _item_started(self, item_id: str) -> None:
        """The player reached this answer's first audio: note where it starts for the caller,
        and place a marker there (Vonage's answer calibrates the heard position)."""
        item = self._items.get(item_id)
        if item is None:
            return
        item.start = self.call.outbound_samples
        self.call.notify({"bridge": "agent-audio", "item": item_id})

    def _barge_in(self) -> None:
        """The caller spoke over the agent: stop its audio and say how much was heard."""
        call, player = self.call, self._player
        assert player is not None and isinstance(self.dialect, OpenAIRealtime)
        heard = call.heard_samples
        pending = player.queued_samples > 0 or call.outbound_samples > heard
        if not pending:
            return  # the caller heard every answer to the end: nothing to cut
        self.barge_ins += 1
        ratio = call.rate / call.pipeline_rate
        truncated = []
        for item_id, item in list(self._items.items()):
            length = round(item.samples * ratio)
            if item.start is not None and heard >= item.start + length:
                continue  # heard in full
            heard_in_item = 0 if item.start is None else max(0, heard - item.start)
            audio_end_ms = min(heard_in_item, length) * 1000 // call.rate
            self.link.send_text(self.dialect.truncate(item_id, audio_end_ms))
            truncated.append((item_id, audio_end_ms))
            self._cut[item_id] = None
            del self._items[item_id]
        while len(self._cut) > MAX_ITEMS:
            self._cut.popitem(last=False)
        if self._from_upstream is not None:
            self._from_upstream.reset()
        player.clear()
        log.info(
            "barge-in: agent audio cleared",
            extra={
                "call_id": call.id,
                "heard_ms": [ms for _, ms in truncated],
                "items": [item_id for item_id, _ in truncated],
            },
        )
