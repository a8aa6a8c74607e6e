"""A strict fake of the OpenAI Realtime API, GA (``wss://api.openai.com/v1/realtime``).

As the API reference and the official SDK's types describe it (see
``bridge/services/openai_realtime.py`` for the pages):

* the upgrade: path ``/v1/realtime`` with ``model``; ``Authorization: Bearer <key>``; the beta
  header (``OpenAI-Beta: realtime=v1``) belongs to the old interface and is refused; a wrong
  key is not refused at the upgrade: an ``invalid_api_key`` error, then close 3000;
* the server sends ``session.created`` first and answers each ``session.update`` with
  ``session.updated``; a session object must be ``type: realtime`` with PCM at 24000 Hz (the
  only rate ``audio/pcm`` takes) and ``server_vad`` or ``semantic_vad`` turn detection;
* every client message is a JSON text event of a documented type (``input_audio_buffer.append``
  with base64 16-bit PCM, ``conversation.item.truncate``, ...); anything else gets an
  ``error`` event, as the service answers a bad event (the connection stays open);
* server VAD: ``input_audio_buffer.speech_started {audio_start_ms, item_id}`` when the caller
  starts, ``speech_stopped``/``committed`` when they stop, the caller's words as
  ``conversation.item.input_audio_transcription.completed``, then a response: the agent's
  audio as ``response.output_audio.delta`` (base64 PCM 24 kHz, faster than real time, as the
  service sends it), ``response.output_audio.done``, its words, ``response.done``;
* barge-in: speech starting during an answer cancels it; the client's
  ``conversation.item.truncate`` must name an assistant item, ``content_index: 0`` and an
  ``audio_end_ms`` no longer than the audio sent for it (else an error); it is answered by
  ``conversation.item.truncated`` and recorded in ``truncations``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from bridge.audio.pcm import tone
from tests.fakes.base import FakeConnection, FakeService, Session
from tests.fakes.recognizer import Result

RATE = 24000
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
AGENT_TONE_HZ = 440
DELTA_MS = 100


class OpenAIConnection(FakeConnection):
    service: FakeOpenAIRealtime

    def check_request(self, session: Session) -> tuple[int, str, list[tuple[str, str]]] | None:
        if session.path != "/v1/realtime":
            return 404, "Not Found", []
        if not session.query.get("model"):
            return 400, "model is required", []
        if "openai-beta" in session.headers:
            self.violation("the beta header (OpenAI-Beta) is not for the GA interface")
            return 400, "beta header", []
        self.rate = RATE
        return None

    def opened(self) -> None:
        assert self.session is not None
        self.events = 0
        self.items = 0
        self.responding: str | None = None  # the assistant item being answered
        self.agent_ms: dict[str, int] = {}  # audio sent per assistant item
        self.user_item: str | None = None
        if self.session.headers.get("authorization") != f"Bearer {self.service.key}":
            self.send_event(
                "error",
                error={
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "Incorrect API key provided.",
                    "param": None,
                },
            )
            self.end(3000, "invalid_request_error.invalid_api_key")
            return
        self.session_config: dict[str, Any] = {
            "type": "realtime",
            "id": f"sess_{len(self.service.sessions)}",
            "model": self.session.query["model"],
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "alloy"},
            },
        }
        self.send_event("session.created", session=self.session_config)

    def send_event(self, kind: str, **fields: Any) -> None:
        self.events += 1
        self.send_json({"type": kind, "event_id": f"event_{self.events}", **fields})

    def error(self, message: str, code: str = "invalid_value", event_id: str | None = None) -> None:
        self.violation(message)
        self.send_event(
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "event_id": event_id,
            },
        )

    def binary(self, data: bytes, now_ns: int) -> None:
        self.error("binary messages are not events")

    def text(self, message: Any, raw: str, now_ns: int) -> None:
        if not isinstance(message, dict):
            self.error(f"not a JSON event: {raw[:60]!r}")
            return
        kind = message.get("type")
        if kind not in CLIENT_EVENTS:
            self.error(f"Invalid value: {kind!r} is not a client event type")
            return
        if kind == "session.update":
            self._session_update(message.get("session"))
        elif kind == "input_audio_buffer.append":
            self._append(message.get("audio"), now_ns)
        elif kind == "conversation.item.truncate":
            self._truncate(message)

    def _session_update(self, session: Any) -> None:
        if not isinstance(session, dict) or session.get("type") != "realtime":
            self.error("session.type must be 'realtime'")
            return
        audio = session.get("audio", {})
        fmt_in = audio.get("input", {}).get("format", {"type": "audio/pcm", "rate": RATE})
        fmt_out = audio.get("output", {}).get("format", {"type": "audio/pcm", "rate": RATE})
        for fmt in (fmt_in, fmt_out):
            if fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE:
                self.error(f"unsupported audio format {fmt}")
                return
        detection = audio.get("input", {}).get("turn_detection")
        if detection is not None and detection.get("type") not in ("server_vad", "semantic_vad"):
            self.error(f"unknown turn detection {detection}")
            return
        if not isinstance(session.get("instructions", ""), str):
            self.error("instructions must be text")
            return
        merged = json.loads(json.dumps(self.session_config))
        merged.update({k: v for k, v in session.items() if k != "audio"})
        merged["audio"]["input"].update(audio.get("input", {}))
        merged["audio"]["output"].update(audio.get("output", {}))
        self.session_config = merged
        self.send_event("session.updated", session=merged)

    def _append(self, audio: Any, now_ns: int) -> None:
        try:
            pcm = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            pcm = None
        if pcm is None or len(pcm) % 2:
            self.error("audio must be base64 16-bit PCM")
            return
        recognizer_before = len(self.recognizer.speech_starts) if self.recognizer else 0
        results = self.audio(pcm, now_ns)
        recognizer = self.recognizer
        if recognizer is None:
            return  # a benchmark's fake recognises nothing
        for start in recognizer.speech_starts[recognizer_before:]:
            self._speech_started(start)
        for result in results:
            if result.final:
                self._turn_done(result)

    def _speech_started(self, start_s: float) -> None:
        self.items += 1
        self.user_item = f"item_user_{self.items}"
        self.send_event(
            "input_audio_buffer.speech_started",
            audio_start_ms=round(start_s * 1000),
            item_id=self.user_item,
        )
        if self.responding is not None:  # interrupt_response: the answer stops here
            assert self.session is not None
            self.service.barge_ins.append(self.responding)
            self.send_event("response.done", response={"status": "cancelled"})
            self.responding = None

    def _turn_done(self, result: Result) -> None:
        item = self.user_item or "item_user_0"
        self.send_event(
            "input_audio_buffer.speech_stopped",
            audio_end_ms=round(result.end_s * 1000),
            item_id=item,
        )
        self.send_event("input_audio_buffer.committed", item_id=item, previous_item_id=None)
        self.send_event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item,
            content_index=0,
            transcript=result.text,
        )
        self._respond(result.text)

    def _respond(self, heard: str) -> None:
        self.items += 1
        item = f"item_agent_{self.items}"
        response = f"resp_{self.items}"
        self.responding = item
        self.send_event("response.created", response={"id": response, "status": "in_progress"})
        self.send_event(
            "response.output_item.added",
            response_id=response,
            output_index=0,
            item={"id": item, "type": "message", "role": "assistant"},
        )
        seconds = float(self.service.behaviour.get("answer_s", 2.0))
        samples = tone(AGENT_TONE_HZ, RATE, round(seconds * RATE), amplitude=6000)
        step = RATE * DELTA_MS // 1000
        for i in range(0, len(samples), step):
            chunk = samples[i : i + step]
            self.send_event(
                "response.output_audio.delta",
                response_id=response,
                item_id=item,
                output_index=0,
                content_index=0,
                delta=base64.b64encode(chunk.astype("<i2").tobytes()).decode(),
            )
        self.agent_ms[item] = round(len(samples) * 1000 / RATE)
        words = f"you said {heard}"
        self.send_event(
            "response.output_audio.done",
            response_id=response,
            item_id=item,
            output_index=0,
            content_index=0,
        )
        self.send_event(
            "response.output_audio_transcript.done",
            response_id=response,
            item_id=item,
            output_index=0,
            content_index=0,
            transcript=words,
        )
        self.send_event("response.done", response={"id": response, "status": "completed"})

    def _truncate(self, message: dict[str, Any]) -> None:
        item = message.get("item_id")
        end_ms = message.get("audio_end_ms")
        if item not in self.agent_ms:
            self.error(f"item {item!r} is not an assistant message item", code="item_not_found")
            return
        if message.get("content_index") != 0:
            self.error("content_index must be 0")
            return
        if not isinstance(end_ms, int) or end_ms < 0 or end_ms > self.agent_ms[item]:
            self.error(
                f"audio_end_ms {end_ms} is beyond the item's audio ({self.agent_ms[item]} ms)"
            )
            return
        self.service.truncations.append((item, end_ms))
        self.send_event(
            "conversation.item.truncated", item_id=item, content_index=0, audio_end_ms=end_ms
        )


class FakeOpenAIRealtime(FakeService):
    connection_class = OpenAIConnection
    path = "/v1/realtime"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (assistant item, audio_end_ms) of every valid truncate, in order.
        self.truncations: list[tuple[str, int]] = []
        #: Assistant items the caller spoke over.
        self.barge_ins: list[str] = []


def agent_audio(seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    """The fake's answer, as the caller should hear it (at 24 kHz)."""
    return tone(AGENT_TONE_HZ, RATE, round(seconds * RATE), amplitude=6000)
