"""The load generator's calls sit on different phases of the 20 ms grid (bridge/sim/load.py).

Real calls start whenever their phones were answered, so a server sees their frames spread
over each 20 ms; a generator that starts call ``i`` at ``ramp * i / calls`` with round
numbers stacks them: 200 calls over 2 s are 10 ms apart, two phases, 100 frames arriving at
once twice per frame, and the server's loop lag measures that artificial burst.
"""

from __future__ import annotations

import itertools

import pytest

from bridge.sim.load import phase_ns
from bridge.units import FRAME_NS, MS


def _largest_gap_ns(calls: int, ramp_ns: int) -> int:
    """The widest stretch of the 20 ms frame in which none of the calls' frames is due."""
    phases = sorted((ramp_ns * i // calls + phase_ns(i)) % FRAME_NS for i in range(calls))
    gaps = [b - a for a, b in itertools.pairwise(phases)]
    return max([*gaps, phases[0] + FRAME_NS - phases[-1]])


@pytest.mark.parametrize("ramp_ms", [0, 1000, 1234, 2000, 4000])
@pytest.mark.parametrize("calls", [10, 200, 1000])
def test_any_ramp_spreads_the_calls_over_the_whole_frame(calls: int, ramp_ms: int) -> None:
    # Evenly spread, the gap would be FRAME / calls; allow four times that (200 calls: 0.4 ms,
    # where the old start times left 10 ms gaps).
    assert _largest_gap_ns(calls, ramp_ms * MS) <= 4 * FRAME_NS // calls


def test_without_the_phase_a_2_s_ramp_put_200_calls_on_two_phases() -> None:
    """What the phase fixes (the old start times), so the test above can fail."""
    starts = {(2000 * MS * i // 200) % FRAME_NS for i in range(200)}
    assert len(starts) == 2
    assert all(0 <= phase_ns(i) < FRAME_NS for i in range(5000))
