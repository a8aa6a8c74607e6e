"""Upstream servers for the forward-mode tests: real websockets servers on 127.0.0.1.

:class:`RecordingUpstream` is built on bridge's connection layer (server side), which
answers pings in stream order, so it controls exactly when its answers leave: every binary frame is written
to disk (``os.write``: in the kernel's page cache, so it survives a SIGKILL) *before* the pong
to any ping that followed it is sent. That is the contract bridge's link relies on (a pong
confirms the frames before it), and it lets a test kill the upstream at any instant and still
know everything it confirmed. Each connection writes ``<n>.bin`` (its binary frames, in
order) and ``<n>.txt`` (its text messages, one per line), ``<n>`` sorting in connection order
across processes. It can echo audio back, and stall (stop reading and answering) on its first
connections.

Run as ``python -m tests.upstreams DIR [--port P] [--echo]``: prints ``PORT <n>`` when
listening; the kill-and-restart tests use it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from websockets.http11 import Request

from bridge.audio.pcm import Samples
from bridge.transport.server import ServerConnection
from tests.helpers import ROOT


class _Connection(ServerConnection):
    def __init__(self, upstream: RecordingUpstream) -> None:
        super().__init__(max_size=4 << 20, subprotocols=upstream.subprotocols)
        self.upstream = upstream
        self.bin_fd: int | None = None
        self.txt_fd: int | None = None
        self.stall_after: int | None = None
        self.frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.upstream.open.add(self)

    def on_request(self, request: Request) -> None:
        self.upstream.requests.append(request)
        if self.accept(request) != 101:
            return
        name = self.upstream.next_name()
        self.bin_fd = os.open(name + ".bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.txt_fd = os.open(name + ".txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.upstream.connections += 1
        if self.upstream.stall_connections > 0:
            self.upstream.stall_connections -= 1
            self.stall_after = self.upstream.stall_after_frames

    def on_binary(self, data: bytes, now_ns: int) -> None:
        if self.bin_fd is None:
            return
        # Written before anything later in the stream is read, so before the pong to any
        # ping that followed this frame: the connection layer answers pings in order.
        os.write(self.bin_fd, data)
        self.frames += 1
        if self.upstream.echo:
            self.send_binary(data)
        if self.stall_after is not None and self.frames >= self.stall_after:
            self.stop_reading()  # no pong for anything: this connection now reads nothing

    def on_text(self, text: str, now_ns: int) -> None:
        if self.txt_fd is not None:
            os.write(self.txt_fd, text.encode() + b"\n")

    def on_lost(self, exc: Exception | None) -> None:
        self.upstream.open.discard(self)
        for fd in (self.bin_fd, self.txt_fd):
            if fd is not None:
                os.close(fd)
        self.bin_fd = self.txt_fd = None


class RecordingUpstream:
    """Records every connection to ``directory`` (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        *,
        echo: bool = False,
        stall_connections: int = 0,
        stall_after_frames: int = 25,
        subprotocols: tuple[str, ...] | None = None,
    ) -> None:
        self.directory = directory
        self.subprotocols = subprotocols
        #: Every upgrade request, in order (tests read the headers bridge sent).
        self.requests: list[Request] = []
        self.echo = echo
        self.stall_connections = stall_connections
        self.stall_after_frames = stall_after_frames
        self.connections = 0
        self.open: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def next_name(self) -> str:
        # Monotonic time is system-wide on Linux: names sort in connection order across the
        # processes a test starts one after another.
        return str(self.directory / f"{time.monotonic_ns():020d}-{os.getpid()}")

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for connection in list(self.open):  # a stalled one reads nothing: it never ends alone
            if connection.transport is not None:
                connection.transport.abort()
        await asyncio.sleep(0)  # let connection_lost run


@dataclass
class Received:
    """What one upstream connection got."""

    audio: Samples
    texts: list[str]


def read_connections(directory: Path) -> list[Received]:
    """Every connection's audio and text, in connection order."""
    out = []
    for binary in sorted(directory.glob("*.bin")):
        raw = binary.read_bytes()
        audio = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").copy()
        texts = binary.with_suffix(".txt").read_text().splitlines()
        out.append(Received(audio, texts))
    return out


@dataclass
class UpstreamProcess:
    """``python -m tests.upstreams`` as a child process (killable with SIGKILL)."""

    proc: asyncio.subprocess.Process
    port: int

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


async def start_upstream_process(directory: Path, port: int = 0) -> UpstreamProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.upstreams",
        str(directory),
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not line.startswith(b"PORT "):
        await proc.wait()
        raise RuntimeError(f"upstream did not start: {line!r}")
    return UpstreamProcess(proc, int(line.split()[1]))


async def _main(directory: Path, port: int, echo: bool) -> None:
    upstream = RecordingUpstream(directory, echo=echo)
    bound = await upstream.start(port)
    print(f"PORT {bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--echo", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.directory, args.port, args.echo))
