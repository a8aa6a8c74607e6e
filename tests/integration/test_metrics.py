"""GET /metrics moves when calls run, /health and /ready answer, and every call ends with one
summary line carrying its figures (README: "Observability")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.call import Call
from bridge.handlers import echo
from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, url_of, wait_s
from tests.integration._http import get, metric

FIRST = json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000"})


async def _scrape(port: int) -> str:
    reply = await get(port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return reply.text


async def test_metrics_move_when_a_call_runs() -> None:
    async with running_server() as server:
        port = server.port
        before = await _scrape(port)
        call = asyncio.create_task(run_call(CallOptions(url=url_of(server), seconds=1.5)))
        await asyncio.sleep(wait_s(0.7))
        during = await _scrape(port)
        report = await call
        after = await _scrape(port)
    assert report.exact
    assert metric(before, "bridge_calls_active") == 0
    assert metric(during, "bridge_calls_active") == 1
    assert metric(after, "bridge_calls_active") == 0
    assert 0 < metric(during, "bridge_frames_in_total") < report.frames_sent
    completed = 'outcome="completed"'
    assert (
        metric(after, "bridge_calls_total", completed)
        - metric(before, "bridge_calls_total", completed)
        == 1
    )
    # Exact, not sampled: the call's last figures are added when it ends.
    assert metric(after, "bridge_frames_in_total") == report.frames_sent
    assert metric(after, "bridge_frames_out_total") == report.frames_received
    # Per call-second and per wake-up histograms saw the call.
    assert metric(after, "bridge_inbound_jitter_seconds_count") >= 1
    assert metric(after, "bridge_playout_queue_seconds_count") >= 1
    assert metric(after, "bridge_event_loop_lag_seconds_count") >= 1
    assert metric(after, "process_cpu_seconds_total") > 0


async def test_gap_clear_pacing_and_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    async def clear_then_prompt(call: Call) -> None:
        call.clear()
        await call.play(bytes(16000))  # 1 s at 8 kHz, queued at once: paced by the timer
        await echo(call)

    with caplog.at_level(logging.INFO, logger="bridge.server"):
        async with running_server(clear_then_prompt) as server:
            port = server.port
            async with connect(url_of(server, query="call=gap-1"), compression=None) as ws:
                await ws.send(FIRST)
                assert await ws.recv() == '{"action":"clear"}'
                await ws.send('{"event": "websocket:cleared"}')
                # Read everything the server sends, as Vonage does (an unread client stops
                # reading its socket, and then never sees the close).
                reader = asyncio.create_task(_read_all(ws))
                loop = asyncio.get_running_loop()
                start = loop.time()
                for k in range(60):
                    # On a 20 ms grid, with a 350 ms hole in the caller's audio before frame 30.
                    due = start + k * 0.02 + (0.35 if k >= 30 else 0.0)
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await ws.send(bytes(320))
            await reader
            lost = [c.lost for c in server.connections]
            if lost:
                await asyncio.wait(lost, timeout=wait_s(5))
            text = await _scrape(port)
    # The hole is one gap in the 0.3-0.5 s bucket. A stalled test host can add short gaps
    # of its own (anything over 40 ms counts), so those are allowed below 0.3 s.
    gaps = metric(text, "bridge_inbound_gap_seconds_count")
    assert gaps >= 1
    assert metric(text, "bridge_inbound_gap_seconds_bucket", 'le="0.3"') == gaps - 1
    assert metric(text, "bridge_inbound_gap_seconds_bucket", 'le="0.5"') == gaps
    assert metric(text, "bridge_clear_to_cleared_seconds_count") == 1
    # The prompt left on the pacing timer: it fired for most of its 50 frames.
    assert metric(text, "bridge_pacing_lateness_seconds_count") >= 20
    ended = [r for r in caplog.records if r.getMessage() == "call ended"]
    assert len(ended) == 1
    fields = ended[0].__dict__
    assert fields["call_id"] == "gap-1"
    assert fields["outcome"] == "completed"
    assert fields["frames_in"] == 60 and fields["inbound_gaps"] == gaps
    assert 300 < fields["max_gap_ms"] < 500
    assert 1.5 < fields["duration_s"] < 1.5 + wait_s(2)
    assert fields["jitter_p99_ms"] is not None and fields["jitter_p99_ms"] >= 1
    for key in ("drift_ppm", "underrun_frames", "heard_ms", "max_gap_ms", "close_code"):
        assert key in fields, key


async def _read_all(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def test_health_and_unknown_paths() -> None:
    async with running_server() as server:
        health = await get(server.port, "/health")
        ready = await get(server.port, "/ready")
        answer = await get(server.port, "/answer")  # no --public-url: not served
        other = await get(server.port, "/nope")
    assert (health.status, health.text) == (200, "ok\n")
    assert (ready.status, ready.text) == (200, "ready\n")
    assert answer.status == 404 and other.status == 404
