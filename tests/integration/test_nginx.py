"""deploy/nginx.conf, for real: Debian's nginx terminates TLS in front of two bridge processes;
simulated calls go through ``wss://`` byte-exact and spread over both instances, and a
draining instance's 503 sends new calls to the other one (rolling restarts).

How the shipped file is run (what is replaced, how the port is found): ``_nginx``.
Everything is stopped in ``finally``, pass or fail.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sim import CallOptions, CallReport, run_call
from tests.helpers import ServerProcess, make_tls, start_server_process, wait_s
from tests.integration._http import get
from tests.integration._nginx import Nginx, address_of, nginx_binary, start_nginx


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls(tmp_path_factory.mktemp("nginx-tls"))


@pytest.fixture
def stack(
    tmp_path: Path, tls: tuple[Path, Path, Path]
) -> Iterator[tuple[Nginx, list[ServerProcess]]]:
    """Two bridge processes behind nginx; all three stopped however the test ends."""
    binary = nginx_binary()  # skip (or fail under CI) before starting anything
    _, chain, key = tls
    bridges: list[ServerProcess] = []
    nginx: Nginx | None = None
    try:
        for _ in range(2):
            bridges.append(start_server_process(["--drain-seconds", "10"]))
        nginx = start_nginx(binary, tmp_path, [address_of(b) for b in bridges], chain, key)
        yield nginx, bridges
    finally:
        if nginx is not None:
            nginx.stop()
        for bridge in bridges:
            bridge.stop(signal.SIGKILL)


def _started(bridge: ServerProcess) -> list[dict[str, object]]:
    return [line for line in bridge.lines if line.get("msg") == "call started"]


async def _calls(url: str, ca_file: Path, n: int, seconds: float) -> list[CallReport]:
    opts = CallOptions(url=url, seconds=seconds, ca_file=ca_file)
    return list(await asyncio.gather(*(run_call(opts) for _ in range(n))))


async def test_calls_through_nginx_are_exact_and_spread(
    stack: tuple[Nginx, list[ServerProcess]], tls: tuple[Path, Path, Path]
) -> None:
    nginx, bridges = stack
    ca_file = tls[0]
    url = f"wss://127.0.0.1:{nginx.port}/socket"
    reports = await _calls(url, ca_file, 6, 1.0)
    assert all(r.exact and r.close_code == 1000 for r in reports), [r.error for r in reports]
    counts = [len(_started(b)) for b in bridges]
    assert sum(counts) == 6 and min(counts) >= 1, counts
    forwarded = [line.get("forwarded_for") for b in bridges for line in _started(b)]
    assert forwarded == ["127.0.0.1"] * 6, forwarded
    context = ssl.create_default_context(cafile=ca_file)
    health = await get(nginx.port, "/health", tls=context)
    metrics = await get(nginx.port, "/metrics", tls=context)
    assert health.status == 200
    assert metrics.status == 403, "metrics are not served through the public proxy"


async def test_a_draining_instance_hands_new_calls_to_the_other(
    stack: tuple[Nginx, list[ServerProcess]], tls: tuple[Path, Path, Path]
) -> None:
    nginx, (first, second) = stack
    ca_file = tls[0]
    # A live call straight to the first instance keeps it draining (not gone) after SIGTERM.
    held = asyncio.create_task(run_call(CallOptions(url=first.url, seconds=3.0)))
    await asyncio.sleep(wait_s(0.4))
    first.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(wait_s(0.3))
    url = f"wss://127.0.0.1:{nginx.port}/socket"
    reports = await _calls(url, ca_file, 4, 0.5)
    held_report = await held
    assert all(r.exact for r in reports), [r.error for r in reports]
    assert held_report.exact and held_report.close_code == 1000
    via_nginx_first = [line for line in _started(first) if line.get("forwarded_for")]
    assert via_nginx_first == [], "a draining instance takes no new call"
    assert [line.get("forwarded_for") for line in _started(second)] == ["127.0.0.1"] * 4
    refusals = [
        line for line in first.lines if str(line.get("msg", "")).startswith("upgrade refused: 503")
    ]
    assert refusals, "nginx tried the draining instance, got 503, and moved on"
