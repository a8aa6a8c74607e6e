"""``python -m bridge.healthcheck`` (the container HEALTHCHECK) against real ``bridge serve``
processes: it finds the server from the same ``BRIDGE_*`` variables, over TLS too, stays
healthy while bridge drains, and fails with one line when nothing answers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bridge.config import ServerConfig
from bridge.healthcheck import health_url
from bridge.sim import CallOptions, run_call
from tests.helpers import ROOT, ServerProcess, make_tls, start_server_process, wait_s


def _port(server: ServerProcess) -> str:
    return server.url.rsplit(":", 1)[1].split("/")[0]


async def _healthcheck(env: dict[str, str]) -> tuple[int, str]:
    """Run it as the container would, without blocking this loop (a call may be running)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.healthcheck",
        cwd=ROOT,
        env={**clean, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), wait_s(15))
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def test_wildcard_binds_are_checked_on_loopback() -> None:
    assert health_url(ServerConfig(host="0.0.0.0", port=8080)) == "http://127.0.0.1:8080/health"
    assert health_url(ServerConfig(host="::", port=9000)) == "http://[::1]:9000/health"
    assert (
        health_url(ServerConfig(host="10.1.2.3", port=443, tls_cert="c.pem", tls_key="k.pem"))
        == "https://10.1.2.3:443/health"
    )


async def test_healthy_while_serving_and_draining_unhealthy_once_gone() -> None:
    server = start_server_process(["--drain-seconds", "10"])
    env = {"BRIDGE_PORT": _port(server)}
    try:
        assert await _healthcheck(env) == (0, "")
        held = asyncio.create_task(run_call(CallOptions(url=server.url, seconds=2.0)))
        await asyncio.sleep(wait_s(0.5))
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(wait_s(0.3))
        assert "shutting down" in server.messages()
        assert await _healthcheck(env) == (0, ""), "a draining bridge is still alive"
        assert (await held).exact
    finally:
        server.stop(signal.SIGKILL)
    code, err = await _healthcheck(env)
    assert code == 1
    assert err.startswith("bridge healthcheck: http://127.0.0.1:") and err.count("\n") == 1


async def test_tls_server_is_checked_over_https(tmp_path: Path) -> None:
    _, chain, key = make_tls(tmp_path)
    server = start_server_process(["--tls-cert", str(chain), "--tls-key", str(key)])
    try:
        tls = {"BRIDGE_TLS_CERT": str(chain), "BRIDGE_TLS_KEY": str(key)}
        env = {"BRIDGE_PORT": _port(server), **tls}
        assert await _healthcheck(env) == (0, "")
        code, err = await _healthcheck({"BRIDGE_PORT": _port(server)})
        assert code == 1, "plain HTTP to a TLS port is not a healthy answer"
        assert "http://127.0.0.1" in err
    finally:
        server.stop()
