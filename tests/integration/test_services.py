"""Forward mode to speech services, end to end: the real server, the real simulator, and a
strict fake of each service (``tests/fakes``) that checks every message bridge sends.

The caller "speaks" in tone bursts that the fakes recognise as words
(``tests/fakes/recognizer.py``): the point is the plumbing and each service's protocol
(handshake, setup, audio encoding, chunking, keep-alive, clean ending, results, errors),
not speech recognition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ServerConfig
from bridge.handlers import build_handler
from bridge.server import BridgeServer
from bridge.services import DIALECTS
from bridge.sim import CallOptions, CallReport, run_call
from tests.fakes import FAKES, KEY, FakeService
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.recognizer import speech_wav
from tests.helpers import ROOT, TRANSPORT, running_server, url_of, wait_s
from tests.integration._http import get, metric

TRANSCRIBERS = ["deepgram", "assemblyai", "elevenlabs", "speechmatics"]
SENTENCES = [["hello", "world"], ["alpha", "bravo"]]
#: The upstream side (link, dialects, fakes) does not depend on the server's websocket backend:
#: CI runs the integration suite once per backend, and these run in the default one only.
ONE_BACKEND = pytest.mark.skipif(
    TRANSPORT == "websockets", reason="upstream-side only: the default backend's run covers it"
)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service's key in its usual variable."""
    for cls in DIALECTS.values():
        monkeypatch.setenv(cls.key_env, KEY)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, logger="bridge")

    def get(message: str) -> list[dict[str, Any]]:
        return [dict(vars(r)) for r in caplog.records if r.getMessage() == message]

    return get


@dataclass
class Outcome:
    report: CallReport
    lines: list[dict[str, Any]]
    server: BridgeServer

    def finals(self, speaker: str = "caller") -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("final") and line.get("speaker") == speaker]


def words(text: str) -> str:
    """A transcript's words, whatever the service's formatting (case, punctuation)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


async def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + wait_s(seconds)
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeService]:
    dialect, kwargs = request.param if isinstance(request.param, tuple) else (request.param, {})
    service = FAKES[dialect](**kwargs)
    await service.start()
    try:
        yield service
    finally:
        await service.close()


def read_lines(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(directory.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


async def call_service(
    tmp_path: Path,
    dialect: str,
    service: FakeService,
    *,
    rate: int = 16000,
    utterances: list[list[str]] = SENTENCES,
    cut_last_s: float | None = None,
    tail_s: float = 0.6,
    pause_s: float = 0.8,
    call: dict[str, Any] | None = None,
    inspect: Callable[[BridgeServer], Awaitable[None]] | None = None,
    **settings: Any,
) -> Outcome:
    """One simulated call through bridge to ``service``; waits for the handler to finish."""
    wav = tmp_path / "caller.wav"
    seconds = speech_wav(
        wav, utterances, rate, cut_last_s=cut_last_s, tail_s=tail_s, pause_s=pause_s
    )
    transcripts = tmp_path / "transcripts"
    config = ServerConfig(
        **{
            "port": 0,
            "upstream_dialect": dialect,
            "upstream": service.url,
            "transcripts": str(transcripts),
            "upstream_backoff_ms": 50,
            **settings,
        }
    )
    handler = build_handler(config)
    try:
        async with running_server(
            handler, idle_timeout_s=30, public_url="wss://bridge.example.com"
        ) as server:
            report = await run_call(
                CallOptions(
                    url=url_of(server),
                    rate=rate,
                    seconds=int(seconds * 50) / 50,
                    wav=wav,
                    linger_s=0.2,
                    **(call or {}),
                )
            )
            await wait_until(lambda: not server.tasks, 8)
            if inspect is not None:
                await inspect(server)
    finally:
        handler.close()
    return Outcome(report, read_lines(transcripts), server)


# --- words in, normalised finals out ------------------------------------------------------------


#: Each service at 8 kHz and 16 kHz, split across the two backends' runs.
RATES = (8000, 16000) if TRANSPORT != "websockets" else (16000, 8000)
WORD_CASES = [(d, RATES[i % 2]) for i, d in enumerate(TRANSCRIBERS)]


@pytest.mark.parametrize(
    ("fake", "rate"), WORD_CASES, indirect=["fake"], ids=[f"{d}-{r}" for d, r in WORD_CASES]
)
async def test_words_in_normalised_finals_out_and_a_cut_off_sentence_still_ends(
    tmp_path: Path, keys: None, fake: FakeService, rate: int
) -> None:
    dialect = next(name for name, cls in FAKES.items() if isinstance(fake, cls))
    # The caller hangs up 150 ms into the last word: only the clean ending (CloseStream,
    # Terminate, EndOfStream, a commit) makes the service send that sentence's final.
    outcome = await call_service(tmp_path, dialect, fake, rate=rate, cut_last_s=0.15)
    assert fake.violations == [], fake.violations
    (session,) = fake.sessions
    assert session.accepted
    finals = outcome.finals()
    assert [words(line["text"]) for line in finals] == ["hello world", "alpha bravo"], finals
    for line in outcome.lines:
        assert line["source"] == dialect and line["call_id"] and line["at"].endswith("+00:00")
        assert set(line) >= {"call_id", "source", "speaker", "final", "text", "t", "at"}
    # Interim results came before each final, and times are the call's own (s), +-50 ms.
    first = outcome.lines.index(finals[0])
    assert any(not line["final"] for line in outcome.lines[:first])
    assert finals[0]["start_s"] == pytest.approx(0.3, abs=0.05)
    assert finals[0]["end_s"] == pytest.approx(1.05, abs=0.05)
    assert finals[1]["start_s"] == pytest.approx(1.85, abs=0.05)
    # Every sample the caller sent reached the service, at the rate it was told.
    assert session.rate == rate
    assert len(session.audio) / 2 / rate >= outcome.report.frames_sent * 0.02
    assert outcome.report.completed


@ONE_BACKEND
@pytest.mark.parametrize("fake", ["deepgram"], indirect=True)
async def test_deepgram_gets_its_documented_query_and_auth(
    tmp_path: Path, keys: None, fake: FakeService
) -> None:
    await call_service(
        tmp_path, "deepgram", fake, rate=8000, upstream=fake.url + "?model=nova-2-phonecall"
    )
    (session,) = fake.sessions
    assert session.headers["authorization"] == f"Token {KEY}"
    query = session.query
    assert (query["encoding"], query["sample_rate"], query["channels"]) == ("linear16", "8000", "1")
    assert query["interim_results"] == "true" and query["vad_events"] == "true"
    assert query["model"] == "nova-2-phonecall", "the user's own query value wins"
    assert "CloseStream" in session.kinds()


# --- keep-alive --------------------------------------------------------------------------------


@pytest.mark.slow
@ONE_BACKEND
@pytest.mark.parametrize("fake", ["deepgram"], indirect=True)
async def test_twelve_seconds_without_audio_keep_deepgram_alive(
    tmp_path: Path, keys: None, fake: FakeService, logs: Callable[[str], list[dict[str, Any]]]
) -> None:
    # The caller's leg sends nothing for 12 s (held or muted). Deepgram closes a connection
    # that gets neither audio nor KeepAlive for 10 s (NET-0001); the fake does the same.
    outcome = await call_service(
        tmp_path,
        "deepgram",
        fake,
        utterances=[["hello", "world"]],
        tail_s=13.5,
        call={"pause_at_s": 1.8, "pause_s": 12.0},
    )
    # One connection from start to end, closed by the service after CloseStream, not NET-0001.
    (session,) = fake.sessions
    assert session.close_code == 1000, (session.close_code, session.close_reason)
    keepalives = session.kinds().count("KeepAlive")
    assert 2 <= keepalives <= 5, session.kinds()
    assert fake.violations == []
    assert [words(line["text"]) for line in outcome.finals()] == ["hello world"]
    (summary,) = logs("upstream link closed")
    assert summary["keepalives_sent"] == keepalives and summary["connects"] == 1


# --- reconnects ----------------------------------------------------------------------------------

#: The first connection dies after this many audio messages: about 1.2 s into the call.
DROP_AFTER = {"deepgram": 60, "assemblyai": 24, "elevenlabs": 60, "speechmatics": 60}


@ONE_BACKEND
@pytest.mark.parametrize(
    "fake",
    [(d, {"drop_after": DROP_AFTER[d]}) for d in TRANSCRIBERS],
    indirect=True,
    ids=TRANSCRIBERS,
)
async def test_a_transcriber_reconnects_sends_its_setup_again_and_loses_no_audio(
    tmp_path: Path, keys: None, fake: FakeService, logs: Callable[[str], list[dict[str, Any]]]
) -> None:
    dialect = next(name for name, cls in FAKES.items() if isinstance(fake, cls))
    outcome = await call_service(tmp_path, dialect, fake)
    assert fake.violations == []
    first, second = fake.sessions
    assert first.accepted and second.accepted
    # The setup went again: Speechmatics' StartRecognition, the query of the others.
    assert second.query == first.query
    if dialect == "speechmatics":
        assert second.kinds("message")[0] == "StartRecognition"
    # Every sample reached the service: the second connection starts where the first one's
    # confirmed audio ended, so together they hold at least the whole call; the overlap
    # (audio sent twice) is bounded by the replay window.
    caller_bytes = outcome.report.frames_sent * 0.02 * 16000 * 2
    total = len(first.audio) + len(second.audio)
    assert total >= caller_bytes
    assert total - caller_bytes <= 0.2 * 16000 * 2 + 0.05 * 16000 * 2
    # After the reconnect, results are placed in the call's time, not the connection's.
    finals = outcome.finals()
    assert words(finals[-1]["text"]) == "alpha bravo"
    assert finals[-1]["start_s"] == pytest.approx(1.85, abs=0.05)
    (reconnected,) = logs("upstream reconnected")
    assert reconnected["lost_ms"] == 0


@ONE_BACKEND
@pytest.mark.parametrize(
    "fake", [("openai-realtime", {"drop_after": 40})], indirect=True, ids=["openai"]
)
async def test_openai_reconnect_is_a_new_session_and_says_so(
    tmp_path: Path, keys: None, fake: FakeService, logs: Callable[[str], list[dict[str, Any]]]
) -> None:
    await call_service(tmp_path, "openai-realtime", fake, utterances=[["hello"], ["alpha"]])
    assert fake.violations == []
    first, second = fake.sessions
    assert second.kinds()[0] == "session.update", "a new session is configured again"
    (warning,) = logs("upstream reconnected: a new session (the conversation so far is lost)")
    assert warning["dropped_ms"] >= 0
    # Nothing from before the reconnect was replayed into the new session: it starts live.
    assert len(first.audio) + len(second.audio) <= (2.6 + 0.2) * 24000 * 2


# --- a voice agent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fake", [("openai-realtime", {"answer_s": 2.0})], indirect=True, ids=["openai"]
)
async def test_openai_barge_in_clears_the_caller_and_truncates_at_what_was_heard(
    tmp_path: Path, keys: None, fake: FakeService
) -> None:
    assert isinstance(fake, FakeOpenAIRealtime)
    # The caller says "hello world" (0.3-1.05 s); the agent answers with 2 s of audio from
    # about 1.5 s; the caller speaks over it at 2.3 s.
    outcome = await call_service(
        tmp_path,
        "openai-realtime",
        fake,
        utterances=[["hello", "world"], ["alpha"]],
        pause_s=1.25,
        tail_s=1.0,
        instructions="You answer every caller with a tone.",
        voice="verse",
    )
    assert fake.violations == []
    (session,) = fake.sessions
    update = session.texts[0]
    assert update["type"] == "session.update"
    assert update["session"]["instructions"] == "You answer every caller with a tone."
    assert update["session"]["audio"]["output"]["voice"] == "verse"
    report = outcome.report
    # Vonage's buffer was cleared once, and the model was told how much of its answer the
    # caller heard: within 40 ms of what the simulated caller had actually heard.
    assert report.clears == 1
    (heard_ms,) = report.heard_at_clears_ms
    ((item, audio_end_ms),) = fake.truncations
    assert fake.barge_ins == [item]
    assert abs(audio_end_ms - heard_ms) <= 40, (audio_end_ms, heard_ms)
    assert 300 <= audio_end_ms <= 1500
    # What Vonage still held of the answer was dropped, never played.
    assert report.frames_cleared > 0
    assert [words(line["text"]) for line in outcome.finals("caller")] == ["hello world", "alpha"]
    agent = [words(line["text"]) for line in outcome.finals("agent")]
    assert agent == ["you said hello world", "you said alpha"]


# --- credentials and the service's errors -------------------------------------------------------

SECRET = "sk-live-DO-NOT-LOG-9f8e7d6c5b4a3210"
HEADER_SECRET = "trace-secret-55aa66bb77cc"
#: How each service tells bridge its key is wrong, as the metrics reason label.
WRONG_KEY_REASON = {
    "deepgram": "http 401",
    "assemblyai": "1008",
    "openai-realtime": "invalid_api_key",
    "elevenlabs": "auth_error",
    "speechmatics": "http 401",
}


@ONE_BACKEND
@pytest.mark.parametrize("fake", list(FAKES), indirect=True)
async def test_a_wrong_key_is_an_error_in_the_services_words_and_no_secret_leaks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    dialect = next(name for name, cls in FAKES.items() if isinstance(fake, cls))
    monkeypatch.setenv(DIALECTS[dialect].key_env, SECRET)  # the fake expects another key
    monkeypatch.setenv("TRACE_SECRET", HEADER_SECRET)
    seen: dict[str, str] = {}

    async def inspect(server: BridgeServer) -> None:
        seen["metrics"] = (await get(server.port, "/metrics")).text
        seen["answer"] = (await get(server.port, "/answer?uuid=u1&from=1&to=2")).text

    outcome = await call_service(
        tmp_path,
        dialect,
        fake,
        upstream_max_attempts=1,
        upstream_header=("X-Trace: ${TRACE_SECRET}",),
        inspect=inspect,
    )
    # The key went where it belongs, the upgrade request, with the expanded header.
    session = fake.sessions[0]
    assert SECRET in " ".join(session.headers.values())
    assert session.headers["x-trace"] == HEADER_SECRET
    # The service's refusal: logged in its words, counted by its reason, the call ended 1011.
    reason = WRONG_KEY_REASON[dialect]
    errors = [r for r in caplog.records if r.getMessage() == "upstream service error"]
    assert [vars(r)["reason"] for r in errors] == [reason]
    assert vars(errors[0])["error"]
    labels = f'reason="{reason}",source="{dialect}"'
    assert metric(seen["metrics"], "bridge_upstream_service_errors_total", labels) == 1
    assert outcome.report.close_code == 1011
    # Neither secret is anywhere a person or a program reads: logs (messages and every
    # field), transcripts, /metrics, /answer, what the caller was told.
    written = [caplog.text, seen["metrics"], seen["answer"], json.dumps(outcome.lines)]
    written += [json.dumps(vars(r), default=str) for r in caplog.records]
    written += [str(outcome.report)]
    for text in written:
        assert SECRET not in text and HEADER_SECRET not in text


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--port", "0", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=wait_s(30),
        cwd=ROOT,
    )


@ONE_BACKEND
def test_a_missing_key_refuses_to_start_with_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("BRIDGE_UPSTREAM_DIALECT", None)
    done = _serve(["--upstream-dialect", "deepgram"], env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DEEPGRAM_API_KEY" in lines[0], done.stderr
    done = _serve(["--upstream-dialect", "openai-realtime", "--upstream-key-env", "MY_KEY"], env)
    assert done.returncode == 2 and "MY_KEY" in done.stderr and "Traceback" not in done.stderr
    # A header naming a variable that is not set is refused the same way, without the value.
    env["ELEVENLABS_API_KEY"] = "x" * 20
    done = _serve(
        ["--upstream-dialect", "elevenlabs", "--upstream-header", "X-Org: ${ORG_ID}"], env
    )
    assert done.returncode == 2 and "${ORG_ID}" in done.stderr and "x" * 20 not in done.stderr


# --- transcripts to the user's application ------------------------------------------------------


class Collector:
    """A real HTTP server on 127.0.0.1 that takes POSTed JSON; it can fail the first ones."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.status = status
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/transcripts?app=1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.attempts += 1
        assert request.startswith(b"POST /hooks/transcripts?app=1 HTTP/1.1")
        if self.attempts <= self.fail_first:
            writer.write(f"HTTP/1.1 {self.status} Busy\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            self.bodies.append(json.loads(body))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@ONE_BACKEND
@pytest.mark.parametrize("fake", ["assemblyai"], indirect=True)
async def test_finals_are_posted_to_the_application_with_retries(
    tmp_path: Path, keys: None, fake: FakeService
) -> None:
    collector = Collector(fail_first=1)
    url = await collector.start()
    seen: dict[str, str] = {}

    async def inspect(server: BridgeServer) -> None:
        await wait_until(lambda: len(collector.bodies) >= 2, 5)
        seen["metrics"] = (await get(server.port, "/metrics")).text

    try:
        outcome = await call_service(
            tmp_path, "assemblyai", fake, transcript_url=url, inspect=inspect
        )
    finally:
        await collector.close()
    # The first POST got a 503 and was retried; both finals arrived, as the file has them.
    assert collector.attempts == 3
    assert [words(b["text"]) for b in collector.bodies] == ["hello world", "alpha bravo"]
    finals = outcome.finals()
    for posted, line in zip(collector.bodies, finals, strict=True):
        assert posted["call_id"] == line["call_id"] and posted["source"] == "assemblyai"
        assert posted["start_s"] == line["start_s"] and posted["final"] is True
    assert metric(seen["metrics"], "bridge_transcript_posts_total", 'result="sent"') >= 2


@ONE_BACKEND
@pytest.mark.parametrize("fake", ["deepgram"], indirect=True)
async def test_an_application_that_never_answers_does_not_delay_the_call(
    tmp_path: Path, keys: None, fake: FakeService
) -> None:
    # It accepts the connection and then says nothing: every POST waits for its timeout.
    writers: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    started = asyncio.get_running_loop().time()
    try:
        outcome = await call_service(
            tmp_path, "deepgram", fake, transcript_url=f"http://127.0.0.1:{port}/t"
        )
    finally:
        silent.close()
        for writer in writers:
            writer.close()
        await silent.wait_closed()
    elapsed = asyncio.get_running_loop().time() - started
    assert outcome.report.completed
    assert [words(line["text"]) for line in outcome.finals()] == ["hello world", "alpha bravo"]
    assert elapsed < wait_s(8), "the call and its clean ending did not wait for the POSTs"
