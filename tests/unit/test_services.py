"""The service dialects (``bridge.services``) alone: what each sends, and what it makes of the
messages its documentation shows. No sockets: a dialect is bytes and text in, events out.

The messages below are the documented examples (or built field for field from the documented
schema); the integration tests run the same dialects against strict fakes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.config import ServerConfig
from bridge.errors import ConfigError
from bridge.handlers.speech import expand_env, resolve_service
from bridge.services import DIALECT_NAMES, DIALECTS, ServiceSettings, merge_query
from bridge.services.assemblyai import AssemblyAI
from bridge.services.base import (
    AgentAudio,
    AgentAudioDone,
    Ended,
    Ready,
    ServiceError,
    ServiceMessageError,
    SpeechStarted,
    Transcript,
)
from bridge.services.deepgram import Deepgram
from bridge.services.elevenlabs import ElevenLabs
from bridge.services.openai_realtime import OpenAIRealtime
from bridge.services.speechmatics import Speechmatics


def only(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def transcript(events: list[Any]) -> Transcript:
    (event,) = events
    assert isinstance(event, Transcript)
    return event


def test_every_dialect_is_a_choice_of_the_setting_and_has_a_key_variable_and_endpoint() -> None:
    assert DIALECT_NAMES[0] == "raw"
    assert set(DIALECT_NAMES[1:]) == set(DIALECTS)
    for cls in DIALECTS.values():
        assert cls.key_env.endswith("_API_KEY")
        assert cls.default_url.startswith("wss://")
        ServerConfig(upstream_dialect=cls.name)  # type: ignore[arg-type]


def test_the_users_own_query_values_win_over_a_dialects() -> None:
    url = merge_query(
        "wss://eu.example/v1/listen?model=mine&x=1", [("model", "nova-3"), ("a", "b")]
    )
    assert url == "wss://eu.example/v1/listen?model=mine&x=1&a=b"
    assert merge_query("ws://127.0.0.1:9/v2", [("k", "v w")]) == "ws://127.0.0.1:9/v2?k=v+w"


# --- Deepgram ----------------------------------------------------------------------------------


def test_deepgram_asks_for_raw_linear16_at_the_rate_sent_with_a_token_header() -> None:
    dialect = Deepgram(8000, ServiceSettings(language="en-GB"))
    query = dict(dialect.query())
    assert (query["encoding"], query["sample_rate"], query["channels"]) == ("linear16", "8000", "1")
    assert query["interim_results"] == "true" and query["language"] == "en-GB"
    assert Deepgram.auth("k").headers == (("Authorization", "Token k"),)
    assert dialect.opening() == [] and dialect.encode(b"\x01\x02") == b"\x01\x02"
    assert json.loads(dialect.keepalive()) == {"type": "KeepAlive"}
    assert json.loads(dialect.closing()) == {"type": "CloseStream"}


def results(transcript: str, *, final: bool, start: float = 1.2, duration: float = 0.8) -> str:
    return json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": duration,
            "start": start,
            "is_final": final,
            "speech_final": final,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98}]},
        }
    )


def test_deepgram_results_become_interim_and_final_transcripts_with_times() -> None:
    dialect = Deepgram(16000)
    interim = transcript(dialect.parse(results("hello", final=False)))
    assert (interim.final, interim.text, interim.start_s) == (False, "hello", 1.2)
    assert interim.end_s == pytest.approx(2.0)
    final = transcript(dialect.parse(results("Hello world.", final=True)))
    assert final.final and final.text == "Hello world."
    assert dialect.parse(results("", final=True)) == []  # silence
    metadata = json.dumps({"type": "Metadata", "request_id": "r", "duration": 3.0})
    assert only(dialect.parse(metadata), Ended) == []
    dialect.closing()
    assert only(dialect.parse(metadata), Ended) == [Ended()]
    assert dialect.parse('{"type":"SpeechStarted","channel":[0],"timestamp":0.5}') == [
        SpeechStarted()
    ]


def test_deepgram_errors_are_named_by_their_code() -> None:
    dialect = Deepgram(16000)
    error = dialect.on_close(1011, "NET-0001: Deepgram did not receive audio data")
    assert error == ServiceError("NET-0001", "NET-0001: Deepgram did not receive audio data")
    assert dialect.on_close(1000, "") is None
    with pytest.raises(ServiceMessageError):
        dialect.parse(b"\x00\x01")


# --- AssemblyAI --------------------------------------------------------------------------------


def test_assemblyai_wants_a_model_50_ms_chunks_the_key_as_is_and_begin_first() -> None:
    dialect = AssemblyAI(8000)
    assert dict(dialect.query()) == {
        "speech_model": "universal-streaming-english",
        "sample_rate": "8000",
        "encoding": "pcm_s16le",
        "format_turns": "true",
    }
    multi = dict(AssemblyAI(16000, ServiceSettings(language="es")).query())
    assert multi["speech_model"] == "universal-streaming-multilingual"
    assert AssemblyAI.auth("k").headers == (("Authorization", "k"),)
    assert AssemblyAI.chunk_ms == 50 and AssemblyAI.wait_ready
    begin = '{"type":"Begin","id":"de5d9927-73a6-4be8-b52d-b4c07be37e6b","expires_at":1759796682}'
    assert only(dialect.parse(begin), Ready) == [Ready()]
    assert json.loads(dialect.closing()) == {"type": "Terminate"}
    termination = '{"type":"Termination","audio_duration_seconds":10,"session_duration_seconds":11}'
    assert only(dialect.parse(termination), Ended) == [Ended()]


def turn(text: str, *, end: bool, formatted: bool) -> str:
    words = [
        {"start": 1920, "end": 2000, "text": "hi", "confidence": 0.87, "word_is_final": True},
        {"start": 2800, "end": 2880, "text": "my", "confidence": 0.81, "word_is_final": True},
    ]
    return json.dumps(
        {
            "turn_order": 0,
            "turn_is_formatted": formatted,
            "end_of_turn": end,
            "transcript": text,
            "end_of_turn_confidence": 0.5,
            "words": words,
            "utterance": "",
            "type": "Turn",
        }
    )


def test_assemblyai_turns_final_only_when_formatted_times_from_ms() -> None:
    dialect = AssemblyAI(16000)
    partial = transcript(dialect.parse(turn("hi my", end=False, formatted=False)))
    unformatted = transcript(dialect.parse(turn("hi my", end=True, formatted=False)))
    (formatted,) = dialect.parse(turn("Hi, my.", end=True, formatted=True))
    assert not partial.final and not unformatted.final
    assert formatted == Transcript(True, "Hi, my.", "caller", 1.92, 2.88)
    error = '{"type":"Error","error_code":3007,"error":"Input duration violation: 40 ms"}'
    assert dialect.parse(error) == [ServiceError("3007", "Input duration violation: 40 ms")]


# --- OpenAI Realtime -----------------------------------------------------------------------------


def test_openai_configures_a_ga_session_at_24_khz() -> None:
    dialect = OpenAIRealtime(
        8000,
        ServiceSettings(instructions="Be brief.", voice="verse", turn_detection="semantic_vad"),
    )
    assert dialect.rate == 24000 and dialect.output_rate == 24000
    assert dict(dialect.query()) == {"model": "gpt-realtime"}
    assert OpenAIRealtime.auth("k").headers == (("Authorization", "Bearer k"),)
    (update,) = map(json.loads, dialect.opening())
    session = update["session"]
    assert update["type"] == "session.update" and session["type"] == "realtime"
    assert session["instructions"] == "Be brief." and session["output_modalities"] == ["audio"]
    audio = session["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["turn_detection"] == {"type": "semantic_vad"}
    assert audio["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "verse"}
    append = json.loads(dialect.encode(b"\x01\x00\x02\x00"))
    assert append == {"type": "input_audio_buffer.append", "audio": "AQACAA=="}
    assert dialect.closing() is None and not OpenAIRealtime.resume


def test_openai_audio_deltas_transcripts_barge_in_and_truncate() -> None:
    dialect = OpenAIRealtime(16000)
    pcm = b"\x10\x00\x20\x00"
    delta = {
        "type": "response.output_audio.delta",
        "event_id": "e1",
        "response_id": "r1",
        "item_id": "item_a",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(pcm).decode(),
    }
    assert dialect.parse(json.dumps(delta)) == [AgentAudio(pcm, "item_a")]
    legacy = {**delta, "type": "response.audio.delta"}
    assert dialect.parse(json.dumps(legacy)) == [AgentAudio(pcm, "item_a")]
    with pytest.raises(ServiceMessageError):
        dialect.parse(json.dumps({**delta, "delta": "not base64!"}))
    done = {"type": "response.output_audio.done", "item_id": "item_a"}
    assert dialect.parse(json.dumps(done)) == [AgentAudioDone("item_a")]
    started = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "u1"}
    assert dialect.parse(json.dumps(started)) == [SpeechStarted("u1")]
    stopped = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2500, "item_id": "u1"}
    assert dialect.parse(json.dumps(stopped)) == []
    heard = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "u1",
        "content_index": 0,
        "transcript": "Hello there.",
    }
    assert dialect.parse(json.dumps(heard)) == [
        Transcript(True, "Hello there.", "caller", 1.0, 2.5, "u1")
    ]
    said = {
        "type": "response.output_audio_transcript.done",
        "item_id": "item_a",
        "transcript": "Hi!",
    }
    assert dialect.parse(json.dumps(said)) == [
        Transcript(True, "Hi!", "agent", None, None, "item_a")
    ]
    assert json.loads(dialect.truncate("item_a", 1234)) == {
        "type": "conversation.item.truncate",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
    error = {
        "type": "error",
        "event_id": "e9",
        "error": {"type": "invalid_request_error", "code": "invalid_value", "message": "Bad."},
    }
    assert dialect.parse(json.dumps(error)) == [ServiceError("invalid_value", "Bad.")]
    refusal = dialect.on_close(3000, "invalid_request_error.invalid_api_key")
    assert refusal is not None and refusal.reason == "invalid_api_key"


# --- ElevenLabs -------------------------------------------------------------------------------


def test_elevenlabs_sends_base64_chunks_commits_at_the_end_and_keeps_timed_finals() -> None:
    dialect = ElevenLabs(16000, ServiceSettings(language="en"))
    query = dict(dialect.query())
    assert query["audio_format"] == "pcm_16000" and query["commit_strategy"] == "vad"
    assert query["include_timestamps"] == "true" and query["language_code"] == "en"
    assert ElevenLabs.auth("k").headers == (("xi-api-key", "k"),)
    chunk = json.loads(dialect.encode(b"\x01\x00"))
    assert chunk == {
        "message_type": "input_audio_chunk",
        "audio_base_64": "AQA=",
        "commit": False,
        "sample_rate": 16000,
    }
    partial = '{"message_type":"partial_transcript","text":"Hello, how are"}'
    assert dialect.parse(partial) == [Transcript(False, "Hello, how are")]
    assert dialect.parse('{"message_type":"committed_transcript","text":"Hello."}') == []
    timed = {
        "message_type": "committed_transcript_with_timestamps",
        "text": "Hello, how are you today?",
        "language_code": "en",
        "words": [
            {"text": "Hello", "start": 0.0, "end": 0.32, "type": "word"},
            {"text": " ", "start": 0.32, "end": 0.35, "type": "spacing"},
            {"text": "how", "start": 0.40, "end": 0.55, "type": "word"},
        ],
    }
    assert dialect.parse(json.dumps(timed)) == [
        Transcript(True, "Hello, how are you today?", "caller", 0.0, 0.55)
    ]
    assert json.loads(dialect.closing())["commit"] is True
    assert only(dialect.parse(json.dumps(timed)), Ended) == [Ended()]
    error = '{"message_type":"auth_error","error":"Invalid API key"}'
    assert dialect.parse(error) == [ServiceError("auth_error", "Invalid API key")]


# --- Speechmatics ------------------------------------------------------------------------------


def test_speechmatics_starts_recognition_counts_audio_and_ends_with_the_count() -> None:
    dialect = Speechmatics(8000, ServiceSettings(language="de"))
    assert Speechmatics.auth("k").headers == (("Authorization", "Bearer k"),)
    (start,) = map(json.loads, dialect.opening())
    assert start == {
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
        "transcription_config": {"language": "de", "enable_partials": True},
    }
    for _ in range(3):
        dialect.encode(b"\x00\x00")
    assert json.loads(dialect.closing()) == {"message": "EndOfStream", "last_seq_no": 3}
    dialect.opening()  # a new connection counts from zero again
    dialect.encode(b"\x00\x00")
    assert json.loads(dialect.closing())["last_seq_no"] == 1
    assert only(dialect.parse('{"message":"RecognitionStarted","id":"x"}'), Ready) == [Ready()]
    added = {
        "message": "AddTranscript",
        "metadata": {"transcript": "Hello world.", "start_time": 0.5, "end_time": 1.25},
        "results": [],
    }
    assert dialect.parse(json.dumps(added)) == [
        Transcript(True, "Hello world.", "caller", 0.5, 1.25)
    ]
    assert dialect.parse('{"message":"EndOfTranscript"}') == [Ended()]
    error = '{"message":"Error","type":"invalid_model","reason":"no such language"}'
    assert dialect.parse(error) == [ServiceError("invalid_model", "no such language")]


# --- startup: keys, headers, instructions -------------------------------------------------------


def test_the_key_comes_from_the_services_variable_or_the_one_named() -> None:
    config = ServerConfig(upstream_dialect="deepgram")
    setup = resolve_service(config, {"DEEPGRAM_API_KEY": "dg-key"})
    assert setup.options.headers == (("Authorization", "Token dg-key"),)
    assert setup.base_url == Deepgram.default_url
    assert "dg-key" not in repr(setup) and "dg-key" in setup.secrets
    with pytest.raises(ConfigError, match="set DEEPGRAM_API_KEY"):
        resolve_service(config, {})
    named = ServerConfig(upstream_dialect="deepgram", upstream_key_env="DG_TEAM_A")
    with pytest.raises(ConfigError, match="set DG_TEAM_A"):
        resolve_service(named, {"DEEPGRAM_API_KEY": "x"})


def test_user_headers_expand_variables_and_may_replace_the_auth_header() -> None:
    config = ServerConfig(
        upstream_dialect="assemblyai",
        upstream_header=("Authorization: ${TEMP_TOKEN}", "X-Team: blue"),
    )
    setup = resolve_service(config, {"TEMP_TOKEN": "tok-123"})  # no ASSEMBLYAI_API_KEY needed
    assert setup.options.headers == (("Authorization", "tok-123"), ("X-Team", "blue"))
    assert "tok-123" in setup.secrets
    with pytest.raises(ConfigError, match=r"\$\{NOPE\}"):
        expand_env("a ${NOPE} b", {}, "--upstream-header")


def test_instructions_come_from_a_file_with_at(tmp_path: Any) -> None:
    prompt = tmp_path / "agent.txt"
    prompt.write_text("You are a receptionist.\n")
    env = {"OPENAI_API_KEY": "k"}
    config = ServerConfig(upstream_dialect="openai-realtime", instructions=f"@{prompt}")
    assert resolve_service(config, env).settings.instructions == "You are a receptionist."
    missing = ServerConfig(upstream_dialect="openai-realtime", instructions="@/no/such/file")
    with pytest.raises(ConfigError, match="--instructions"):
        resolve_service(missing, env)
