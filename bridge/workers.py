"""``--workers N``: N server processes on one port (SO_REUSEPORT), supervised.

The supervisor (the process ``bridge serve`` started) binds the port once without listening,
with SO_REUSEPORT, so that ``--port 0`` resolves to one port every worker shares and the port
stays reserved across worker restarts; each worker then listens on it with SO_REUSEPORT and
the kernel spreads new connections over the workers. Workers are ``python -m bridge.workers``
children that read their settings from ``BRIDGE_*`` variables (the same machinery as the CLI,
and secrets stay off the command line), print ``ready`` on stdout once listening, log to the
shared stderr with a ``worker`` field, and drain on SIGTERM like a single process.

- A worker that dies is restarted (1 s later, doubling up to 30 s while it keeps dying within
  10 s of its start); its live gauges are removed from the metrics (``mark_process_dead``).
- SIGTERM/SIGINT: forwarded to every worker, which drain their calls (``--drain-seconds``);
  a second signal is forwarded too (workers then close their calls at once). Exit 0.
- Metrics: the supervisor creates a ``PROMETHEUS_MULTIPROC_DIR`` for the workers and removes it
  at exit; any worker's ``/metrics`` shows the sum over all of them.
- A worker whose parent is gone (its stdin pipe closes) drains and exits: no orphans.

Import rule: may import anything in the package except ``cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from prometheus_client.multiprocess import mark_process_dead

from bridge.auth import check_exposure
from bridge.banner import print_banner
from bridge.config import ServerConfig, config_from, env_name
from bridge.errors import ConfigError
from bridge.http import phone_url
from bridge.metrics import MULTIPROC_ENV
from bridge.runtime import run
from bridge.settings import to_environ
from bridge.startup import bind_error

log = logging.getLogger("bridge.workers")

WORKER_INDEX_ENV = "BRIDGE_WORKER_INDEX"
READY_LINE = b"ready\n"
READY_TIMEOUT_S = 30.0
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
#: A worker that dies sooner than this after starting counts as crash-looping.
HEALTHY_AFTER_S = 10.0
#: Beyond the drain time, how long workers get to exit before they are killed.
EXIT_GRACE_S = 10.0


def worker_environment(
    config: ServerConfig, port: int, index: int, metrics_dir: str
) -> dict[str, str]:
    """The child's environment: every setting as ``BRIDGE_*`` (unset ones removed)."""
    env = dict(os.environ)
    for name, value in to_environ(config).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env[env_name("port")] = str(port)
    env[env_name("workers")] = "1"
    env[WORKER_INDEX_ENV] = str(index)
    env[MULTIPROC_ENV] = metrics_dir
    env["PYTHONUNBUFFERED"] = "1"
    return env


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: fixes the port for ``--port 0`` and keeps it.

    SO_REUSEPORT would also let us share a port another bridge's workers listen on (same
    user), silently splitting calls between two servers; so a fixed port is first bound
    without it, which fails if anything listens there.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if port != 0:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise bind_error(host, port, exc) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise bind_error(host, port, exc) from exc
    return sock


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges (its counters stay: totals survive restarts)."""
    mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.delay_s = RESTART_DELAY_S


class Supervisor:
    """Starts, watches and stops the workers."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.workers = [_Worker(i) for i in range(config.workers)]
        self.stopping = False
        self.port = 0
        self.metrics_dir = ""
        self._restarts: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        check_exposure(self.config)
        sock = reserve_port(self.config.host, self.config.port)
        self.port = int(sock.getsockname()[1])
        self.metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, stop)
        try:
            started = await asyncio.gather(*(self._start(w) for w in self.workers))
            if not all(started):
                self.stopping = True
                await self._stop_all()
                return 2
            scheme = "wss" if self.config.tls_cert else "ws"
            log.info(
                "listening",
                extra={
                    "url": f"{scheme}://{self.config.host}:{self.port}{self.config.path}",
                    "workers": len(self.workers),
                    "pids": [w.proc.pid for w in self.workers if w.proc is not None],
                    "metrics_dir": self.metrics_dir,
                    **phone_url(self.config, self.port),
                },
            )
            print_banner(self.config, self.port)
            watchers = [asyncio.ensure_future(self._watch(w)) for w in self.workers]
            await stop.wait()
            log.info("shutting down", extra={"workers": len(self.workers)})
            code = await self._stop_all()
            for task in watchers:
                task.cancel()
            return code
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for task in self._restarts:
                task.cancel()
            sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _on_signal(self, stop: asyncio.Event) -> None:
        if self.stopping:
            # Second signal: workers close their calls now.
            self._signal_all(signal.SIGTERM)
            return
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        stop.set()

    def _signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    async def _start(self, w: _Worker) -> bool:
        """Spawn one worker and wait for its ``ready`` line; False if it never got there."""
        env = worker_environment(self.config, self.port, w.index, self.metrics_dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        w.proc = proc
        w.started = time.monotonic()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                line = await proc.stdout.readline()
        except TimeoutError:
            line = b""
        if line != READY_LINE:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            log.error("worker failed to start", extra={"worker": w.index, "exit_code": code})
            return False
        return True

    async def _watch(self, w: _Worker) -> None:
        while True:
            proc = w.proc
            if proc is None:
                return
            code = await proc.wait()
            _mark_dead(proc.pid, self.metrics_dir)
            if self.stopping:
                return
            if time.monotonic() - w.started >= HEALTHY_AFTER_S:
                w.delay_s = RESTART_DELAY_S
            delay = w.delay_s
            w.delay_s = min(w.delay_s * 2, RESTART_DELAY_MAX_S)
            log.warning(
                "worker died; restarting",
                extra={
                    "worker": w.index,
                    "pid": proc.pid,
                    "exit_code": code,
                    "restart_in_s": delay,
                },
            )
            await asyncio.sleep(delay)
            if self.stopping:
                return
            if not await self._start(w):
                continue
            log.info(
                "worker restarted", extra={"worker": w.index, "pid": w.proc.pid if w.proc else None}
            )

    async def _stop_all(self) -> int:
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        if not procs:
            return 0
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        _, pending = await asyncio.wait(waits, timeout=self.config.drain_seconds + EXIT_GRACE_S)
        killed = False
        for p in procs:
            if p.returncode is None:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        if pending:
            await asyncio.wait(pending, timeout=5)
        for p in procs:
            _mark_dead(p.pid, self.metrics_dir)
        bad = [p.returncode for p in procs if p.returncode not in (0, None)]
        if killed or bad:
            log.error("workers did not stop cleanly", extra={"exit_codes": bad, "killed": killed})
            return 1
        return 0


def run_supervisor(config: ServerConfig) -> int:
    return run(Supervisor(config).run())


# --- the worker side ---------------------------------------------------------------------


class _WorkerField(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


async def _worker_main(config: ServerConfig, index: int) -> None:
    from bridge.handlers import build_handler  # noqa: PLC0415
    from bridge.server import BridgeServer, serve  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def parent_gone() -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            log.warning("supervisor gone; draining")
            stop.set()

    loop.add_reader(0, parent_gone)

    def listening(server: BridgeServer) -> None:
        log.info("worker listening", extra={"port": server.port, "pid": os.getpid()})
        sys.stdout.buffer.write(READY_LINE)
        sys.stdout.flush()

    handler = build_handler(config)
    try:
        await serve(config, handler, stop, reuse_port=True, on_listening=listening)
    finally:
        handler.close()


def worker_main() -> int:
    from bridge.logs import setup_logging  # noqa: PLC0415

    index = int(os.environ.get(WORKER_INDEX_ENV, "0"))
    try:
        config = config_from(None)
    except ConfigError as exc:
        sys.stderr.write(f"bridge: error: {exc}\n")
        return 2
    setup_logging(config.log_level, config.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(index))
    try:
        run(_worker_main(config, index))
    except ConfigError as exc:
        sys.stderr.write(f"bridge: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
