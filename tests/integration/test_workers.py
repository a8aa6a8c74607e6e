"""``--workers 2``: two processes on one port (SO_REUSEPORT), calls spread over both, metrics
summed across them, a killed worker restarted, SIGTERM drains all and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from bridge.sim import CallOptions, CallReport, run_call
from tests.helpers import ServerProcess, start_server_process, wait_s
from tests.integration._http import get, metric

MAX_BATCHES = 10  # 4 calls each; both workers are seen long before (each call is a coin flip)


def _workers_of_calls(server: ServerProcess) -> set[object]:
    return {line.get("worker") for line in server.lines if line.get("msg") == "call started"}


async def _batch(url: str) -> list[CallReport]:
    return list(
        await asyncio.gather(*(run_call(CallOptions(url=url, seconds=0.3)) for _ in range(4)))
    )


async def _metrics_when(port: int, frames: int) -> str:
    """Scrape until every finished call's frames are counted (each worker adds a call's last
    figures as its socket closes, a moment after the client sees the close)."""
    async with asyncio.timeout(wait_s(5)):
        while True:
            text = (await get(port, "/metrics")).text
            if metric(text, "bridge_frames_in_total") >= frames:
                return text
            await asyncio.sleep(0.05)


async def _line(server: ServerProcess, msg: str) -> dict[str, object]:
    async with asyncio.timeout(wait_s(10)):
        while True:
            for line in list(server.lines):
                if line.get("msg") == msg:
                    return line
            await asyncio.sleep(0.05)


async def test_two_workers_share_the_port_and_are_supervised() -> None:
    server = start_server_process(["--workers", "2", "--drain-seconds", "5"])
    try:
        listening = next(line for line in server.lines if line.get("msg") == "listening")
        pids = listening["pids"]
        assert isinstance(pids, list) and len(pids) == 2
        metrics_dir = Path(str(listening["metrics_dir"]))
        assert await asyncio.to_thread(metrics_dir.is_dir)
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])

        reports: list[CallReport] = []
        for _ in range(MAX_BATCHES):
            reports += await _batch(server.url)
            if _workers_of_calls(server) == {0, 1}:
                break
        assert _workers_of_calls(server) == {0, 1}, "calls spread over both workers"
        assert all(r.exact for r in reports)
        sent = sum(r.frames_sent for r in reports)
        text = await _metrics_when(port, sent)
        # Summed over both processes, whichever worker answered the scrape.
        assert metric(text, "bridge_frames_in_total") == sent
        assert metric(text, "bridge_calls_total", 'outcome="completed"') == len(reports)
        assert metric(text, "bridge_calls_active") == 0

        os.kill(int(pids[0]), signal.SIGKILL)
        died = await _line(server, "worker died; restarting")
        restarted = await _line(server, "worker restarted")
        more = await _batch(server.url)
        assert all(r.exact for r in more)
        total = sent + sum(r.frames_sent for r in more)
        text = await _metrics_when(port, total)
        # The dead worker's counts survive it; nothing is counted twice.
        assert metric(text, "bridge_frames_in_total") == total
        code = await asyncio.to_thread(server.stop, signal.SIGTERM, 15.0)
    finally:
        server.stop(signal.SIGKILL)
    assert died["worker"] == 0 and died["exit_code"] == -signal.SIGKILL
    assert restarted["worker"] == 0
    assert code == 0
    assert not await asyncio.to_thread(metrics_dir.exists), "the supervisor removes its folder"
    drained = [line for line in server.lines if line.get("msg") == "drained"]
    assert {line.get("worker") for line in drained} == {0, 1}
