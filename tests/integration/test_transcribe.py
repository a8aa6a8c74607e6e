"""Transcribe mode: real speech (flite, tests/data), real pocketsphinx in a worker process.

The caller says a known sentence; the transcript file must hold its words with plausible
times, and an echo call running at the same time must stay byte-exact and prompt (decoding
never runs on the event loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.wav import read_wav, write_wav
from bridge.config import ServerConfig
from bridge.handlers import BuiltHandler, build_handler
from bridge.sim import CallOptions, run_call
from tests.helpers import DATA, running_server, start_server_process, url_of, wait_s

pytest.importorskip("pocketsphinx")

SENTENCE = "the quick brown fox jumps over the lazy dog"
WORDS = SENTENCE.split()
LEAD_IN_S = 0.5


@pytest.fixture(scope="module")
def sentence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sentence at 16 kHz between 0.5 s of silence before and 0.3 s after."""
    directory = tmp_path_factory.mktemp("speech")
    speech, rate = read_wav(DATA / "fox_slt_16k.wav")  # SENTENCE, flite voice slt
    assert rate == 16000
    padded = np.concatenate(
        (np.zeros(int(LEAD_IN_S * rate), np.int16), speech, np.zeros(int(0.3 * rate), np.int16))
    )
    path = directory / "sentence.wav"
    write_wav(path, padded, rate)
    return path


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[BuiltHandler]:
    built = build_handler(
        ServerConfig(mode="transcribe", transcripts=str(tmp_path / "transcripts"))
    )
    yield built
    built.close()


def words_found(text: str) -> int:
    said = text.split()
    return sum(1 for word in WORDS if word in said)


async def test_a_spoken_sentence_is_transcribed_while_an_echo_call_stays_exact(
    sentence: Path, tmp_path: Path, handler: BuiltHandler
) -> None:
    seconds = len(read_wav(sentence)[0]) / 16000
    async with (
        running_server(handler, mode="transcribe", transcripts=str(tmp_path)) as asr,
        running_server() as echo,
    ):
        spoken, echoed = await asyncio.gather(
            run_call(
                CallOptions(
                    url=url_of(asr, query="call=asr-1"),
                    rate=16000,
                    seconds=seconds,
                    wav=sentence,
                    stamp=False,
                )
            ),
            run_call(CallOptions(url=url_of(echo), rate=16000, seconds=seconds)),
        )
        # The recogniser finishes after the hang-up; a loaded machine (CI's suites side by
        # side) took longer than the server's close waits, so wait for the call's handler.
        if asr.tasks:
            await asyncio.wait(list(asr.tasks), timeout=wait_s(30))
    assert spoken.completed
    assert spoken.frames_received == 0  # transcribe sends nothing into the call
    lines = [
        json.loads(line)
        for line in (tmp_path / "transcripts" / "asr-1.jsonl").read_text().splitlines()
    ]
    utterances = [line for line in lines if line["type"] == "utterance"]
    assert lines[-1]["type"] == "summary" and lines[-1]["utterances"] == len(utterances)
    text = " ".join(u["text"] for u in utterances)
    found = words_found(text)
    assert found >= 0.8 * len(WORDS), text
    # Times are in the call's audio: speech starts after the half second of silence.
    first, last = utterances[0], utterances[-1]
    assert LEAD_IN_S - 0.35 <= first["start_s"] <= LEAD_IN_S + 0.35
    assert first["start_s"] < first["end_s"] <= last["end_s"] <= seconds + 0.05
    assert all(u["call_id"] == "asr-1" and u["words"] for u in utterances)
    # The echo call beside it: byte-exact, and its round trip never near the lead.
    assert echoed.exact
    # (p99: a stalled test host can delay one frame; a decode on the loop would hold many.)
    assert echoed.rtt_p99_ms is not None and echoed.rtt_p99_ms < wait_s(0.05) * 1000
    assert echoed.rtt_max_ms is not None and echoed.rtt_max_ms < wait_s(0.25) * 1000
    print(f"transcribe: {found}/{len(WORDS)} words: {text!r}; echo rtt max {echoed.rtt_max_ms} ms")


async def test_transcribe_from_the_command_line_at_16k_and_8k(
    sentence: Path, tmp_path: Path
) -> None:
    samples, _ = read_wav(sentence)
    out = tmp_path / "t"
    server = start_server_process(["--mode", "transcribe", "--transcripts", str(out)])
    try:
        reports = await asyncio.gather(
            *(
                run_call(
                    CallOptions(
                        url=f"{server.url}?call=cli-{rate}",
                        rate=rate,  # 8 kHz: bridge resamples to the recogniser's 16 kHz
                        seconds=len(samples) / 16000,
                        wav=sentence,
                        stamp=False,
                    )
                )
                for rate in (16000, 8000)
            )
        )
    finally:
        # The drain waits for the recogniser to finish both calls' last utterances: seconds
        # of decoding, more on a busy host (10 s was not enough with both cores taken).
        assert server.stop(timeout=60) == 0
    assert all(report.completed for report in reports)
    found = {}
    for rate in (16000, 8000):
        lines = [json.loads(line) for line in (out / f"cli-{rate}.jsonl").read_text().splitlines()]
        text = " ".join(line["text"] for line in lines if line["type"] == "utterance")
        found[rate] = (words_found(text), text)
    assert found[16000][0] >= 0.8 * len(WORDS), found
    # pocketsphinx ships a wideband model only: telephone-band audio loses words, but the
    # sentence must still be recognisably there (a broken resampling path gives ~nothing).
    assert found[8000][0] >= len(WORDS) // 3, found
    assert any(line.get("msg") == "utterance" for line in server.lines)  # and it was logged
    print(f"transcribe from the CLI: {found}")


async def test_transcribe_combines_with_echo(sentence: Path, tmp_path: Path) -> None:
    """``--transcribe`` with another mode: the caller hears the echo and is transcribed too."""
    samples, _ = read_wav(sentence)
    out = tmp_path / "t"
    config = ServerConfig(mode="echo", transcribe=True, transcripts=str(out))
    built = build_handler(config)
    try:
        async with running_server(built, mode="echo", transcribe=True, transcripts=str(out)) as srv:
            report = await run_call(
                CallOptions(
                    url=url_of(srv, query="call=both"),
                    rate=16000,
                    seconds=len(samples) / 16000,
                    wav=sentence,
                )
            )
    finally:
        built.close()
    assert report.exact  # the echo is untouched by the recogniser beside it
    lines = [json.loads(line) for line in (out / "both.asr.jsonl").read_text().splitlines()]
    text = " ".join(line["text"] for line in lines if line["type"] == "utterance")
    assert words_found(text) >= 0.8 * len(WORDS), text
