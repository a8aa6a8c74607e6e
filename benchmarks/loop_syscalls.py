"""Which thread touches the recordings and the metrics files: strace of a recording bridge.

``python -m benchmarks.loop_syscalls [--before REF] [--calls 20] [--seconds 6]``

Starts the same probed, recording, multiprocess-metrics server as ``benchmarks.loop_lag``
(scraped every second), runs ``bridge load`` against it under ``strace -f -y``, and counts
the file system calls on recordings (``*.wav``) and metric files (``*.db``) made by the
event-loop thread and by everything else (the file writer, the metrics helper
process). Counts, not times: strace slows the process down, so no timing from this run means
anything; what it shows is where the blocking calls happen. Needs ``strace``. Prints a table
and writes ``benchmarks/results/loop_syscalls.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, loop_lag

_LINE = re.compile(r"(\d+)\s+(\w+)\((\d+)<([^>]*)>")
CALLS = ("write", "pwrite64", "lseek", "read", "close", "fsync")


def _kind(path: str) -> str | None:
    if path.endswith(".wav"):
        return "wav"
    if path.endswith(".db"):
        return "metrics"
    return None


def one_run(tree: Path | None, calls: int, seconds: float) -> dict[str, int]:
    work = Path(tempfile.mkdtemp(prefix="loop-syscalls-"))
    env = {
        "LOOP_LAG_OUT": str(work / "probe.json"),
        "PROMETHEUS_MULTIPROC_DIR": str(loop_lag._metrics_dir(work)),
    }
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    argv = [
        harness.PYTHON,
        str(loop_lag.PROBED),
        "--port",
        "0",
        "--log-format",
        "json",
        "--drain-seconds",
        "0",
        "--record-dir",
        str(work / "rec"),
    ]
    out = work / "strace.txt"
    try:
        with harness.server("loop-syscalls", argv, env=env, cpus=None) as srv:
            strace = ["strace", "-f", "-y", "-e", f"trace={','.join(CALLS)}", "-o", str(out)]
            trace = subprocess.Popen([*strace, "-p", str(srv.pid)], stderr=subprocess.DEVNULL)
            time.sleep(1)
            port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
            with loop_lag._Scraper(port):
                subprocess.run(
                    harness.load_argv(srv.url, calls, seconds), capture_output=True, check=False
                )
            trace.terminate()
            trace.wait()
            loop_tid = srv.pid
        counts: collections.Counter[str] = collections.Counter()
        for line in out.read_text().splitlines():
            match = _LINE.match(line)
            if match is None:
                continue
            tid, call, _, path = match.groups()
            kind = _kind(path)
            if kind is None:
                continue
            who = "loop" if int(tid) == loop_tid else "off-loop"
            counts[f"{who} {call} {kind}"] += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", metavar="REF", help="also run this git ref's bridge")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    if shutil.which("strace") is None:
        raise SystemExit("loop_syscalls: strace is not installed (apt-get install strace)")
    data: dict[str, Any] = {"calls": args.calls, "seconds": args.seconds, "runs": {}}
    with contextlib.ExitStack() as stack:
        variants: list[tuple[str, Path | None]] = [("after", None)]
        if args.before:
            variants.insert(0, ("before", stack.enter_context(loop_lag._tree(args.before))))
            data["before"] = loop_lag._commit(args.before)
        data["after"] = loop_lag._commit("HEAD")
        for name, tree in variants:
            counts = one_run(tree, args.calls, args.seconds)
            data["runs"][name] = counts
            print(name)
            for key, value in counts.items():
                print(f"  {value:7d}  {key}")
    print(f"wrote {harness.write_json('loop_syscalls.json', data)}")


if __name__ == "__main__":
    main()
