"""OpenAI Realtime (GA), a voice agent (``--upstream-dialect openai-realtime``).

The rules below are from platform docs ("Realtime API" guide, client and server events
reference at developers.openai.com/api/reference/resources/realtime) and the official SDK's
generated types (openai-python ``src/openai/types/realtime/``), which are built from the same
OpenAPI spec:

* Endpoint ``wss://api.openai.com/v1/realtime?model=<model>``, header
  ``Authorization: Bearer <key>``; the GA interface takes no ``OpenAI-Beta`` header.
* The server sends ``session.created`` first; the client configures the session with
  ``session.update`` whose ``session.type`` is ``"realtime"`` (``session.update``: "The
  client may send this event at any time"; the server answers ``session.updated``).
  ``audio.input.format`` / ``audio.output.format`` ``{"type":"audio/pcm","rate":24000}``
  (``AudioPCM``: "Only a 24kHz sample rate is supported"; ``audio/pcmu`` and ``audio/pcma``
  are the G.711 alternatives), ``audio.input.turn_detection`` ``server_vad`` or
  ``semantic_vad``, ``audio.input.transcription`` for the caller's words,
  ``audio.output.voice``, ``output_modalities: ["audio"]``.
* Caller audio: ``{"type":"input_audio_buffer.append","audio":<base64 PCM16 LE>}``.
* Agent audio: ``response.output_audio.delta`` (``delta`` base64, ``item_id``), then
  ``response.output_audio.done``; its words ``response.output_audio_transcript.delta`` /
  ``.done``; the caller's words ``conversation.item.input_audio_transcription.delta`` /
  ``.completed`` (``transcript``). The SDK's file is still named ``response_audio_delta_event``
  and older copies say ``response.audio.delta``: that legacy name is accepted too.
* Barge-in: ``input_audio_buffer.speech_started`` (``audio_start_ms``, ``item_id``: "The
  client may want to use this event to interrupt audio playback"); the client then sends
  ``conversation.item.truncate`` with the assistant ``item_id``, ``content_index: 0`` and
  ``audio_end_ms`` ("Inclusive duration up to which audio is truncated, in milliseconds. If
  the audio_end_ms is greater than the actual audio duration, the server will respond with an
  error"), answered by ``conversation.item.truncated``.
* Errors: ``{"type":"error","error":{"type","code","message","param","event_id"}}``
  (``RealtimeError``). A bad key is not refused at the upgrade: the socket opens, an
  ``invalid_api_key`` error comes, then a close with code 3000 and reason
  ``invalid_request_error.invalid_api_key`` (seen by users, twilio-samples/
  speech-assistant-openai-realtime-api-python#4; not in the reference).
* End: close the socket; a session lasts at most 60 minutes. A new connection is a new
  session: the conversation does not survive a reconnect (``resume = False``).

Import rule: the standard library and ``bridge.services``.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from typing import Any, ClassVar

from bridge.services.base import (
    AgentAudio,
    AgentAudioDone,
    Auth,
    Dialect,
    Info,
    ServiceError,
    ServiceEvent,
    ServiceMessageError,
    ServiceSettings,
    SpeechStarted,
    Transcript,
    compact,
    json_object,
    one_line,
    reason_label,
)

DEFAULT_MODEL = "gpt-realtime"
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_VOICE = "alloy"
#: ``AudioPCM.rate``: "Always 24000".
PCM_RATE = 24000
DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a phone call. Keep your answers short and speak "
    "naturally."
)
#: Per-item state kept for this many recent items (a long call has thousands).
_ITEMS_KEPT = 64


class _Recent(OrderedDict[str, Any]):
    """A small dict that forgets its oldest entries."""

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _ITEMS_KEPT:
            self.popitem(last=False)


class OpenAIRealtime(Dialect):
    name: ClassVar[str] = "openai-realtime"
    key_env: ClassVar[str] = "OPENAI_API_KEY"
    default_url: ClassVar[str] = "wss://api.openai.com/v1/realtime"
    binary_audio: ClassVar[bool] = False
    resume: ClassVar[bool] = False
    speaks: ClassVar[bool] = True

    def __init__(self, call_rate: int, settings: ServiceSettings | None = None) -> None:
        super().__init__(call_rate, settings)
        self.output_rate = PCM_RATE
        self._caller_started_ms = _Recent()
        self._caller_stopped_ms = _Recent()
        self._partial = _Recent()

    @classmethod
    def input_rate(cls, call_rate: int) -> int:
        return PCM_RATE

    def query(self) -> list[tuple[str, str]]:
        return [("model", self.settings.model or DEFAULT_MODEL)]

    @classmethod
    def auth(cls, key: str) -> Auth:
        return Auth(headers=(("Authorization", f"Bearer {key}"),))

    def session(self) -> dict[str, Any]:
        """The ``session`` object of ``session.update``."""
        pcm = {"type": "audio/pcm", "rate": PCM_RATE}
        transcription: dict[str, Any] = {"model": TRANSCRIPTION_MODEL}
        if self.settings.language:
            transcription["language"] = self.settings.language
        return {
            "type": "realtime",
            "instructions": self.settings.instructions or DEFAULT_INSTRUCTIONS,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": pcm,
                    "turn_detection": {"type": self.settings.turn_detection},
                    "transcription": transcription,
                },
                "output": {"format": pcm, "voice": self.settings.voice or DEFAULT_VOICE},
            },
        }

    def opening(self) -> list[str]:
        super().opening()
        return [compact({"type": "session.update", "session": self.session()})]

    def encode(self, pcm: bytes) -> str:
        audio = base64.b64encode(pcm).decode("ascii")
        return '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'

    def truncate(self, item_id: str, audio_end_ms: int) -> str:
        """Tell the model how much of its answer the caller heard."""
        return compact(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": max(0, int(audio_end_ms)),
            }
        )

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        obj = json_object(message)
        kind = obj.get("type")
        item = obj.get("item_id")
        item_id = item if isinstance(item, str) else ""
        if kind in ("response.output_audio.delta", "response.audio.delta"):
            return [AgentAudio(_b64(obj.get("delta")), item_id)]
        if kind in ("response.output_audio.done", "response.audio.done"):
            return [AgentAudioDone(item_id)]
        if kind == "input_audio_buffer.speech_started":
            self._caller_started_ms.put(item_id, obj.get("audio_start_ms"))
            return [SpeechStarted(item_id or None)]
        if kind == "input_audio_buffer.speech_stopped":
            self._caller_stopped_ms.put(item_id, obj.get("audio_end_ms"))
            return []
        if kind in (
            "response.output_audio_transcript.delta",
            "response.audio_transcript.delta",
            "conversation.item.input_audio_transcription.delta",
        ):
            speaker = "caller" if kind.startswith("conversation.") else "agent"
            text = self._partial.get(item_id, "") + str(obj.get("delta") or "")
            self._partial.put(item_id, text)
            return [self._transcript(False, text, speaker, item_id)] if text.strip() else []
        if kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            self._partial.pop(item_id, None)
            return [self._transcript(True, str(obj.get("transcript") or ""), "agent", item_id)]
        if kind == "conversation.item.input_audio_transcription.completed":
            self._partial.pop(item_id, None)
            return [self._transcript(True, str(obj.get("transcript") or ""), "caller", item_id)]
        if kind == "error":
            error = obj.get("error")
            error = error if isinstance(error, dict) else {}
            code = error.get("code") or error.get("type") or "error"
            return [ServiceError(reason_label(code), one_line(str(error.get("message", ""))))]
        if kind in ("session.created", "session.updated"):
            session = obj.get("session")
            sid = session.get("id") if isinstance(session, dict) else None
            return [Info(str(kind), {"session": sid})]
        if kind == "conversation.item.truncated":
            return [Info("agent audio truncated", {"audio_end_ms": obj.get("audio_end_ms")})]
        return []

    def _transcript(self, final: bool, text: str, speaker: str, item_id: str) -> Transcript:
        start = end = None
        if speaker == "caller":
            started = self._caller_started_ms.get(item_id)
            stopped = self._caller_stopped_ms.get(item_id)
            start = started / 1000 if isinstance(started, int | float) else None
            end = stopped / 1000 if isinstance(stopped, int | float) else None
        if speaker == "caller":
            return Transcript(final, text.strip(), "caller", start, end, item_id or None)
        return Transcript(final, text.strip(), "agent", None, None, item_id or None)

    def on_close(self, code: int | None, reason: str) -> ServiceError | None:
        if code is None or code in (1000, 1001, 1005):
            return None
        label = reason.rsplit(".", 1)[-1] if reason else f"close {code}"
        return ServiceError(reason_label(label), one_line(reason) or f"closed with {code}")


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ServiceMessageError("audio delta without base64 text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceMessageError("audio delta is not valid base64") from exc
    if len(data) % 2:
        raise ServiceMessageError(f"audio delta of {len(data)} bytes is not 16-bit PCM")
    return data
