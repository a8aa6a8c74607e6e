"""``bridge serve`` with an event-loop lag probe: what the loop-lag benchmark runs.

Runs exactly what ``bridge serve ARGS`` runs (the same argument parser, ``build_handler`` and
``serve`` on uvloop) plus one timer callback every ``PROBE_MS`` that records how late it ran,
measured with ``time.monotonic_ns``. The timer is this tree's ``bridge/looptimer.py`` (a
timerfd: it fires at the nanosecond it is armed for, where uvloop's own timers fire on whole
milliseconds, up to 1.5 ms either side), loaded from its file so that a run of another
tree's bridge (``--before``) is measured with the same instrument. What is left at idle (the
kernel's and the VM's wake-up latency) the benchmark reports as the idle baseline. On SIGTERM/SIGINT it writes
``{"t_ns": [...], "lag_ns": [...]}`` to ``$LOOP_LAG_OUT`` (monotonic times, comparable with
the benchmark's own ``time.monotonic_ns``) and exits.

Run it as a script (``python benchmarks/servers/probed_bridge.py --port 0 ...``), not with
``-m``: then ``bridge`` is imported from ``PYTHONPATH`` first, so the benchmark can run
another tree's bridge (the code before a change) with this same probe. Prints
``listening PORT`` once bound.
"""

from __future__ import annotations

import array
import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bridge.cli import build_parser
from bridge.config import config_from
from bridge.handlers import build_handler
from bridge.logs import setup_logging
from bridge.server import BridgeServer, serve

PROBE_MS = 1
OUT_ENV = "LOOP_LAG_OUT"
_LOOPTIMER = Path(__file__).resolve().parents[2] / "bridge" / "looptimer.py"


def _load_looptimer() -> Any:
    spec = importlib.util.spec_from_file_location("probe_looptimer", _LOOPTIMER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Probe:
    """One timer at a time, each due ``PROBE_MS`` after the previous one ran."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.t_ns = array.array("q")
        self.lag_ns = array.array("q")
        self._due = 0
        self._timer = _load_looptimer().LoopTimer(self.loop, self._fire)

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        self._timer.close()

    def _schedule(self) -> None:
        self._due = time.monotonic_ns() + PROBE_MS * 1_000_000
        self._timer.arm_at(self._due)

    def _fire(self) -> None:
        now = time.monotonic_ns()
        self.t_ns.append(now)
        self.lag_ns.append(max(0, now - self._due))
        self._schedule()


async def main(argv: list[str]) -> None:
    args = build_parser().parse_args(["serve", *argv])
    config = config_from(args)
    setup_logging(config.log_level, config.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    probe = Probe()

    def listening(server: BridgeServer) -> None:
        probe.start()
        print(f"listening {server.port}", flush=True)

    handler = build_handler(config)
    try:
        await serve(config, handler, stop, on_listening=listening)
    finally:
        probe.stop()
        handler.close()
    out = os.environ.get(OUT_ENV)
    if out:
        with open(out, "w") as file:  # noqa: ASYNC230 - once, at exit
            json.dump({"t_ns": probe.t_ns.tolist(), "lag_ns": probe.lag_ns.tolist()}, file)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
