"""How a bridge process runs its event loop: uvloop where installed, startup heap frozen.

Every entry point (``bridge serve``, each ``--workers`` child, ``bridge call``/``load`` and each
load process) runs through :func:`run`, so they all get the same loop: uvloop's timers and
transports cost the per-frame path less than asyncio's, and a load generator's own overhead
would otherwise skew the latencies it reports. uvloop is a runtime dependency on Linux; the
fallback keeps the package importable and correct elsewhere.

:func:`freeze_startup_heap` is for a process about to serve for hours: everything that exists
once startup is done (modules, numpy, websockets: tens of thousands of objects) lives for the
whole process, and a full garbage collection that walks it stalled every call for 8-20 ms at a
few hundred calls (docs/benchmarks.md). Frozen, a collection walks only per-call objects. A
library call never freezes its caller's heap: only entry points call it.

Import rule: standard library (uvloop where installed); no other bridge module.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new uvloop loop (asyncio's where uvloop is missing)."""
    try:
        import uvloop  # noqa: PLC0415 - optional at import time, needed only here
    except ImportError:  # pragma: no cover - only on platforms without uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def freeze_startup_heap() -> None:
    """Collect once, then move every surviving object out of the collector's way."""
    gc.collect()
    gc.freeze()
