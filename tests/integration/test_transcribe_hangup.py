"""Transcription at the edges of a call: speech that runs to the hang-up, and recognisers that
fail (a worker process killed mid-call) without silence and without touching other calls.

Real pocketsphinx in real worker processes, real calls over loopback; the speech is a
committed fixture (``tests/data``), so no text-to-speech program runs here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.audio.wav import read_wav
from bridge.config import ServerConfig
from bridge.handlers import BuiltHandler, build_handler
from bridge.handlers.transcribe import transcribe
from bridge.sim import CallOptions, run_call
from bridge.transcribe import WORKER_NICE, AsrPool
from tests.helpers import ROOT, running_server, url_of, wait_s
from tests.integration._http import get, metric

pytest.importorskip("pocketsphinx")

#: "please connect me to the billing department", cut right after the last word (2.51 s).
SPEECH = ROOT / "tests" / "data" / "billing_slt_16k.wav"
WORDS = ["please", "connect", "me", "to", "the", "billing", "department"]
#: The endpointer reads 30 ms frames (480 samples at 16 kHz).
ENDPOINTER_FRAME_S = 0.03


def transcript(directory: Path, call_id: str) -> list[dict[str, Any]]:
    path = directory / f"{call_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def said(lines: list[dict[str, Any]]) -> list[str]:
    return " ".join(line["text"] for line in lines if line["type"] == "utterance").split()


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[BuiltHandler]:
    built = build_handler(ServerConfig(mode="transcribe", transcripts=str(tmp_path)))
    yield built
    built.close()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(124, id="mid-endpointer-frame"),  # 2.48 s: 82.67 endpointer frames
        pytest.param(123, id="at-endpointer-frame-boundary"),  # 2.46 s: exactly 82
    ],
)
async def test_speech_that_runs_to_the_hang_up_is_all_transcribed(
    frames: int, tmp_path: Path, handler: BuiltHandler
) -> None:
    seconds = frames * 0.02
    boundary = round(seconds / ENDPOINTER_FRAME_S, 6).is_integer()
    assert boundary == (frames == 123)
    async with running_server(handler, mode="transcribe", transcripts=str(tmp_path)) as srv:
        report = await run_call(
            CallOptions(
                url=url_of(srv, query="call=hangup"),
                rate=16000,
                seconds=seconds,
                wav=SPEECH,
                stamp=False,
            )
        )
    assert report.completed and report.frames_sent == frames
    lines = transcript(tmp_path, "hangup")
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert summary["status"] == "complete", summary
    assert summary["not_decoded_ms"] == 0
    assert summary["utterances"] == 1
    assert said(lines) == WORDS
    utterance = lines[0]
    # The utterance ends where the call did: the speech ran to the hang-up.
    assert utterance["end_s"] == pytest.approx(seconds, abs=0.03)


async def test_a_killed_recogniser_fails_its_call_loudly_and_no_other(tmp_path: Path) -> None:
    """Two recogniser processes; the one serving call A is killed while A and B both talk.

    A's summary says its transcription failed and how much was not decoded, /metrics counts
    it, B (on the other process) is transcribed in full, and a call after the crash is
    served by a fresh process.
    """
    pool = AsrPool(processes=2)
    built = BuiltHandler(transcribe(pool, tmp_path), [pool.close], [pool.totals])
    speech_s = len(read_wav(SPEECH)[0]) // 320 * 0.02  # 2.50 s, whole frames
    long_s = 4 * speech_s  # A says the sentence four times over
    try:
        await asyncio.wait_for(asyncio.wrap_future(pool.ready[0]), wait_s(30))
        await asyncio.wait_for(asyncio.wrap_future(pool.ready[1]), wait_s(30))
        pids = await pool.pids()
        async with running_server(built, mode="transcribe", transcripts=str(tmp_path)) as srv:

            def options(call_id: str, seconds: float) -> CallOptions:
                return CallOptions(
                    url=url_of(srv, query=f"call={call_id}"),
                    rate=16000,
                    seconds=seconds,
                    wav=SPEECH,
                    stamp=False,
                )

            call_a = asyncio.create_task(run_call(options("a", long_s)))
            await asyncio.sleep(wait_s(0.5))  # A has the first process (least loaded)
            call_b = asyncio.create_task(run_call(options("b", speech_s)))
            await asyncio.sleep(wait_s(1.5))  # both mid-speech
            os.kill(pids[0], signal.SIGKILL)
            report_a, report_b = await asyncio.gather(call_a, call_b)
            # After the crash: a new call is transcribed (the dead process was replaced).
            report_c = await run_call(options("c", speech_s))
            scraped = (await get(srv.port, "/metrics")).text
    finally:
        built.close()
    assert report_a.completed and report_b.completed and report_c.completed
    lines_a = transcript(tmp_path, "a")
    summary_a = lines_a[-1]
    assert summary_a["type"] == "summary"
    assert summary_a["status"] == "failed"
    assert "recogniser" in summary_a["error"]
    # At least everything after the kill (about 2 s in) was not decoded; at most the call.
    assert (long_s - 2.5) * 1000 <= summary_a["not_decoded_ms"] <= long_s * 1000
    for call_id in ("b", "c"):
        lines = transcript(tmp_path, call_id)
        assert lines[-1]["status"] == "complete", lines[-1]
        assert said(lines) == WORDS, call_id
    assert metric(scraped, "bridge_transcription_failures_total") == 1
    not_decoded = metric(scraped, "bridge_transcription_not_decoded_seconds_total")
    assert not_decoded == pytest.approx(summary_a["not_decoded_ms"] / 1000, abs=0.001)
    print(f"killed recogniser: A's summary {summary_a}")


async def test_recogniser_processes_decode_below_the_event_loops_priority() -> None:
    """A decode is a burst of CPU: it must not delay the loops that pace calls' frames."""
    pool = AsrPool(processes=1)
    try:
        await asyncio.wait_for(asyncio.wrap_future(pool.ready[0]), wait_s(30))
        (pid,) = await pool.pids()
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + WORKER_NICE)
    finally:
        pool.close()
