"""A strict fake of Speechmatics' real-time API (``wss://eu.rt.speechmatics.com/v2``).

As docs.speechmatics.com ("Realtime API Reference") and the SDKs' message models describe it
(see ``bridge/services/speechmatics.py``):

* the upgrade: path ``/v2``; ``Authorization: Bearer <key>``; a wrong key is refused at the
  upgrade with 401 ("Handshake responses");
* the first message must be ``StartRecognition`` with ``audio_format`` ``{"type":"raw",
  "encoding":"pcm_s16le"|"pcm_f32le"|"mulaw","sample_rate":N}`` and a
  ``transcription_config`` with a ``language``; anything else first gets
  ``Error {type: invalid_message}`` and the connection closes; the answer is
  ``RecognitionStarted``;
* audio (binary ``AddAudio``) before ``RecognitionStarted`` is a protocol error (the SDK
  never sends it: it waits for ``RecognitionStarted``); each ``AddAudio`` is acknowledged
  with ``AudioAdded {seq_no}``;
* ``AddPartialTranscript`` / ``AddTranscript`` with ``metadata {transcript, start_time,
  end_time}`` and ``results``;
* ``EndOfStream {last_seq_no}``: ``last_seq_no`` must be the number of audio messages
  received; then the remaining transcripts and ``EndOfTranscript``.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.fakes.base import FakeConnection, FakeService, Session
from tests.fakes.recognizer import Result


class SpeechmaticsConnection(FakeConnection):
    service: FakeSpeechmatics

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        if session.path.rstrip("/") != "/v2":
            return 404, "Not Found", []
        if session.headers.get("authorization") != f"Bearer {self.service.key}":
            return 401, "Unauthorized", []
        return None

    def opened(self) -> None:
        self.started = False
        self.seq_no = 0

    def _error(self, kind: str, reason: str) -> None:
        self.violation(f"{kind}: {reason}")
        self.send_json({"message": "Error", "type": kind, "reason": reason})
        self.end(1008, kind)

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        if not isinstance(message, dict):
            self._error("invalid_message", f"not JSON: {raw[:60]}")
            return
        kind = message.get("message")
        if not self.started:
            if kind != "StartRecognition":
                self._error("invalid_message", f"expected StartRecognition, got {kind}")
                return
            self._start(message)
            return
        if kind == "EndOfStream":
            if message.get("last_seq_no") != self.seq_no:
                self._error(
                    "invalid_message",
                    f"last_seq_no {message.get('last_seq_no')} but {self.seq_no} audio messages",
                )
                return
            if self.recognizer is not None:
                for result in self.recognizer.flush():
                    self._transcript(result)
            self.send_json({"message": "EndOfTranscript"})
            self.finished = True
            self.later(2.0, lambda: self.end(1000, ""))
            return
        if kind in ("SetRecognitionConfig", "GetSpeakers", "ForceEndOfUtterance"):
            return
        self._error("invalid_message", f"unknown message {kind}")

    def _start(self, message: dict[str, Any]) -> None:
        fmt = message.get("audio_format")
        config = message.get("transcription_config")
        if (
            not isinstance(fmt, dict)
            or fmt.get("type") != "raw"
            or fmt.get("encoding") not in ("pcm_s16le", "pcm_f32le", "mulaw")
            or not isinstance(fmt.get("sample_rate"), int)
        ):
            self._error("invalid_audio_type", f"audio_format {fmt}")
            return
        if fmt["encoding"] != "pcm_s16le":
            self._error("invalid_audio_type", "this fake takes pcm_s16le only")
            return
        if not isinstance(config, dict) or not isinstance(config.get("language"), str):
            self._error("invalid_config", "transcription_config.language is required")
            return
        self.rate = fmt["sample_rate"]
        self.partials = bool(config.get("enable_partials"))
        self.started = True
        self.send_json(
            {
                "message": "RecognitionStarted",
                "id": str(uuid.uuid4()),
                "language_pack_info": {"language_description": "English"},
            }
        )

    def binary(self, data: bytes, now_ns: int) -> None:
        if not self.started:
            self._error("protocol_error", "audio before RecognitionStarted")
            return
        self.seq_no += 1
        results = self.audio(data, now_ns)
        self.send_json({"message": "AudioAdded", "seq_no": self.seq_no})
        for result in results:
            self._transcript(result)

    def _transcript(self, result: Result) -> None:
        if not result.final and not self.partials:
            return
        self.send_json(
            {
                "message": "AddTranscript" if result.final else "AddPartialTranscript",
                "format": "2.9",
                "metadata": {
                    "transcript": result.text,
                    "start_time": result.start_s,
                    "end_time": result.end_s,
                },
                "results": [
                    {
                        "type": "word",
                        "start_time": w.start_s,
                        "end_time": w.end_s,
                        "alternatives": [{"content": w.text, "confidence": 0.99}],
                    }
                    for w in result.words
                ],
            }
        )


class FakeSpeechmatics(FakeService):
    connection_class = SpeechmaticsConnection
    path = "/v2"
