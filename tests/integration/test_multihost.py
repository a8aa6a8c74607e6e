"""Past one machine, as far as one machine allows: three "hosts" behind deploy/nginx.conf.

Each host is a ``bridge serve`` process bound to its own loopback address (127.0.0.2, .3, .4:
all of 127/8 is loopback, so no traffic leaves the machine and no ``--token`` is needed),
port chosen by the OS and read back. Debian's nginx runs the shipped file (two workers, so
the shared upstream zone is exercised) with those three as its upstreams; simulated calls go
through ``wss://`` and carry their label as ``?uuid=``, which becomes the call id each host
logs, so every call is traced to the host that served it.

What a user of a pool of hosts would notice, each checked here:
- calls spread over the hosts and stay byte-exact, also across an nginx reload;
- a host killed (SIGKILL) mid-call ends its own calls only; new calls go to the others;
- a host drained (SIGTERM) takes no new call while its live calls run to their end;
- a host brought back on its address joins again within the shipped ``fail_timeout``.

How the shipped file is run (what is replaced, how nginx's port is found): ``_nginx``.
Every process is stopped in ``finally``, pass or fail; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.sim import CallOptions, CallReport, run_call
from tests.helpers import ServerProcess, make_tls, start_server_process, wait_s
from tests.integration._nginx import (
    Nginx,
    address_of,
    fail_timeout_s,
    nginx_binary,
    start_nginx,
)

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DRAIN_S = 10.0
HELD_CALLS = 9
HELD_S = 3.0


@dataclass
class Host:
    """One "machine": an address of its own and the bridge process serving on it."""

    ip: str
    bridge: ServerProcess

    @property
    def address(self) -> str:
        return address_of(self.bridge)

    def started(self) -> list[str]:
        """Labels (call ids) of the calls this host has started, in order."""
        return [
            str(line["call_id"]) for line in self.bridge.lines if line.get("msg") == "call started"
        ]

    def restart(self) -> None:
        """Bring the host back on the same address and port (what nginx knows it by)."""
        port = self.address.rsplit(":", 1)[1]
        self.bridge.stop(signal.SIGKILL)  # gone already: reap it and close its log pipe
        self.bridge = _bridge(self.ip, port)


@dataclass
class Pool:
    nginx: Nginx
    hosts: list[Host]
    ca_file: Path

    def options(self, label: str, seconds: float) -> CallOptions:
        url = f"wss://127.0.0.1:{self.nginx.port}/socket?uuid={label}"
        return CallOptions(url=url, seconds=seconds, ca_file=self.ca_file)

    async def calls(self, labels: list[str], seconds: float) -> dict[str, CallReport]:
        reports = await asyncio.gather(*(run_call(self.options(x, seconds)) for x in labels))
        return dict(zip(labels, reports, strict=True))

    def host_of(self, label: str) -> Host | None:
        found = [h for h in self.hosts if label in h.started()]
        assert len(found) <= 1, f"{label} started on several hosts"
        return found[0] if found else None

    def spread(self, labels: list[str]) -> list[int]:
        return [sum(1 for x in labels if x in h.started()) for h in self.hosts]


def _bridge(ip: str, port: str = "0") -> ServerProcess:
    return start_server_process(
        ["--host", ip, "--port", port, "--drain-seconds", str(DRAIN_S), "--log-level", "info"]
    )


async def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s(seconds)
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _exact(report: CallReport) -> bool:
    return report.exact and report.completed and report.close_code == 1000


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    binary = nginx_binary()  # skip (or fail under CI) before starting anything
    ca_file, chain, key = make_tls(tmp_path)
    hosts: list[Host] = []
    nginx: Nginx | None = None
    try:
        with ThreadPoolExecutor(len(ADDRESSES)) as starter:
            bridges = list(starter.map(_bridge, ADDRESSES))
        hosts = [Host(ip, b) for ip, b in zip(ADDRESSES, bridges, strict=True)]
        assert [h.address.rsplit(":", 1)[0] for h in hosts] == list(ADDRESSES)
        nginx = start_nginx(binary, tmp_path, [h.address for h in hosts], chain, key, workers=2)
        yield Pool(nginx, hosts, ca_file)
    finally:
        if nginx is not None:
            nginx.stop()
        for host in hosts:
            host.bridge.stop(signal.SIGKILL)


async def _held_calls(
    pool: Pool, prefix: str
) -> tuple[list[str], asyncio.Task[dict[str, CallReport]]]:
    """HELD_CALLS calls of HELD_S through nginx, returned once every one has started."""
    labels = [f"{prefix}-{i}" for i in range(HELD_CALLS)]
    task = asyncio.create_task(pool.calls(labels, HELD_S))
    await _until(lambda: sum(pool.spread(labels)) == HELD_CALLS, 5.0, "the held calls to start")
    return labels, task


async def _rejoins(pool: Pool, host: Host, prefix: str) -> None:
    """``host`` back on its address gets new calls again, within nginx's fail_timeout."""
    host.restart()
    deadline = asyncio.get_running_loop().time() + wait_s(fail_timeout_s() + 5.0)
    for attempt in range(100):
        labels = [f"{prefix}-{attempt}-{i}" for i in range(3)]
        reports = await pool.calls(labels, 0.3)
        assert all(_exact(r) for r in reports.values()), {x: r.error for x, r in reports.items()}
        if host.started():
            return
        assert asyncio.get_running_loop().time() < deadline, (
            f"{host.ip} took no call within fail_timeout + 5 s of coming back"
        )
        await asyncio.sleep(0.25)
    raise AssertionError("no rejoin in 100 rounds")


async def test_calls_spread_over_three_hosts_exact_across_an_nginx_reload(pool: Pool) -> None:
    labels, held = await _held_calls(pool, "spread")
    pool.nginx.proc.send_signal(signal.SIGHUP)  # nginx -s reload, mid-call
    reports = await held
    assert all(_exact(r) for r in reports.values()), {x: r.error for x, r in reports.items()}
    assert min(pool.spread(labels)) >= 2, pool.spread(labels)
    for host in pool.hosts:
        forwarded = [
            line.get("forwarded_for")
            for line in host.bridge.lines
            if line.get("msg") == "call started"
        ]
        assert forwarded and set(forwarded) == {"127.0.0.1"}, forwarded
    assert "reconfiguring" in pool.nginx.error_log(), "the reload happened while calls ran"


async def test_a_killed_host_ends_only_its_own_calls_and_comes_back(pool: Pool) -> None:
    labels, held = await _held_calls(pool, "held")
    victim = pool.hosts[0]
    on_victim = [x for x in labels if pool.host_of(x) is victim]
    assert on_victim, pool.spread(labels)
    await asyncio.sleep(wait_s(0.5))  # audio flowing on every call
    victim.bridge.proc.kill()  # SIGKILL: no drain, no close frames, sockets just vanish
    await asyncio.to_thread(victim.bridge.proc.wait, wait_s(5))

    after = [f"after-{i}" for i in range(6)]
    new = await pool.calls(after, 0.5)
    reports = await held
    for label, report in reports.items():
        if label in on_victim:
            # Cut mid-call without a close frame (1006), having carried audio until then.
            assert not report.completed and report.close_code == 1006, (label, report)
            assert 0 < report.frames_received < HELD_S * 50 / 2, report.frames_received
        else:
            assert _exact(report), (label, report.error, report.close_code)
    assert all(_exact(r) for r in new.values()), {x: r.error for x, r in new.items()}
    assert [pool.host_of(x) is not None for x in after] == [True] * 6
    assert all(pool.host_of(x) is not victim for x in after)
    refused = [
        line
        for line in pool.nginx.error_log().splitlines()
        if "Connection refused" in line and victim.address in line
    ]
    assert refused, "nginx tried the dead host, was refused, and moved the call on"

    await _rejoins(pool, victim, "back")


async def test_a_draining_host_takes_no_new_calls_while_its_calls_finish(pool: Pool) -> None:
    labels, held = await _held_calls(pool, "held")
    victim = pool.hosts[1]
    on_victim = [x for x in labels if pool.host_of(x) is victim]
    assert on_victim, pool.spread(labels)
    victim.bridge.proc.send_signal(signal.SIGTERM)
    await _until(lambda: "shutting down" in victim.bridge.messages(), 5.0, "the drain to begin")

    after = [f"after-{i}" for i in range(6)]
    new = await pool.calls(after, 0.5)
    assert all(_exact(r) for r in new.values()), {x: r.error for x, r in new.items()}
    assert sorted(victim.started()) == sorted(on_victim), "a draining host starts no new call"
    assert all(pool.host_of(x) is not None for x in after)
    refusals = [m for m in victim.bridge.messages() if m.startswith("upgrade refused: 503")]
    assert refusals, "nginx offered the draining host a call, got 503, and moved it on"

    reports = await held
    assert all(_exact(r) for r in reports.values()), {x: r.error for x, r in reports.items()}
    # The drain ends when its last call does, well before --drain-seconds.
    code = await asyncio.to_thread(victim.bridge.proc.wait, wait_s(5))
    assert code == 0
    assert "drained" in victim.bridge.messages()

    await _rejoins(pool, victim, "back")
