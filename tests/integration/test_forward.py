"""Forward mode end to end: the real server, the real simulator, real upstream servers.

Upstreams (``tests/upstreams.py``): a recording (and echoing) upstream that confirms audio
only once it is on disk; the same as a separate process that the test SIGKILLs and restarts;
one that never answers the handshake; one that stalls; scripted ones that send odd-sized
chunks at 24 kHz, ``clear`` and ``notify``.

The caller's audio in the fault tests is a counter (sample ``i`` holds ``i``), so the
upstream's recording says exactly which samples arrived, how often, and in what order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.audio.pcm import Samples, tone
from bridge.audio.wav import read_wav, write_wav
from bridge.config import ServerConfig
from bridge.handlers import build_handler
from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, start_server_process, url_of, wait_s
from tests.upstreams import RecordingUpstream, read_connections, start_upstream_process

FRAME_S = 0.02


def counter_wav(path: Path, rate: int, seconds: float) -> Samples:
    """Sample ``i`` is ``i`` (as int16, unique for 65536 samples): a self-locating signal."""
    n = round(rate * seconds)
    assert n <= 65536
    samples = (np.arange(n) - 32768).astype(np.int16)
    write_wav(path, samples, rate)
    return samples


def positions(audio: Samples) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Which caller samples a counter recording holds, in the order they arrived."""
    return audio.astype(np.int64) + 32768


def forward_config(url: str, **settings: Any) -> ServerConfig:
    return ServerConfig(port=0, mode="forward", upstream=url, **settings)


@pytest.fixture
def upstream_summaries(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The ``upstream link closed`` log lines: each call's link counters."""
    caplog.set_level(logging.INFO, logger="bridge")

    def get() -> list[dict[str, Any]]:
        return [dict(vars(r)) for r in caplog.records if r.getMessage() == "upstream link closed"]

    return get


def mode_settings(config: ServerConfig) -> dict[str, Any]:
    """What ``running_server`` needs to build the same config (the handler has the rest)."""
    return {"mode": config.mode, "upstream": config.upstream}


# --- the audio both ways ----------------------------------------------------------------------


async def test_upstream_gets_the_callers_frames_exactly_and_its_echo_comes_back_exact(
    tmp_path: Path,
) -> None:
    upstream = RecordingUpstream(tmp_path / "up", echo=True)
    port = await upstream.start()
    sent = tmp_path / "sent.wav"
    config = forward_config(
        f"ws://127.0.0.1:{port}/stt?x=1",
        upstream_hello='{"call":"$call_id","rate":$rate,"lang":"$language"}',
    )
    try:
        async with running_server(build_handler(config), **mode_settings(config)) as server:
            report = await run_call(
                CallOptions(
                    url=url_of(server),
                    rate=16000,
                    seconds=2.0,
                    tone_hz=440,
                    record_sent=sent,
                    dtmf="1#",
                    dtmf_at_s=0.5,
                    headers={"language": "en-GB"},
                )
            )
    finally:
        await upstream.close()
    (conn,) = read_connections(tmp_path / "up")
    caller, _ = read_wav(sent)
    # Same rate: the upstream got every sample the caller sent, bit for bit, nothing more.
    assert np.array_equal(conn.audio, caller)
    # Its echo came back as exact 20 ms frames, each the very frame the caller sent.
    assert report.exact, report
    assert report.bad_frames == 0
    hello = json.loads(conn.texts[0])
    assert hello["rate"] == 16000 and hello["lang"] == "en-GB" and hello["call"]
    events = [json.loads(t) for t in conn.texts[1:]]
    assert [e["digit"] for e in events if e["event"] == "websocket:dtmf"] == ["1", "#"]


# --- upstream faults --------------------------------------------------------------------------


def check_counter_coverage(
    conns: list[Any], total: int
) -> tuple[int, list[int], list[tuple[int, int]]]:
    """Per connection: contiguous, increasing runs. Returns (duplicates, per-reconnect
    overlaps in samples, gaps as (first missing, count))."""
    duplicates = 0
    overlaps: list[int] = []
    gaps: list[tuple[int, int]] = []
    expected = 0
    for conn in conns:
        pos = positions(conn.audio)
        if not len(pos):
            continue
        # Within a connection: strictly consecutive samples, no gap, no repeat, no reorder.
        assert np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))), "not contiguous"
        if pos[0] < expected:
            overlaps.append(int(expected - pos[0]))
            duplicates += int(min(expected, pos[-1] + 1) - pos[0])
        elif pos[0] > expected:
            gaps.append((expected, int(pos[0] - expected)))
        expected = max(expected, int(pos[-1]) + 1)
    if expected < total:
        gaps.append((expected, total - expected))
    return duplicates, overlaps, gaps


async def test_upstream_killed_and_restarted_receives_every_sample_in_order(
    tmp_path: Path, upstream_summaries: Callable[[], list[dict[str, Any]]]
) -> None:
    rate, seconds = 16000, 3.0
    wav = tmp_path / "counter.wav"
    caller = counter_wav(wav, rate, seconds)
    directory = tmp_path / "up"
    first = await start_upstream_process(directory)
    config = forward_config(
        f"ws://127.0.0.1:{first.port}/",
        upstream_hello='{"call":"$call_id"}',
        upstream_backoff_ms=50,
    )
    handler = build_handler(config)
    second = None
    async with running_server(handler, **mode_settings(config)) as server:
        call = asyncio.create_task(
            run_call(
                CallOptions(
                    url=url_of(server, query="call=kill-1"),
                    rate=rate,
                    seconds=seconds,
                    wav=wav,
                    stamp=False,
                )
            )
        )
        try:
            await asyncio.sleep(wait_s(1.0))
            await first.kill()  # SIGKILL: no close frame, whatever was in flight is gone
            await asyncio.sleep(wait_s(0.5))
            second = await start_upstream_process(directory, first.port)
            report = await call
        finally:
            if second is not None:
                await asyncio.sleep(wait_s(0.2))
                await second.kill()
    assert report.completed
    conns = read_connections(directory)
    assert len(conns) >= 2
    for conn in conns:
        assert conn.texts[0] == '{"call":"kill-1"}'  # the hello, again on every connection
    duplicates, overlaps, gaps = check_counter_coverage(conns, len(caller))
    assert gaps == []  # every sample the caller sent reached the upstream
    (summary,) = upstream_summaries()
    replay_max = 200 * rate // 1000
    assert all(o <= replay_max for o in overlaps)  # repeats only at a reconnect, bounded
    assert duplicates <= summary["ms_resent"] * rate // 1000  # and counted
    assert summary["ms_lost"] == 0
    assert summary["connects"] >= 2
    print(
        f"kill/restart: duplicates {duplicates * 1000 / rate:.1f} ms, resent "
        f"{summary['ms_resent']} ms, backlog {summary['ms_backlog']} ms, lost "
        f"{summary['ms_lost']} ms, attempts failed {summary['failed_attempts']}"
    )


async def test_outage_longer_than_the_buffer_drops_the_oldest_and_counts_it(
    tmp_path: Path, upstream_summaries: Callable[[], list[dict[str, Any]]]
) -> None:
    rate, seconds = 8000, 3.0
    wav = tmp_path / "counter.wav"
    caller = counter_wav(wav, rate, seconds)
    directory = tmp_path / "up"
    first = await start_upstream_process(directory)
    config = forward_config(
        f"ws://127.0.0.1:{first.port}/", upstream_buffer_ms=400, upstream_backoff_ms=50
    )
    handler = build_handler(config)
    second = None
    async with running_server(handler, **mode_settings(config)) as server:
        call = asyncio.create_task(
            run_call(
                CallOptions(url=url_of(server), rate=rate, seconds=seconds, wav=wav, stamp=False)
            )
        )
        try:
            await asyncio.sleep(wait_s(0.6))
            await first.kill()
            await asyncio.sleep(wait_s(1.2))  # three times the buffer
            second = await start_upstream_process(directory, first.port)
            report = await call
        finally:
            if second is not None:
                await asyncio.sleep(wait_s(0.2))
                await second.kill()
    assert report.completed  # the call itself never noticed
    duplicates, _, gaps = check_counter_coverage(read_connections(directory), len(caller))
    (summary,) = upstream_summaries()
    assert duplicates <= summary["ms_resent"] * rate // 1000
    lost = summary["ms_lost"] * rate // 1000
    maybe = summary["ms_unconfirmed_dropped"] * rate // 1000
    assert lost >= 800 * rate // 1000  # at least the outage minus the buffer
    # Exactly one hole, and the link counted it: what it never sent, plus at most what it
    # had sent unconfirmed (which the killed upstream may or may not have kept).
    (gap,) = gaps
    assert lost <= gap[1] <= lost + maybe
    print(f"outage: gap {gap[1] * 1000 / rate:.0f} ms, counted lost {summary['ms_lost']} ms")


async def test_stalled_upstream_is_abandoned_and_the_next_connection_gets_everything(
    tmp_path: Path, upstream_summaries: Callable[[], list[dict[str, Any]]]
) -> None:
    rate, seconds = 16000, 2.5
    wav = tmp_path / "counter.wav"
    caller = counter_wav(wav, rate, seconds)
    # The first connection stops reading (and answering pings) after 30 frames.
    upstream = RecordingUpstream(tmp_path / "up", stall_connections=1, stall_after_frames=30)
    port = await upstream.start()
    config = forward_config(
        f"ws://127.0.0.1:{port}/", upstream_timeout_s=0.5, upstream_backoff_ms=20
    )
    try:
        async with running_server(build_handler(config), **mode_settings(config)) as server:
            report = await run_call(
                CallOptions(url=url_of(server), rate=rate, seconds=seconds, wav=wav, stamp=False)
            )
    finally:
        await upstream.close()
    assert report.completed
    conns = read_connections(tmp_path / "up")
    assert len(conns) == 2
    duplicates, overlaps, gaps = check_counter_coverage(conns, len(caller))
    assert gaps == []
    (summary,) = upstream_summaries()
    assert summary["stalls"] == 1
    assert all(o <= 200 * rate // 1000 for o in overlaps)
    assert duplicates <= summary["ms_resent"] * rate // 1000
    print(f"stall: duplicates {duplicates * 1000 / rate:.0f} ms, resent {summary['ms_resent']} ms")


async def test_upstream_that_never_answers_ends_only_its_own_call(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never answer the upgrade

    mute_server = await asyncio.start_server(mute, "127.0.0.1", 0)
    mute_port = mute_server.sockets[0].getsockname()[1]
    config = forward_config(
        f"ws://127.0.0.1:{mute_port}/",
        upstream_timeout_s=0.3,
        upstream_max_attempts=3,
        upstream_backoff_ms=20,
    )
    try:
        async with (
            running_server(build_handler(config), **mode_settings(config)) as forwarding,
            running_server() as echoing,
        ):
            stuck, echoed = await asyncio.gather(
                run_call(CallOptions(url=url_of(forwarding), rate=16000, seconds=3.0)),
                run_call(CallOptions(url=url_of(echoing), rate=16000, seconds=2.0)),
            )
    finally:
        for writer in accepted:
            writer.close()
        mute_server.close()
        await mute_server.wait_closed()
    # Three handshakes timed out: bridge ends that call with 1011 (Vonage then runs the
    # NCCO's next step) well before the caller would have hung up.
    assert stuck.close_code == 1011 and stuck.close_reason == "upstream unavailable"
    assert stuck.duration_s < 2.5
    assert len(accepted) == 3
    # Meanwhile another call on the same event loop stayed exact and prompt.
    assert echoed.exact
    # (p99: a stalled test host can delay one frame; a blocked loop would hold every frame
    # for a 300 ms handshake timeout.)
    assert echoed.rtt_p99_ms is not None and echoed.rtt_p99_ms < wait_s(0.05) * 1000
    assert echoed.rtt_max_ms is not None and echoed.rtt_max_ms < wait_s(0.25) * 1000


# --- rates, odd chunks, commands from the upstream ---------------------------------------------


@pytest.fixture
async def scripted_upstream() -> AsyncIterator[
    Callable[[Callable[[ServerConnection], Awaitable[None]]], Awaitable[int]]
]:
    """Start websockets servers running a script per connection; returns the port."""
    servers: list[Any] = []

    async def start(script: Callable[[ServerConnection], Awaitable[None]]) -> int:
        server = await serve(script, "127.0.0.1", 0, compression=None)
        servers.append(server)
        return int(next(iter(server.sockets)).getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def peak_hz(samples: Samples, rate: int) -> float:
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def test_upstream_at_another_rate_gets_the_right_sample_count_and_the_tone(
    tmp_path: Path, scripted_upstream: Any
) -> None:
    received = bytearray()

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                received.extend(message)
                await ws.send(message)  # echo at 16 kHz: bridge resamples back to 8 kHz

    port = await scripted_upstream(record)
    config = forward_config(f"ws://127.0.0.1:{port}/", upstream_rate=16000)
    back = tmp_path / "back.wav"
    async with running_server(build_handler(config), **mode_settings(config)) as server:
        report = await run_call(
            CallOptions(
                url=url_of(server), rate=8000, seconds=2.0, tone_hz=440, stamp=False, record=back
            )
        )
    audio = np.frombuffer(bytes(received), dtype="<i2")
    ideal = 2 * 8000 * 2  # two seconds of caller audio at 16 kHz
    assert abs(len(audio) - ideal) <= 320  # within one 20 ms frame over the whole call
    assert abs(peak_hz(audio[3200:-3200], 16000) - 440) < 5
    # What came back reached the caller as exact 8 kHz frames, still a 440 Hz tone.
    assert report.bad_frames == 0
    assert report.frames_received >= report.frames_sent - 3
    heard, _ = read_wav(back)
    assert abs(peak_hz(heard[1600:-1600], 8000) - 440) < 5


async def test_odd_sized_chunks_at_24k_reach_the_caller_as_exact_frames(
    tmp_path: Path, scripted_upstream: Any
) -> None:
    answer = tone(1000, 24000, 36000)  # 1.5 s at 24 kHz
    raw = answer.tobytes()

    async def speak(ws: ServerConnection) -> None:
        sizes = [317, 1001, 77, 4801, 2999, 3]  # odd byte counts: samples split across chunks
        position, i = 0, 0
        while position < len(raw):
            size = sizes[i % len(sizes)]
            await ws.send(raw[position : position + size])
            position += size
            i += 1
            await asyncio.sleep(size / 48000 / 2)  # about twice real time, in bursts
        async for _ in ws:
            pass

    port = await scripted_upstream(speak)
    config = forward_config(f"ws://127.0.0.1:{port}/", upstream_rate=24000)
    back = tmp_path / "back.wav"
    async with running_server(build_handler(config), **mode_settings(config)) as server:
        report = await run_call(
            CallOptions(url=url_of(server), rate=16000, seconds=2.5, stamp=False, record=back)
        )
    # The simulator ends a call on any frame that is not exactly 640 bytes: none came.
    assert report.bad_frames == 0
    assert report.completed
    assert abs(report.frames_received - 75) <= 1  # 1.5 s of answer, in 20 ms frames
    heard, _ = read_wav(back)
    voiced = heard[np.abs(heard) > 0]
    assert abs(len(voiced) - 24000) < 400
    assert abs(peak_hz(voiced[800:-800], 16000) - 1000) < 5
    level = np.sqrt(np.mean(voiced[800:-800].astype(np.float64) ** 2))
    assert abs(level - 8000 / np.sqrt(2)) < 200


async def test_clear_and_notify_from_the_upstream_reach_vonage_and_its_answers_come_back(
    tmp_path: Path, scripted_upstream: Any
) -> None:
    texts: list[dict[str, Any]] = []

    async def bot(ws: ServerConnection) -> None:
        async def listen() -> None:
            async for message in ws:
                if isinstance(message, str):
                    texts.append(json.loads(message))

        listener = asyncio.create_task(listen())
        # A short answer with a marker after it, then a long one that the caller interrupts.
        await ws.send(tone(500, 16000, 8000).tobytes())  # 0.5 s
        await ws.send(json.dumps({"action": "notify", "payload": {"answer": 1}}))
        await ws.send(tone(700, 16000, 160000).tobytes())  # 10 s, sent at once
        await ws.send(json.dumps({"action": "notify", "payload": {"answer": 2}}))
        await asyncio.sleep(wait_s(1.2))
        await ws.send(json.dumps({"action": "clear"}))
        await listener

    port = await scripted_upstream(bot)
    logs = tmp_path / "logs"
    config = forward_config(f"ws://127.0.0.1:{port}/", transcripts=str(logs))
    async with running_server(build_handler(config), **mode_settings(config)) as server:
        report = await run_call(
            CallOptions(url=url_of(server, query="call=bot-7"), rate=16000, seconds=2.5)
        )
    # The first marker was answered once its audio had played; the second was still queued
    # in bridge behind the long answer, and went with it at the clear.
    assert report.notifies == 1 and report.notifies_answered == 1
    assert report.clears == 1 and report.frames_cleared > 0
    # bridge dropped its own queue too: far less than the 10.5 s the bot sent was sent on.
    assert report.frames_received < 2.5 / FRAME_S
    assert {"event": "websocket:notify", "payload": {"answer": 1}} in texts
    assert {"event": "websocket:cleared"} in texts
    lines = [json.loads(line) for line in (logs / "bot-7.jsonl").read_text().splitlines()]
    assert all(line["call_id"] == "bot-7" and "at" in line and "t" in line for line in lines)
    kinds = [
        (line["type"], line["message"].get("action") or line["message"].get("event"))
        for line in lines
    ]
    assert ("upstream", "notify") in kinds and ("upstream", "clear") in kinds
    assert ("call", "websocket:cleared") in kinds and ("call", "websocket:notify") in kinds


async def test_forward_from_the_command_line(tmp_path: Path) -> None:
    upstream = RecordingUpstream(tmp_path / "up", echo=True)
    port = await upstream.start()
    server = start_server_process(
        [
            "--mode",
            "forward",
            "--upstream",
            f"ws://127.0.0.1:{port}/listen",
            "--upstream-rate",
            "16000",
            "--upstream-hello",
            '{"start":"$call_id","sample_rate":$rate}',
        ]
    )
    try:
        report = await run_call(
            CallOptions(url=server.url + "?call=cli-1", rate=8000, seconds=1.0, tone_hz=300)
        )
    finally:
        assert server.stop() == 0
        await upstream.close()
    (conn,) = read_connections(tmp_path / "up")
    assert json.loads(conn.texts[0]) == {"start": "cli-1", "sample_rate": 16000}
    assert abs(len(conn.audio) - 16000) <= 320  # one second at 16 kHz
    assert report.bad_frames == 0 and report.frames_received >= 45  # the echo, at 8 kHz
    assert "upstream link closed" in server.messages()
