"""The ``bridge`` command as a user runs it: argument errors, serving, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from bridge.sim import CallOptions, run_call
from tests.helpers import run_bridge, start_server_process, wait_s


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_bridge(*args, env=env)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["serve", "--port", "70000"], {}, "--port"),
        (["serve", "--pipeline-rate", "44100"], {}, "--pipeline-rate"),
        (["serve", "--lead-ms", "soon"], {}, "--lead-ms"),
        (["serve", "--no-such-option"], {}, "unrecognized arguments"),
        (["serve"], {"BRIDGE_MAX_MESSAGE_BYTES": "lots"}, "BRIDGE_MAX_MESSAGE_BYTES"),
        (["serve", "--path", "socket"], {}, "--path"),
        (["call", "ws://127.0.0.1:9/socket", "--rate", "1234"], {}, "rate"),
        (["call", "ws://127.0.0.1:9/socket", "--header", "novalue"], {}, "header"),
        (["call", "ws://127.0.0.1:9/socket", "--wav", "/nonexistent.wav"], {}, "nonexistent"),
        (["call", "ws://127.0.0.1:9/socket", "--dtmf", "12x"], {}, "DTMF"),
        (["load", "ws://127.0.0.1:9/socket", "--calls", "0"], {}, "calls"),
        ([], {}, "required"),
    ],
)
def test_cli_mistakes_print_one_line_and_exit_2(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bridge: error:")
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_call_to_nothing_reports_and_exits_1() -> None:
    result = run_cli("call", "ws://127.0.0.1:9/socket", "--seconds", "1")
    assert result.returncode == 1
    assert "could not connect" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_the_server_cleanly_with_a_live_call(sig: signal.Signals) -> None:
    # No drain: calls are closed at once (draining is tested in test_lifecycle.py).
    server = start_server_process(["--drain-seconds", "0"])
    try:
        call = asyncio.create_task(run_call(CallOptions(url=server.url, rate=16000, seconds=5.0)))
        await asyncio.sleep(wait_s(1.0))
        server.proc.send_signal(sig)
        report = await asyncio.wait_for(call, wait_s(10))
        code = await asyncio.to_thread(server.stop, None)
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0, server.lines
    assert report.close_code == 1001
    assert report.frames_received > 0
    assert report.frames_lost <= 1  # a frame in flight at the close may not come back
    assert "shutting down" in server.messages()
    assert "call ended" in server.messages()


async def test_served_echo_over_cli_is_exact() -> None:
    server = start_server_process(["--pipeline-rate", "16000"])
    try:
        report = await run_call(CallOptions(url=server.url, rate=16000, seconds=1.0))
    finally:
        server.stop()
    assert report.exact
