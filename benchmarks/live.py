"""A live ``bridge serve`` child for the fuzzer and the soak: started, watched, probed, stopped.

Its JSON log lines are read as they come (a thread, so a chatty server never blocks on a full
pipe) and classified: how many of each message, and every line that carries a traceback
(``exc``) or is an error not in the allowed list is kept as a *problem*. Resources come from
/proc (RSS, open file descriptors, CPU) and from the server's own ``/metrics`` (asyncio tasks,
connections held, event-loop lag histogram).

Import rule: the standard library and ``benchmarks.harness``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import NICE_OK, ROOT, cpu_seconds, rss_bytes

#: Error lines that are a documented outcome, not a fault in bridge.
ALLOWED_ERRORS = frozenset(
    {
        "upstream unavailable: giving up",
        "recording failed; the call goes on unrecorded",
        "cannot record call",
    }
)
_METRIC = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@dataclass
class LogTally:
    """What the server logged, by message, and the lines that must not be there."""

    counts: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    not_json: int = 0
    lines: int = 0
    #: Lines kept for a test or a scenario to look at (``keep`` messages only).
    kept: list[dict[str, Any]] = field(default_factory=list)


class LiveServer:
    """``python -m bridge serve ARGS --port 0 --log-format json`` as a child process."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        keep: Sequence[str] = (),
        nice: bool = True,
        name: str = "bridge",
    ) -> None:
        self.name = name
        argv = [sys.executable, "-m", "bridge", "serve", "--port", "0", "--log-format", "json"]
        argv += list(args)
        if nice and NICE_OK:
            argv = ["nice", "-n", "-10", *argv]
        self.tally = LogTally()
        self._keep = frozenset(keep)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=ROOT,
            text=True,
        )
        self.port = 0
        self.url = ""
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(30) or not self.port:
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.tally.problems[-3:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._classify(raw)
            if not ready.is_set() and self.port:
                ready.set()
        ready.set()

    def _classify(self, raw: str) -> None:
        tally = self.tally
        try:
            line = json.loads(raw)
        except ValueError:
            with self._lock:
                tally.not_json += 1
                tally.lines += 1
                if raw.strip() and len(tally.problems) < 50:
                    tally.problems.append({"not_json": raw[:500]})
            return
        msg = str(line.get("msg"))
        level = str(line.get("level"))
        with self._lock:
            tally.lines += 1
            tally.counts[msg] += 1
            tally.levels[level] += 1
            if "exc" in line:
                tally.tracebacks += 1
            bad = "exc" in line or (level in ("error", "critical") and msg not in ALLOWED_ERRORS)
            if bad and len(tally.problems) < 50:
                tally.problems.append(line)
            if msg in self._keep and len(tally.kept) < 100_000:
                tally.kept.append(line)
        if msg == "listening" and not self.port:
            url = str(line.get("url", ""))
            self.url = url
            self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])

    # --- probes ------------------------------------------------------------------------------

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {name{labels}: value}."""
        body = http_get("127.0.0.1", self.port, "/metrics")
        out: dict[str, float] = {}
        for line in body.splitlines():
            match = _METRIC.match(line)
            if match:
                with contextlib.suppress(ValueError):
                    out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return out

    def resources(self) -> dict[str, float]:
        m = self.metrics()
        return {
            "rss_mib": round(self.rss() / (1 << 20), 2),
            "fds": self.fds(),
            "tasks": m.get("bridge_event_loop_tasks", -1),
            "connections": m.get("bridge_connections", -1),
            "calls_active": m.get("bridge_calls_active", -1),
        }

    def wait_quiet(
        self, connections: float, tasks: float | None = None, timeout_s: float = 20.0
    ) -> dict[str, float]:
        """Resources once the server holds ``connections`` (the probe's own included), no
        call, and at most ``tasks`` tasks (or ``timeout_s`` passed: then as they are)."""
        deadline = time.monotonic() + timeout_s
        res = self.resources()
        while time.monotonic() < deadline:
            res = self.resources()
            if (
                res["connections"] <= connections
                and res["calls_active"] <= 0
                and (tasks is None or res["tasks"] <= tasks)
            ):
                break
            time.sleep(0.5)
        time.sleep(1.2)  # one more metrics tick (the gauges are sampled once a second)
        return self.resources()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code


def http_get(host: str, port: int, path: str, timeout_s: float = 5.0) -> str:
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    return raw.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")


def other_cpu_pct(busy_before: float, busy_after: float, ours_s: float, wall_s: float) -> float:
    """CPU other processes used meanwhile, in % of one core (the machine's noise)."""
    return round(max(0.0, (busy_after - busy_before) - ours_s) / max(wall_s, 1e-9) * 100, 1)


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """The upper bucket edge holding quantile ``q`` of a Prometheus histogram (seconds)."""
    buckets = []
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket{{") and 'le="' in key:
            bound = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for edge, count in buckets:
        if count >= q * total:
            return edge
    return None


def histogram_delta(
    after: dict[str, float], before: dict[str, float], name: str
) -> dict[str, float]:
    """``after - before`` for one histogram's buckets (a window of observations)."""
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if key.startswith(f"{name}_bucket{{")
    }


def paths_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.exists() else []
