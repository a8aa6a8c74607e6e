"""ElevenLabs realtime speech-to-text, Scribe (``--upstream-dialect elevenlabs``).

The rules below are from elevenlabs.io/docs ("Speech to Text realtime": server-side
streaming, "Transcripts and commit strategies", "Event reference") and the official Python
SDK (elevenlabs-python ``src/elevenlabs/realtime/``), which spells out the wire format:

* Endpoint ``wss://api.elevenlabs.io/v1/speech-to-text/realtime`` with query ``model_id``
  (``scribe_v2_realtime``), ``audio_format`` (``pcm_8000`` ... ``pcm_48000``, ``ulaw_8000``),
  ``commit_strategy`` (``manual``, the default, or ``vad``), ``include_timestamps``,
  ``language_code`` (``scribe.py`` ``_build_websocket_url``). Auth: header ``xi-api-key``.
* Audio: text ``{"message_type":"input_audio_chunk","audio_base_64":...,"commit":false,
  "sample_rate":N}`` (``connection.py`` ``send``).
* Results: ``session_started`` first; ``partial_transcript {text}`` (interim);
  ``committed_transcript {text}`` after each commit, followed by
  ``committed_transcript_with_timestamps {text, words:[{text,start,end,type}]}`` when
  ``include_timestamps=true`` (seconds). bridge asks for timestamps and takes the latter as
  the final result (one final per commit).
* Commits: "For microphone input, always set CommitStrategy.VAD - without it, committed
  transcripts will never fire" (commit strategies): a phone call is live input, so bridge uses
  ``vad``. At the end of a call bridge commits what is left, as the SDK's ``commit()`` does
  (an empty ``input_audio_chunk`` with ``commit: true``), and waits (bounded) for that last
  committed transcript before closing with 1000.
* Errors: a message whose ``message_type`` names the error (``auth_error``, ``input_error``,
  ``quota_exceeded``, ``chunk_size_exceeded``, ...) with an ``error`` text (SDK
  ``RealtimeEvents``; the event reference also shows ``{"message_type":"error"}``).
* No keep-alive message is documented.

Import rule: the standard library and ``bridge.services``.
"""

from __future__ import annotations

import base64
from typing import ClassVar

from bridge.services.base import (
    Auth,
    Dialect,
    Ended,
    Info,
    ServiceError,
    ServiceEvent,
    Transcript,
    compact,
    json_object,
    one_line,
    reason_label,
    seconds,
)

DEFAULT_MODEL = "scribe_v2_realtime"
#: Error ``message_type`` values (SDK ``RealtimeEvents``).
ERROR_TYPES = frozenset(
    {
        "error",
        "auth_error",
        "quota_exceeded",
        "commit_throttled",
        "transcriber_error",
        "unaccepted_terms_error",
        "rate_limited",
        "input_error",
        "queue_overflow",
        "resource_exhausted",
        "session_time_limit_exceeded",
        "chunk_size_exceeded",
        "insufficient_audio_activity",
    }
)


class ElevenLabs(Dialect):
    name: ClassVar[str] = "elevenlabs"
    key_env: ClassVar[str] = "ELEVENLABS_API_KEY"
    default_url: ClassVar[str] = "wss://api.elevenlabs.io/v1/speech-to-text/realtime"
    binary_audio: ClassVar[bool] = False

    def query(self) -> list[tuple[str, str]]:
        params = [
            ("model_id", self.settings.model or DEFAULT_MODEL),
            ("audio_format", f"pcm_{self.rate}"),
            ("commit_strategy", "vad"),
            ("include_timestamps", "true"),
        ]
        if self.settings.language:
            params.append(("language_code", self.settings.language))
        return params

    @classmethod
    def auth(cls, key: str) -> Auth:
        return Auth(headers=(("xi-api-key", key),))

    def encode(self, pcm: bytes) -> str:
        audio = base64.b64encode(pcm).decode("ascii")
        return (
            '{"message_type":"input_audio_chunk","audio_base_64":"'
            + audio
            + f'","commit":false,"sample_rate":{self.rate}}}'
        )

    def closing(self) -> str:
        super().closing()
        return compact(
            {
                "message_type": "input_audio_chunk",
                "audio_base_64": "",
                "commit": True,
                "sample_rate": self.rate,
            }
        )

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        obj = json_object(message)
        kind = obj.get("message_type")
        text = obj.get("text")
        if kind == "partial_transcript":
            if isinstance(text, str) and text.strip():
                return [Transcript(False, text.strip())]
            return []
        if kind == "committed_transcript":
            return []  # the with-timestamps copy that follows is the final result
        if kind == "committed_transcript_with_timestamps":
            events: list[ServiceEvent] = []
            if isinstance(text, str) and text.strip():
                start, end = _span(obj.get("words"))
                events.append(Transcript(True, text.strip(), "caller", start, end))
            if self.closing_sent:
                events.append(Ended())
            return events
        if kind == "session_started":
            return [Info("session started", {"session": obj.get("session_id")})]
        if isinstance(kind, str) and kind in ERROR_TYPES:  # (a list is no type, nor hashable)
            reason = kind if kind != "error" else obj.get("error") or "error"
            words = obj.get("error") or obj.get("message") or kind
            return [ServiceError(reason_label(reason), one_line(str(words)))]
        return [Info("unhandled message", {"type": one_line(str(kind), 40)})]

    def on_close(self, code: int | None, reason: str) -> ServiceError | None:
        if code is None or code in (1000, 1001, 1005):
            return None
        return ServiceError(reason_label(f"close {code}"), one_line(reason) or f"closed {code}")


def _span(words: object) -> tuple[float | None, float | None]:
    """First and last word's times (spacing and audio events left out)."""
    if not isinstance(words, list):
        return None, None
    spoken = [w for w in words if isinstance(w, dict) and w.get("type", "word") == "word"]
    if not spoken:
        return None, None
    return seconds(spoken[0].get("start")), seconds(spoken[-1].get("end"))
