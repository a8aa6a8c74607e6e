"""The worker's settings travel as BRIDGE_* variables and come back identical."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from bridge.config import ServerConfig, config_from
from bridge.metrics import MULTIPROC_ENV
from bridge.workers import WORKER_INDEX_ENV, reserve_port, worker_environment


def test_worker_environment_round_trips_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "wss://stale.example")  # unset in config: removed
    config = ServerConfig(
        host="0.0.0.0",
        workers=3,
        token="tok",
        lenient=True,
        pipeline_rate=8000,
        drain_seconds=2.5,
        answer_headers="a=b",
    )
    env = worker_environment(config, port=4321, index=2, metrics_dir="/tmp/m")
    child = config_from(None, environ=env)
    assert child == dataclasses.replace(config, port=4321, workers=1)
    assert child.token == "tok"  # compare=True fields include secrets
    assert "BRIDGE_PUBLIC_URL" not in env
    assert env[WORKER_INDEX_ENV] == "2" and env[MULTIPROC_ENV] == "/tmp/m"


def test_reserved_port_is_shared_with_reuseport_listeners() -> None:
    held = reserve_port("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        listeners = []
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            listeners.append(sock)
        # A plain bind (no SO_REUSEPORT) is refused: the port really is reserved.
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        for sock in listeners:
            sock.close()
    finally:
        held.close()
