"""An ended call is freed at once, not left to the cyclic garbage collector.

A call's objects (its buffers and resamplers, the connection, the recorder's taps) pointed at
each other: every ended call waited for a full collection, whose passes grow rarer as the heap
grows, and a server under steady traffic grew for 20 minutes (docs/reliability.md s.4). With
the collector switched off, every call a real server handled (real simulator calls over
loopback) must be gone the moment the server is done with it: nothing but reference counting
frees it then.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.call import Call
from bridge.config import ServerConfig
from bridge.filewriter import written
from bridge.handlers import build_handler
from bridge.sim import CallOptions, run_call
from tests.helpers import TRANSPORT, running_server, start_server_process, url_of, wait_s
from tests.upstreams import start_upstream_process


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "mode", ["echo", "echo-recorded", "play-barge-in", "forward"], ids=lambda mode: mode
)
async def test_every_ended_call_is_freed_without_the_collector(
    mode: str, tmp_path: Path, collector_off: None
) -> None:
    settings: dict[str, object] = {}
    upstream = None
    if mode == "echo-recorded":
        settings = {"record_dir": str(tmp_path / "rec")}
    elif mode == "play-barge-in":
        settings = {"mode": "play", "tone": 440.0, "barge_in": True}
    elif mode == "forward":
        upstream = await start_upstream_process(tmp_path / "up")
        settings = {"mode": "forward", "upstream": f"ws://127.0.0.1:{upstream.port}/"}
    built = build_handler(ServerConfig(**settings))  # type: ignore[arg-type]
    calls: list[weakref.ref[Call]] = []

    async def handler(call: Call) -> None:
        calls.append(weakref.ref(call))
        await built(call)

    try:
        async with running_server(handler) as server:
            for n in range(3):
                report = await run_call(
                    CallOptions(
                        url=url_of(server, query=f"call=mem-{n}"),
                        seconds=0.6,
                        linger_s=0.2,
                        dtmf="5",
                        dtmf_at_s=0.3,
                    )
                )
                assert report.error is None, report.error
            for _ in range(round(wait_s(5) / 0.02)):  # the server is done with the calls
                if not server.connections:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the handler tasks' last references go
            await written()  # and the recordings' last writes, which hold their recorder
            assert len(calls) == 3
            alive = [ref() for ref in calls if ref() is not None]
            assert alive == [], f"{len(alive)} ended calls still held (a reference cycle)"
    finally:
        built.close()
        if upstream is not None:
            await upstream.kill()


def descriptors(pid: int) -> list[str]:
    """What each of the process's open file descriptors is (socket:[...], a timerfd...)."""
    return sorted(os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())


async def test_a_server_holds_the_same_descriptors_before_its_first_call_and_after_it() -> None:
    """What a resource check against a baseline relies on (``scripts/fuzz``): the pacing
    timer (a timerfd) exists from the start, so the first outbound frame adds no descriptor;
    and a finished call leaves none behind."""
    server = start_server_process(["--mode", "play", "--tone", "440", "--transport", TRANSPORT])
    try:
        await asyncio.sleep(wait_s(0.3))
        before = descriptors(server.proc.pid)
        for n in range(2):
            report = await run_call(
                CallOptions(url=f"{server.url}?call=fds-{n}", seconds=0.4, linger_s=0.2)
            )
            assert report.error is None and report.frames_received > 0, report.error
        after: list[str] = []
        for _ in range(round(wait_s(5) / 0.05)):  # the server closes its side
            after = descriptors(server.proc.pid)
            if after == before:
                break
            await asyncio.sleep(0.05)
    finally:
        assert server.stop() == 0
    assert after == before
