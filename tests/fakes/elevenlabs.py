"""A strict fake of ElevenLabs' realtime speech-to-text (``/v1/speech-to-text/realtime``).

As elevenlabs.io/docs and the official SDK describe it (see ``bridge/services/elevenlabs.py``):

* the upgrade: path ``/v1/speech-to-text/realtime`` with ``model_id`` and ``audio_format``
  (``pcm_<rate>``); the key in the ``xi-api-key`` header; a wrong one gets an ``auth_error``
  message (an error ``message_type`` of the SDK), then the socket closes;
* ``session_started`` first, with the session's ``config``;
* every client message is JSON text ``input_audio_chunk`` with ``audio_base_64`` (base64
  PCM), ``commit`` (bool) and, when present, the ``sample_rate`` of ``audio_format``; a bad
  one gets ``input_error`` and the socket closes;
* ``partial_transcript`` as words come; with ``commit_strategy=vad`` the service commits at
  the end of an utterance: ``committed_transcript``, then (``include_timestamps=true``)
  ``committed_transcript_with_timestamps`` with ``words[{text,start,end,type}]`` (seconds);
* a ``commit: true`` chunk commits what is pending: "Commits the segment, triggering a
  COMMITTED_TRANSCRIPT event" (SDK ``commit()``), even an empty one.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from tests.fakes.base import FakeConnection, FakeService, Session
from tests.fakes.recognizer import Result, Word


class ElevenLabsConnection(FakeConnection):
    service: FakeElevenLabs

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        if session.path != "/v1/speech-to-text/realtime":
            return 404, "Not Found", []
        query = session.query
        if not query.get("model_id"):
            return 400, "model_id is required", []
        audio_format = query.get("audio_format", "pcm_16000")
        prefix, _, rate = audio_format.partition("_")
        if prefix != "pcm" or not rate.isdigit():
            return 400, f"unsupported audio_format {audio_format}", []
        self.rate = int(rate)
        return None

    def opened(self) -> None:
        assert self.session is not None
        if self.session.headers.get("xi-api-key") != self.service.key:
            self.send_json({"message_type": "auth_error", "error": "Invalid API key"})
            self.end(1008, "auth_error")
            return
        query = self.session.query
        self.send_json(
            {
                "message_type": "session_started",
                "session_id": uuid.uuid4().hex,
                "config": {
                    "sample_rate": self.rate,
                    "audio_format": query.get("audio_format"),
                    "model_id": query.get("model_id"),
                    "commit_strategy": query.get("commit_strategy", "manual"),
                    "include_timestamps": query.get("include_timestamps") == "true",
                },
            }
        )

    def _input_error(self, what: str) -> None:
        self.violation(what)
        self.send_json({"message_type": "input_error", "error": what})
        self.end(1008, "input_error")

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        if not isinstance(message, dict) or message.get("message_type") != "input_audio_chunk":
            self._input_error(f"not an input_audio_chunk: {raw[:60]!r}")
            return
        audio, commit = message.get("audio_base_64"), message.get("commit")
        if not isinstance(audio, str) or not isinstance(commit, bool):
            self._input_error("audio_base_64 (text) and commit (bool) are required")
            return
        rate = message.get("sample_rate", self.rate)
        if rate != self.rate:
            self._input_error(f"sample_rate {rate} does not match audio_format")
            return
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            self._input_error("audio_base_64 is not base64")
            return
        if len(pcm) % 2:
            self._input_error("odd-sized PCM")
            return
        if pcm:
            vad = self.session is not None and self.session.query.get("commit_strategy") == "vad"
            for result in self.audio(pcm, now_ns):
                if not result.final:
                    self.send_json({"message_type": "partial_transcript", "text": result.text})
                elif vad:
                    self._commit(result)
        if commit:
            pending = self.recognizer.flush() if self.recognizer is not None else []
            finals = [r for r in pending if r.final]
            self._commit(finals[-1] if finals else Result(True, []))

    def _commit(self, result: Result) -> None:
        self.send_json({"message_type": "committed_transcript", "text": result.text})
        if self.session is not None and self.session.query.get("include_timestamps") == "true":
            words: list[dict[str, Any]] = []
            for i, word in enumerate(result.words):
                if i:
                    previous: Word = result.words[i - 1]
                    words.append(
                        {
                            "text": " ",
                            "start": previous.end_s,
                            "end": word.start_s,
                            "type": "spacing",
                        }
                    )
                words.append(
                    {"text": word.text, "start": word.start_s, "end": word.end_s, "type": "word"}
                )
            self.send_json(
                {
                    "message_type": "committed_transcript_with_timestamps",
                    "text": result.text,
                    "language_code": "en",
                    "words": words,
                }
            )


class FakeElevenLabs(FakeService):
    connection_class = ElevenLabsConnection
    path = "/v1/speech-to-text/realtime"
