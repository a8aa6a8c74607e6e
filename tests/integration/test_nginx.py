"""deploy/nginx.conf, for real: Debian's nginx terminates TLS in front of two bridge processes;
simulated calls go through ``wss://`` byte-exact and spread over both instances, and a
draining instance's 503 sends new calls to the other one (rolling restarts).

The shipped file is used as it is, except for the lines a test must change (paths, port,
upstreams), each replaced exactly once so an edit to the file cannot silently bypass them.

Port: nginx cannot report a port it picked, and picking one by binding port 0 and closing it
races with other processes. So the test proposes random high ports and lets nginx bind: if
the port is taken nginx exits at once with EADDRINUSE and the next port is tried (5 tries).
nginx writes its pid file only after its listening sockets are open, so the pid file appearing
means it is ready. Everything is stopped in ``finally``, pass or fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from bridge.simulator import CallOptions, CallReport, run_call
from tests.helpers import ROOT, ServerProcess, require_command, start_server_process, wait_s
from tests.integration._http import get

CONF = ROOT / "deploy" / "nginx.conf"
PORT_TRIES = 5


def _port_of(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def _config(tmp: Path, port: int, upstreams: list[int], cert: Path, key: Path) -> str:
    text = CONF.read_text()
    servers = "".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in upstreams
    )
    replacements = {
        "pid /run/nginx-bridge.pid;": f"pid {tmp}/nginx.pid;",
        "error_log /var/log/nginx/bridge-error.log warn;": f"error_log {tmp}/error.log info;",
        "    access_log /var/log/nginx/bridge-access.log;\n": (
            f"    access_log {tmp}/access.log;\n"
            f"    client_body_temp_path {tmp}/body;\n"
            f"    proxy_temp_path {tmp}/proxy;\n"
            f"    fastcgi_temp_path {tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {tmp}/uwsgi;\n"
            f"    scgi_temp_path {tmp}/scgi;\n"
        ),
        "        server 10.0.0.11:8080 max_fails=3 fail_timeout=10s;\n"
        "        server 10.0.0.12:8080 max_fails=3 fail_timeout=10s;\n": servers,
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/ssl/bridge/fullchain.pem": str(cert),
        "/etc/ssl/bridge/privkey.pem": str(key),
        "worker_processes auto;": "worker_processes 1;",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, tmp: Path) -> None:
        self.proc, self.port, self.tmp = proc, port, tmp

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: closes proxied sockets
            try:
                self.proc.wait(timeout=wait_s(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_nginx(binary: str, tmp: Path, upstreams: list[int], cert: Path, key: Path) -> Nginx:
    extra = ["-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")]
    for _ in range(PORT_TRIES):
        port = random.randrange(20000, 60000)
        conf = tmp / "nginx.conf"
        conf.write_text(_config(tmp, port, upstreams, cert, key))
        (tmp / "nginx.pid").unlink(missing_ok=True)
        stderr = tmp / "stderr.log"
        with stderr.open("wb") as sink:
            proc = subprocess.Popen(
                [binary, "-p", str(tmp), "-c", str(conf), *extra],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        deadline = time.monotonic() + wait_s(10)
        while time.monotonic() < deadline:
            if (tmp / "nginx.pid").exists():
                return Nginx(proc, port, tmp)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = stderr.read_text(errors="replace")
        if "Address already in use" not in err:
            raise AssertionError(f"nginx did not start: {err.strip()}")
    raise AssertionError(f"no free port for nginx in {PORT_TRIES} tries")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("nginx-tls")
    ca_file, chain, key = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca_file, chain, key


@pytest.fixture
def stack(
    tmp_path: Path, tls: tuple[Path, Path, Path]
) -> Iterator[tuple[Nginx, list[ServerProcess]]]:
    """Two bridge processes behind nginx; all three stopped however the test ends."""
    _, chain, key = tls
    binary = require_command("nginx")  # before anything starts
    bridges: list[ServerProcess] = []
    nginx: Nginx | None = None
    try:
        for _ in range(2):
            bridges.append(start_server_process(["--drain-seconds", "10"]))
        nginx = _start_nginx(binary, tmp_path, [_port_of(b) for b in bridges], chain, key)
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
