"""AssemblyAI Universal Streaming v3 (``--upstream-dialect assemblyai``).

Every rule below is from assemblyai.com/docs:

* Endpoint ``wss://streaming.assemblyai.com/v3/ws`` (EU: ``streaming.eu.assemblyai.com``)
  ("Universal Streaming"). Query: ``speech_model`` is required ("speech_model is required
  ... There is no default model"), ``sample_rate`` (default 16000), ``encoding``
  ``pcm_s16le``, ``format_turns=true`` for punctuated, cased final turns.
* Auth: header ``Authorization: <api key>``, no scheme word (SDKs send the key as is); a
  browser would use ``?token=`` instead.
* Order ("Message Sequence", /docs/streaming/message-sequence): the server speaks first with
  ``Begin {id, expires_at}``; the client sends binary PCM, "~50 ms chunks"; the server sends
  ``Turn`` messages (``end_of_turn: false`` partials, then ``end_of_turn: true``); the client
  ends with ``{"type":"Terminate"}``, the server sends the in-flight turns, then
  ``Termination`` and closes 1000. Billing runs on connection time: always terminate.
* Each audio message must hold 50-1000 ms ("Common session errors and closures": close 3007
  "Input duration violation ... Expected between 50 and 1000 ms"). The design notes said
  "pairs of 20 ms frames" (40 ms): the docs win, so bridge re-chunks to exactly 50 ms and pads
  the very last chunk of a call to 50 ms.
* ``Turn.words[].start/end`` are milliseconds in the stream; with ``format_turns`` the end of a
  turn comes once unformatted and once with ``turn_is_formatted: true`` (the final here).
* Errors: an ``{"type":"Error","error_code","error"}`` text frame, then a close with that code
  (3005-3009; 1008 "Unauthorized Connection: ..." for a bad key or too many sessions).
* ``KeepAlive`` only resets ``inactivity_timeout``, which bridge does not set: not sent.

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
    SpeechStarted,
    Transcript,
    compact,
    json_object,
    one_line,
    reason_label,
)

DEFAULT_MODEL = "universal-streaming-english"
MULTILINGUAL_MODEL = "universal-streaming-multilingual"


class AssemblyAI(Dialect):
    name: ClassVar[str] = "assemblyai"
    key_env: ClassVar[str] = "ASSEMBLYAI_API_KEY"
    default_url: ClassVar[str] = "wss://streaming.assemblyai.com/v3/ws"
    chunk_ms: ClassVar[int] = 50
    wait_ready: ClassVar[bool] = True

    def query(self) -> list[tuple[str, str]]:
        model = self.settings.model
        if model is None:
            language = self.settings.language
            english = language is None or language.lower().startswith("en")
            model = DEFAULT_MODEL if english else MULTILINGUAL_MODEL
        return [
            ("speech_model", model),
            ("sample_rate", str(self.rate)),
            ("encoding", "pcm_s16le"),
            ("format_turns", "true"),
        ]

    @classmethod
    def auth(cls, key: str) -> Auth:
        return Auth(headers=(("Authorization", key),))

    def closing(self) -> str:
        super().closing()
        return compact({"type": "Terminate"})

    def parse(self, message: bytes | str) -> list[ServiceEvent]:
        obj = json_object(message)
        kind = obj.get("type")
        if kind == "Turn":
            return self._turn(obj)
        if kind == "Begin":
            return [Info("session began", {"session": obj.get("id")}), Ready()]
        if kind == "Termination":
            info = Info(
                "session terminated",
                {
                    "audio_duration_s": obj.get("audio_duration_seconds"),
                    "session_duration_s": obj.get("session_duration_seconds"),
                },
            )
            return [info, Ended()]
        if kind == "SpeechStarted":
            return [SpeechStarted()]
        if kind == "Error":
            code = obj.get("error_code", "Error")
            return [ServiceError(reason_label(code), one_line(str(obj.get("error", ""))))]
        return [Info("unhandled message", {"type": one_line(str(kind), 40)})]

    def _turn(self, obj: dict[str, object]) -> list[ServiceEvent]:
        text = obj.get("transcript")
        if not isinstance(text, str) or not text.strip():
            return []
        final = bool(obj.get("end_of_turn")) and bool(obj.get("turn_is_formatted"))
        start = end = None
        words = obj.get("words")
        if isinstance(words, list) and words:
            first, last = words[0], words[-1]
            if isinstance(first, dict) and isinstance(first.get("start"), int | float):
                start = first["start"] / 1000
            if isinstance(last, dict) and isinstance(last.get("end"), int | float):
                end = last["end"] / 1000
        return [Transcript(final, text.strip(), "caller", start, end)]

    def on_close(self, code: int | None, reason: str) -> ServiceError | None:
        if code is None or code in (1000, 1001, 1005):
            return None
        return ServiceError(reason_label(code), one_line(reason) or f"closed with {code}")
