"""A strict fake of Deepgram's live transcription websocket (``wss://api.deepgram.com/v1/listen``).

As developers.deepgram.com documents it (see ``bridge/services/deepgram.py`` for the pages):

* the upgrade: path ``/v1/listen``; raw audio needs ``encoding`` (``linear16`` here) and
  ``sample_rate``; the key in ``Authorization: Token <key>`` (or the ``token, <key>``
  subprotocol); a refusal is HTTP 400 / 401 with a ``dg-error`` header;
* binary messages are audio; text messages are ``KeepAlive``, ``Finalize`` or
  ``CloseStream``, and a KeepAlive must be *text* (anything else is a violation; bridge
  should never send one);
* no audio and no KeepAlive for 10 s: close 1011 with NET-0001 ("Audio Keep Alive");
* results: ``Results`` interim (``is_final: false``) as each word is recognised, final
  (``is_final: true``, ``speech_final: true``) at the end of an utterance, ``start`` and
  ``duration`` in seconds of the stream; ``SpeechStarted`` with ``vad_events=true``;
  ``UtteranceEnd`` with ``utterance_end_ms``;
* ``CloseStream``: the last results, a ``Metadata`` summary, then the server closes (1000).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.fakes.base import FakeConnection, FakeService, Session
from tests.fakes.recognizer import Result

NO_DATA_TIMEOUT_S = 10.0
NET_0001 = (
    "NET-0001: Deepgram did not receive audio data or a text message within the timeout window."
)


class DeepgramConnection(FakeConnection):
    service: FakeDeepgram

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        def refuse(status: int, error: str) -> tuple[int, str, list[tuple[str, str]]]:
            body = json.dumps({"err_code": "Bad Request", "err_msg": error})
            return status, body, [("dg-error", error)]

        if session.path != "/v1/listen":
            return 404, "Not Found", []
        auth = session.headers.get("authorization", "")
        protocols = session.headers.get("sec-websocket-protocol", "")
        if auth != f"Token {self.service.key}" and protocols != f"token, {self.service.key}":
            return refuse(401, "Invalid credentials.")
        query = session.query
        if query.get("encoding") != "linear16":
            return refuse(400, "encoding must be given for raw audio")
        rate = query.get("sample_rate", "")
        if not rate.isdigit():
            return refuse(400, "sample_rate is required with encoding")
        if query.get("channels", "1") != "1":
            return refuse(400, "this fake takes one channel")
        self.rate = int(rate)
        return None

    def opened(self) -> None:
        self.request_id = str(uuid.uuid4())
        self._arm_timeout()

    def _arm_timeout(self) -> None:
        timer = getattr(self, "_no_data", None)
        if timer is not None:
            timer.cancel()
        self._no_data = self.later(self.service.no_data_timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        if not self.finished:
            self.end(1011, NET_0001)

    def binary(self, data: bytes, now_ns: int) -> None:
        self._arm_timeout()
        if data.startswith(b'{"type"'):
            self.violation("a control message sent as binary: it must be a text frame")
        if len(data) % 2:
            self.violation(f"odd-sized linear16 message ({len(data)} bytes)")
        for result in self.audio(data, now_ns):
            self._send_result(result)
        self._speech_started()

    def _speech_started(self) -> None:
        recognizer = self.recognizer
        sent = getattr(self, "_starts_sent", 0)
        if recognizer is None or self.session is None:
            return
        if self.session.query.get("vad_events") == "true":
            for start in recognizer.speech_starts[sent:]:
                self.send_json({"type": "SpeechStarted", "channel": [0], "timestamp": start})
        self._starts_sent = len(recognizer.speech_starts)

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        self._arm_timeout()
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            self._finish_results(from_finalize=True)
            return
        if kind == "CloseStream":
            self._finish_results(from_finalize=False)
            audio_s = len(self.session.audio) / 2 / self.rate if self.session else 0.0
            self.send_json(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": "0" * 64,
                    "created": "2026-01-01T00:00:00.000Z",
                    "duration": round(audio_s, 3),
                    "channels": 1,
                }
            )
            self.later(self.service.close_delay_s, lambda: self.end(1000, ""))
            self.finished = True
            return
        self.violation(f"unknown text message {raw[:60]!r}")
        self.end(1008, "DATA-0000: unknown message")

    def _finish_results(self, *, from_finalize: bool) -> None:
        if self.recognizer is not None:
            for result in self.recognizer.flush():
                self._send_result(result, from_finalize=from_finalize)

    def _send_result(self, result: Result, *, from_finalize: bool = False) -> None:
        words = [
            {
                "word": w.text,
                "start": w.start_s,
                "end": w.end_s,
                "confidence": 0.99,
                "punctuated_word": w.text,
            }
            for w in result.words
        ]
        interim_wanted = self.session is None or self.session.query.get("interim_results") == "true"
        if not result.final and not interim_wanted:
            return
        message = {
            "type": "Results",
            "channel_index": [0, 1],
            "start": result.start_s,
            "duration": round(result.end_s - result.start_s, 3),
            "is_final": result.final,
            "speech_final": result.final,
            "channel": {
                "alternatives": [{"transcript": result.text, "confidence": 0.99, "words": words}]
            },
            "metadata": {"request_id": self.request_id},
        }
        if from_finalize:
            message["from_finalize"] = True
        self.send_json(message)
        if result.final and self.session is not None and self.session.query.get("utterance_end_ms"):
            self.send_json(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": result.end_s}
            )


class FakeDeepgram(FakeService):
    connection_class = DeepgramConnection
    path = "/v1/listen"

    @property
    def no_data_timeout_s(self) -> float:
        return float(self.behaviour.get("no_data_timeout_s", NO_DATA_TIMEOUT_S))

    @property
    def close_delay_s(self) -> float:
        return float(self.behaviour.get("close_delay_s", 0.05))
