"""Multi-core: calls held against ``bridge serve --workers N``.

Run ``python -m benchmarks.multicore [--quick]``; writes ``benchmarks/results/multicore.json``.

``--workers N`` runs N server processes on one port (SO_REUSEPORT). Whether this checkout has
it is checked, not assumed: ``bridge serve --workers 2`` must start and show at least two
processes under the supervisor; otherwise the result says "not available" and why.

On a machine with C cores the honest measurement gives the workers cores 0..N-1 and the load
generator the others (``bridge load --procs``). This machine may have two: then N = 1 runs on
core 0 with the generator on core 1, and N = 2 shares core 1 with the generator, which the
result marks (``generator_shares_cores``): that point shows the overhead of the supervisor
and SO_REUSEPORT, not the scaling. The expected curve is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from typing import Any

from benchmarks import capacity, harness


def workers_available() -> tuple[bool, str]:
    """Start ``bridge serve --workers 2`` and count its processes."""
    help_text = subprocess.run(
        [harness.PYTHON, "-m", "bridge", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=harness.ROOT,
    ).stdout
    if "--workers" not in help_text:
        return False, "bridge serve has no --workers option"
    try:
        with harness.server(
            "workers-probe", harness.bridge_argv("--workers", "2"), cpus=None
        ) as srv:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if len(harness.tree_pids(srv.pid)) >= 3:
                    return True, "ok"
                time.sleep(0.1)  # workers are child processes: nothing to await
            count = len(harness.tree_pids(srv.pid))
            return False, f"--workers 2 ran {count} process(es), not a supervisor and 2 workers"
    except RuntimeError as exc:
        return False, f"--workers 2 did not start: {str(exc).splitlines()[0]}"


def run(quick: bool) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    ok, why = workers_available()
    data: dict[str, Any] = {"quick": quick, "machine": harness.machine(), "available": ok}
    if not ok:
        data["reason"] = why
        print(f"  multi-core: not available ({why})")
        return data
    if quick:
        ladder, seconds, bisect_to = [150], 5.0, 150  # one rung: cost and pass/fail
    else:
        ladder, seconds, bisect_to = [200, 400, 600, 800, 1000, 1200, 1600, 2000], 20.0, 50
    points = []
    for n in range(1, min(8, cores) + 1):
        if cores - n >= 1:
            server_cpus, load_cpus, shared = f"0-{n - 1}", f"{n}-{cores - 1}", False
        else:
            server_cpus, load_cpus, shared = f"0-{n - 1}", str(cores - 1), True
        argv = harness.bridge_argv("--workers", str(n))
        procs = max(1, cores - n) if not shared else 1
        with harness.server(f"workers-{n}", argv, cpus=server_cpus) as srv:
            result = capacity.search(
                srv, ladder, seconds, bisect_to, load_cpus=load_cpus, procs=procs, retry=not quick
            )
        result.update(
            workers=n, server_cpus=server_cpus, load_cpus=load_cpus, generator_shares_cores=shared
        )
        points.append(result)
        if shared:
            break
    data["points"] = points
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short steps, coarse ladder")
    args = parser.parse_args(argv)
    data = run(args.quick)
    print(f"wrote {harness.write_json('multicore.json', data)}")


if __name__ == "__main__":
    main()
