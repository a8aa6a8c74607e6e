"""Process plumbing shared by the benchmarks: pinned servers, load steps, /proc accounting.

Every server under test runs in its own process pinned with ``taskset`` to one core (core 0 by
default) and the load generator (``python -m bridge load``) to another (core 1), so the two
never compete and the server's CPU can be read from /proc. Only loopback traffic; every
process started here is stopped here, by its pid.

CPU figures come from /proc/PID/stat (utime + stime of the whole process tree, all threads),
memory from VmRSS in /proc/PID/status. Each step also reads /proc/stat to see how much CPU
*other* processes used meanwhile: on a shared machine that is the noise, and a step that was
disturbed says so instead of passing its noise off as the server's.

Import rule: standard library and ``bridge`` only (no matplotlib; see report.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SERVERS = ROOT / "benchmarks" / "servers"
NODE_MODULES = ROOT / ".venv" / "bench-node" / "node_modules"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOAD_CPU = "1"
STARTUP_TIMEOUT_S = 20.0
#: CPU (in % of one core) other processes may use during a step before it counts as disturbed.
DISTURBED_PCT = 15.0
NICE = -10
#: bridge refuses calls past --max-calls (500 per process by default): not what is measured.
SERVER_ENV = {"BRIDGE_MAX_CALLS": "100000"}
NICE_OK = os.geteuid() == 0 and shutil.which("nice") is not None
_LISTENING = re.compile(rb"listening (\d+)|ws://127\.0\.0\.1:(\d+)")


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpus: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` pinned to ``cpus`` and, where allowed, at nice -10.

    The raised priority is for shared machines: other people's work landing on the same core
    then delays the server and the generator less, so a step measures them, not it.
    """
    prefix: list[str] = []
    if NICE_OK:
        prefix = ["nice", "-n", str(NICE)]
    if cpus is None or not pinning_available():
        return [*prefix, *argv]
    return [*prefix, "taskset", "-c", cpus, *argv]


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "pinning": pinning_available(),
        "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU,
    }


# --- /proc --------------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers of a multi-process server)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``'s whole process tree so far."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def machine_busy_seconds() -> float:
    """CPU seconds processes on all cores have used (user, nice, system, steal) since boot.

    Interrupt and softirq time is left out: on loopback it is mostly the network stack
    working for the server and the generator themselves, not another process.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + steal) / CLK_TCK


# --- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def server(
    name: str,
    argv: Sequence[str],
    cpus: str | None = SERVER_CPU,
    path: str = "/socket",
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``argv`` pinned to ``cpus``, read its port from its output, stop it on exit.

    The server prints ``listening PORT`` (the baselines) or logs its ``ws://`` URL (bridge).
    """
    log = RESULTS / f".{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned(cpus, argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **SERVER_ENV, **(env or {})},
            start_new_session=True,
        )
    try:
        port = _wait_for_port(proc, log)
        yield Server(name, proc, f"ws://127.0.0.1:{port}{path}", log)
    finally:
        _stop(proc)
        with contextlib.suppress(OSError):
            log.unlink()


def _wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_bytes())
        if match:
            return int(match.group(1) or match.group(2))
        if proc.poll() is not None:
            break
        time.sleep(0.05)  # a child process's output: no event to wait on
    text = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server did not start: {proc.args!r}\n{text}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def bridge_argv(*extra: str) -> list[str]:
    return [PYTHON, "-m", "bridge", "serve", "--port", "0", "--log-format", "json", *extra]


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_MODULES / "ws").is_dir()


def node_env() -> dict[str, str]:
    return {"NODE_PATH": str(NODE_MODULES)}


# --- one load step ------------------------------------------------------------------------


@dataclass
class Step:
    """One load run against one server: the generator's report and the server's costs."""

    calls: int
    seconds: float
    load: dict[str, Any]
    server_cpu_pct: float
    cpu_ms_per_call_s: float
    rss_mb: float
    rss_per_call_kb: float
    other_cpu_pct: float
    criteria: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.criteria.values())

    @property
    def disturbed(self) -> bool:
        return self.other_cpu_pct > DISTURBED_PCT

    def to_dict(self) -> dict[str, Any]:
        keys = (
            "calls_ok",
            "frames_sent",
            "frames_lost",
            "frames_late_20ms",
            "frames_late_50ms",
            "frames_late_100ms",
            "rtt_p50_ms",
            "rtt_p99_ms",
            "rtt_max_ms",
            "jitter_p99_ms",
            "lateness_p99_ms",
            "lateness_max_ms",
            "loop_lag_p99_ms",
            "client_overloaded",
            "client_cpu_s",
            "pacing_error_p50_ms",
            "pacing_error_p99_ms",
            "worst_call_pacing_error_p99_ms",
            "pacing_error_max_ms",
            "pacing_drift_max_ms",
        )
        return {
            "calls": self.calls,
            "seconds": self.seconds,
            "passed": self.passed,
            "disturbed": self.disturbed,
            "criteria": self.criteria,
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "cpu_ms_per_call_s": round(self.cpu_ms_per_call_s, 3),
            "rss_mb": round(self.rss_mb, 1),
            "rss_per_call_kb": round(self.rss_per_call_kb, 1),
            "other_cpu_pct": round(self.other_cpu_pct, 1),
            **{k: self.load.get(k) for k in keys},
        }


def load_argv(url: str, calls: int, seconds: float, *extra: str) -> list[str]:
    """The ``bridge load ... --json`` command line every benchmark step runs."""
    return [
        PYTHON,
        "-m",
        "bridge",
        "load",
        url,
        "--calls",
        str(calls),
        "--seconds",
        str(seconds),
        "--json",
        *extra,
    ]


def run_step(
    srv: Server,
    calls: int,
    seconds: float,
    *,
    ramp_s: float = 1.0,
    procs: int = 1,
    cpus: str | None = LOAD_CPU,
    extra: Sequence[str] = (),
) -> Step:
    """``bridge load`` with ``calls`` calls; server CPU and RSS measured while all are up.

    The measuring window starts once every call is connected (generator start-up, about
    0.5 s, plus the ramp, plus 1 s) and ends before the first call hangs up.
    """
    rss_idle = rss_bytes(srv.pid)
    argv = load_argv(
        srv.url,
        calls,
        seconds,
        "--ramp",
        str(ramp_s),
        "--procs",
        str(procs),
        "--linger",
        "0.5",
        *extra,
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        pinned(cpus, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    window_start = started + 1.5 + ramp_s
    window_end = started + 0.5 + seconds
    if window_end - window_start < 1.0:
        raise ValueError(f"steps of {seconds} s leave no window to measure the server in")
    time.sleep(window_start - time.monotonic())
    cpu0, busy0, load0, t0 = (
        cpu_seconds(srv.pid),
        machine_busy_seconds(),
        cpu_seconds(proc.pid),
        time.monotonic(),
    )
    time.sleep((window_end - window_start) / 2)
    rss_loaded = rss_bytes(srv.pid)
    time.sleep(max(0.0, window_end - time.monotonic()))
    cpu1, busy1, load1, t1 = (
        cpu_seconds(srv.pid),
        machine_busy_seconds(),
        cpu_seconds(proc.pid),
        time.monotonic(),
    )
    try:
        out, err = proc.communicate(timeout=seconds + ramp_s + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        load: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"bridge load failed: {err.decode(errors='replace')[-2000:]}") from exc
    wall = t1 - t0
    server_cpu = cpu1 - cpu0
    other = (busy1 - busy0) - server_cpu - (load1 - load0)
    return Step(
        calls=calls,
        seconds=seconds,
        load=load,
        server_cpu_pct=100 * server_cpu / wall,
        cpu_ms_per_call_s=1000 * server_cpu / (calls * wall),
        rss_mb=rss_loaded / 2**20,
        rss_per_call_kb=max(0, rss_loaded - rss_idle) / 1024 / calls,
        other_cpu_pct=max(0.0, 100 * other / wall),
    )


def write_json(name: str, data: dict[str, Any]) -> Path:
    path = RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
