"""Speechmatics real-time transcription (``--upstream-dialect speechmatics``).

The rules below are from docs.speechmatics.com ("Realtime API Reference",
/api-ref/realtime-transcription-websocket) and the message models of the official SDKs
(speechmatics-js-sdk ``packages/real-time-client/models``, speechmatics-python ``client.py``):

* Endpoint ``wss://eu.rt.speechmatics.com/v2`` (other regions, or ``global.rt``, route to the
  nearest); the design notes said ``eu2.rt``: the reference names ``eu.rt``, and that wins.
  Auth: header ``Authorization: Bearer <key>``; a bad key is refused at the upgrade with 401.
* First message ``StartRecognition`` with ``audio_format`` ``{"type":"raw","encoding":
  "pcm_s16le","sample_rate":N}`` and ``transcription_config`` (``language``,
  ``enable_partials``); the server answers ``RecognitionStarted``. The Python SDK sends no
  audio before it (``_recognition_started.wait()``), and neither does bridge (``wait_ready``).
* Audio: binary ``AddAudio`` messages, each acknowledged by ``AudioAdded {seq_no}``;
  ``EndOfStream {last_seq_no}`` ends the input, ``last_seq_no`` being the number of audio
  messages sent on this connection (the SDK counts them the same way); the server sends the
  remaining transcripts, then ``EndOfTranscript``.
* Results: ``AddPartialTranscript`` / ``AddTranscript`` with
  ``metadata {transcript, start_time, end_time}`` (seconds).
* Errors: ``{"message":"Error","type","reason"}`` (``invalid_message``, ``not_authorised``,
  ``idle_timeout``, ...), then the connection closes; ``Warning`` messages are logged.

Import rule: the standard library and ``bridge.services``.
"""

from __future__ import annotations

from typing import ClassVar

from bridge.services.base import (
    Auth,
    Dialect,
    Ended,
    Info,
    Ready,
    ServiceError,
    ServiceEvent,
    ServiceSettings,
    Transcript,
    compact,
    json_object,
    one_line,
    reason_label,
    seconds,
)

DEFAULT_LANGUAGE = "en"


class Speechmatics(Dialect):
    name: ClassVar[str] = "speechmatics"
    key_env: ClassVar[str] = "SPEECHMATICS_API_KEY"
    default_url: ClassVar[str] = "wss://eu.rt.speechmatics.com/v2"
    wait_ready: ClassVar[bool] = True

    def __init__(self, call_rate: int, settings: ServiceSettings | None = None) -> None:
        super().__init__(call_rate, settings)
        self.seq_no = 0

    @classmethod
    def auth(cls, key: str) -> Auth:
        return Auth(headers=(("Authorization", f"Bearer {key}"),))

    def opening(self) -> list[str]:
        super().opening()
        self.seq_no = 0
        config: dict[str, object] = {
            "language": self.settings.language or DEFAULT_LANGUAGE,
            "enable_partials": True,
        }
        if self.settings.model:
            config["operating_point"] = self.settings.model
        start = {
            "message": "StartRecognition",
            "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": self.rate},
            "transcription_config": config,
        }
        return [compact(start)]

    def encode(self, pcm: bytes) -> bytes:
        self.seq_no += 1
        return pcm

    def closing(self) -> str:
        super().closing()
        return compact({"message": "EndOfStream", "last_seq_no": self.seq_no})

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        obj = json_object(message)
        kind = obj.get("message")
        if kind in ("AddTranscript", "AddPartialTranscript"):
            metadata = obj.get("metadata")
            if not isinstance(metadata, dict):
                return []
            text = metadata.get("transcript")
            if not isinstance(text, str) or not text.strip():
                return []
            start, end = seconds(metadata.get("start_time")), seconds(metadata.get("end_time"))
            return [Transcript(kind == "AddTranscript", text.strip(), "caller", start, end)]
        if kind == "AudioAdded":
            return []
        if kind == "RecognitionStarted":
            return [Info("recognition started", {"session": obj.get("id")}), Ready()]
        if kind == "EndOfTranscript":
            return [Ended()]
        if kind == "Error":
            words = obj.get("reason", "")
            return [ServiceError(reason_label(obj.get("type", "Error")), one_line(str(words)))]
        if kind == "Warning":
            return [Info("service warning", {"type": obj.get("type"), "reason": obj.get("reason")})]
        return [Info("unhandled message", {"type": one_line(str(kind), 40)})]
