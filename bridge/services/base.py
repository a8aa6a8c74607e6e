"""What every upstream dialect is: a sans-I/O translator between one call and one service.

A dialect object belongs to one call. bridge's upstream link (``bridge.upstream``) asks it for
the messages to send (``opening`` on every new connection, ``encode`` per chunk of caller
audio, ``keepalive`` while no audio flows, ``closing`` at the end) and the call's handler
(``bridge.handlers.speech``) gives it every message the service sends (``parse``), getting
back :data:`ServiceEvent` values: transcripts in one shape whatever the service, the agent's
audio, the cue to stop it (barge-in), the readiness and end signals the link waits for, and
the service's errors in its own words. No asyncio, no sockets, no clock: everything here is
a function of the bytes in and the dialect's own counters, so the unit tests drive it alone.

Each dialect states, as class attributes, what the service wants from bridge's pipeline: the
audio rate (``rate``, resampled by bridge), the chunk length (``chunk_ms``, re-chunked by
bridge), binary or text audio, how often to keep the connection alive, whether to wait for
a ready message before sending audio, and whether a reconnect may resume the stream (the
transcription services: a new connection with the setup sent again, and the caller audio the
old one did not confirm replayed) or starts a new session (a voice agent's conversation).

Import rule: the standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

Speaker = Literal["caller", "agent"]
TurnDetection = Literal["server_vad", "semantic_vad"]
#: ``--upstream-dialect``: bridge's own protocol, then one per service module.
DialectName = Literal[
    "raw", "deepgram", "assemblyai", "openai-realtime", "elevenlabs", "speechmatics"
]


class ServiceMessageError(ValueError):
    """A message from the service that is not what its documentation describes."""


@dataclass(frozen=True)
class ServiceSettings:
    """What a user may choose for a named dialect (``bridge serve`` flags); ``None``: the
    dialect's documented default."""

    model: str | None = None
    language: str | None = None
    #: openai-realtime: the system instructions, ``--instructions TEXT|@FILE`` already read.
    instructions: str | None = None
    voice: str | None = None
    turn_detection: TurnDetection = "server_vad"


@dataclass(frozen=True, slots=True)
class Transcript:
    """A recognised piece of speech, normalised. Times are seconds from the start of the audio
    on the *current connection* (the handler adds where that connection started in the call);
    ``None`` when the service gives none."""

    final: bool
    text: str
    speaker: Speaker = "caller"
    start_s: float | None = None
    end_s: float | None = None
    #: The service's own identifier for the utterance, when it has one (OpenAI's item id).
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """The service is ready for audio (dialects with ``wait_ready``)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The service has sent everything it will send after ``closing``: the call may close."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The service heard the caller start speaking. For a voice agent this is barge-in: the
    agent's audio must stop at the caller (``item_id`` is the caller's new item)."""

    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """A piece of the agent's voice: 16-bit PCM at the dialect's ``output_rate``."""

    pcm: bytes
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentAudioDone:
    item_id: str


@dataclass(frozen=True, slots=True)
class ServiceError:
    """The service reported a problem; ``reason`` is its short code (a metrics label),
    ``message`` its own words."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Info:
    """Something worth one log line (session ids, warnings), never a transcript."""

    what: str
    detail: dict[str, Any] = field(default_factory=dict)


ServiceEvent = (
    Transcript | Ready | Ended | SpeechStarted | AgentAudio | AgentAudioDone | ServiceError | Info
)


@dataclass(frozen=True)
class Auth:
    """How a key goes into the upgrade request: headers and/or subprotocols."""

    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()


class Dialect:
    """One call's translator for one service (see the module doc). Subclasses set the class
    attributes and override what their service needs."""

    #: ``--upstream-dialect`` name.
    name: ClassVar[str]
    #: The environment variable the service's own tools read the key from.
    key_env: ClassVar[str]
    #: The documented endpoint, used when ``--upstream`` is not given.
    default_url: ClassVar[str]
    #: Audio is sent as binary frames (else as JSON text built by :meth:`encode`).
    binary_audio: ClassVar[bool] = True
    #: Length of each audio message the service wants.
    chunk_ms: ClassVar[int] = 20
    #: Send :meth:`keepalive` when nothing was sent for this long (``None``: never).
    keepalive_s: ClassVar[float | None] = None
    #: Hold audio until :class:`Ready` comes back on each connection.
    wait_ready: ClassVar[bool] = False
    #: A reconnect resumes the stream (setup again, unconfirmed audio replayed); ``False``:
    #: a reconnect is a new session and audio from before it is dropped.
    resume: ClassVar[bool] = True
    #: The service talks back (a voice agent): its audio is played into the call.
    speaks: ClassVar[bool] = False

    def __init__(self, call_rate: int, settings: ServiceSettings | None = None) -> None:
        self.call_rate = call_rate
        self.settings = settings or ServiceSettings()
        #: The rate of the audio sent to the service.
        self.rate = self.input_rate(call_rate)
        #: The rate of :class:`AgentAudio` (voice agents).
        self.output_rate = self.rate
        self.closing_sent = False

    # --- what the link asks -----------------------------------------------------------------

    @classmethod
    def input_rate(cls, call_rate: int) -> int:
        """The rate to send: the call's own, unless the service needs another."""
        return call_rate

    def query(self) -> list[tuple[str, str]]:
        """Query parameters the endpoint needs (merged into ``--upstream``, user's win)."""
        return []

    @classmethod
    def auth(cls, key: str) -> Auth:
        raise NotImplementedError

    def opening(self) -> list[str]:
        """Text messages to send first on every new connection (resets per-connection state)."""
        self.closing_sent = False
        return []

    def encode(self, pcm: bytes) -> bytes | str:
        """One chunk of caller audio (16-bit PCM at :attr:`rate`) as the service wants it."""
        return pcm

    def keepalive(self) -> str | None:
        return None

    def closing(self) -> str | None:
        """The message that makes the service flush its last result (``None``: just close)."""
        self.closing_sent = True
        return None

    # --- what the service sends ---------------------------------------------------------------

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        raise NotImplementedError

    def on_close(self, code: int | None, reason: str) -> ServiceError | None:
        """The service closed the connection: a :class:`ServiceError` if that was one."""
        if code is None or code in (1000, 1001) or (code == 1005 and self.closing_sent):
            return None
        return ServiceError(reason=f"close {code}", message=reason or f"closed with {code}")


# --- helpers shared by the dialects ------------------------------------------------------------


def json_object(message: bytes | str) -> dict[str, Any]:
    """A JSON object from the service, or :class:`ServiceMessageError`."""
    if isinstance(message, bytes):
        raise ServiceMessageError(f"unexpected binary message ({len(message)} bytes)")
    try:
        value = json.loads(message)
    except (ValueError, RecursionError) as exc:
        # RecursionError: arrays nested a few thousand deep ("[[[[..."), the service's fault.
        raise ServiceMessageError(f"not JSON: {message[:80]!r}") from exc
    if not isinstance(value, dict):
        raise ServiceMessageError(f"not a JSON object: {message[:80]!r}")
    return value


def compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def merge_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` added; a key already in ``url``'s query keeps the user's value."""
    parts = urlsplit(url)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    given = {key for key, _ in existing}
    merged = existing + [(key, value) for key, value in params if key not in given]
    return urlunsplit(parts._replace(query=urlencode(merged)))


def one_line(text: str, limit: int = 300) -> str:
    """The service's words for a log line: one line, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def reason_label(value: Any) -> str:
    """A short, bounded metrics label from a service's error code."""
    text = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in str(value))
    return text[:48] or "unknown"
