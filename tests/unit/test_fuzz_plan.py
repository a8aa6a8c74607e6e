"""The fuzzer's plan: ``scripts/fuzz --inputs N`` sends N inputs, not fewer.

The layers' shares did not sum to 1, so the default "million" was 902 591 inputs (the first
full run, docs/reliability.md s.2).
"""

from __future__ import annotations

import pytest

from benchmarks.fuzz import SHARES, quotas


@pytest.mark.parametrize("total", [3000, 435_000, 1_000_000])
def test_the_layer_quotas_add_up_to_the_inputs_asked_for(total: int) -> None:
    q = quotas(total)
    assert set(q) == set(SHARES)
    assert abs(sum(q.values()) - total) <= len(SHARES)  # rounding, one per layer at most


def test_every_layer_gets_inputs_in_proportion_to_its_share() -> None:
    q = quotas(1_000_000)
    whole = sum(SHARES.values())
    for name, share in SHARES.items():
        assert q[name] == pytest.approx(1_000_000 * share / whole, abs=1)
