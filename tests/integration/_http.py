"""A tiny HTTP/1.1 GET client on asyncio streams, for the plain-HTTP endpoints under test.

Not urllib: the server under test often runs in the test's own event loop, which a blocking
client would freeze.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from tests.helpers import wait_s


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def get(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """GET ``path``; the server closes the connection after its answer (Connection: close)."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
        given = {"Connection": "close", **(headers or {})}  # one request, then EOF
        lines += [f"{k}: {v}" for k, v in given.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(wait_s(10)):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), parsed, body)


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0
