"""bridge.stats.Histogram against numpy on known data: percentiles, merge, memory bound."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bridge.stats import Histogram

PERCENTS = [0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100]


def _tolerance(h: Histogram, value: float) -> float:
    """Half a bucket at ``value``'s magnitude, plus one unit for the discrete edges."""
    units = value / h.unit_ns
    relative = 2.0 ** -(h.sub_bits - 1)
    return (max(1.0, units * relative) + 1) * h.unit_ns


def _check_against_numpy(h: Histogram, data: np.ndarray) -> None:
    expected = np.percentile(data, PERCENTS)
    got = h.percentiles_ns(PERCENTS)
    for p, want, have in zip(PERCENTS, expected, got, strict=True):
        assert have is not None
        assert abs(have - want) <= _tolerance(h, float(want)), (p, want, have)


@pytest.mark.parametrize(
    "name",
    ["uniform_ms", "lognormal_rtt", "exponential_jitter", "constant", "tiny_values"],
)
def test_percentiles_match_numpy_within_bucket_resolution(name: str) -> None:
    rng = np.random.default_rng(1234)
    data = {
        "uniform_ms": rng.integers(0, 50_000_000, 20_000),
        "lognormal_rtt": (rng.lognormal(np.log(2e6), 0.8, 20_000)).astype(np.int64),
        "exponential_jitter": (rng.exponential(300_000, 20_000)).astype(np.int64),
        "constant": np.full(1000, 20_000_000, dtype=np.int64),
        "tiny_values": rng.integers(0, 200_000, 5000),
    }[name]
    h = Histogram()
    h.record_many(int(v) for v in data)
    assert h.count == len(data)
    assert h.min_ns == int(data.min())
    assert h.max_ns == int(data.max())
    assert h.sum_ns == int(data.sum())
    _check_against_numpy(h, data)


def test_small_counts_and_exact_extremes() -> None:
    h = Histogram()
    assert h.percentile_ns(50) is None
    assert h.summary_ms()["p50"] is None
    h.record(5_000_000)
    assert h.percentiles_ns([0, 50, 100]) == [5_000_000, 5_000_000, 5_000_000]
    h.record(7_000_000)
    assert h.percentile_ns(100) == 7_000_000
    assert h.percentile_ns(0) == 5_000_000
    assert abs((h.percentile_ns(50) or 0) - 6_000_000) <= _tolerance(h, 6e6)


def test_negative_values_count_as_zero_and_huge_values_keep_exact_max() -> None:
    h = Histogram(max_ns=10**9)
    h.record(-5)
    h.record(50 * 10**9)  # past the last bucket
    assert h.min_ns == 0
    assert h.max_ns == 50 * 10**9
    assert h.percentile_ns(100) == 50 * 10**9


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.integers(0, 10**8, 3000) for _ in range(4)]
    merged = Histogram()
    for part in parts:
        h = Histogram()
        h.record_many(int(v) for v in part)
        merged.merge(h)
    merged.merge(Histogram())  # an empty histogram changes nothing
    whole = Histogram()
    whole.record_many(int(v) for part in parts for v in part)
    assert merged.count == whole.count
    assert (merged.min_ns, merged.max_ns, merged.sum_ns) == (
        whole.min_ns,
        whole.max_ns,
        whole.sum_ns,
    )
    assert merged.percentiles_ns(PERCENTS) == whole.percentiles_ns(PERCENTS)
    _check_against_numpy(merged, np.concatenate(parts))


def test_merge_into_empty_takes_min() -> None:
    a, b = Histogram(), Histogram()
    b.record(3_000_000)
    a.merge(b)
    assert (a.min_ns, a.max_ns, a.count) == (3_000_000, 3_000_000, 1)


def test_merge_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="layout"):
        Histogram().merge(Histogram(sub_bits=6))


def test_memory_is_bounded_however_many_values() -> None:
    h = Histogram()
    bound = h.max_buckets
    assert bound < 5000
    rng = np.random.default_rng(3)
    for chunk in range(20):
        values = rng.integers(0, 2 * 10**10, 10_000) >> rng.integers(0, 34, 10_000)
        h.record_many(int(v) for v in values)
        assert len(h._buckets) <= bound, chunk
    assert h.count == 200_000


def test_bucket_layout_is_monotonic_and_contiguous() -> None:
    h = Histogram(unit_ns=1, sub_bits=4, max_ns=10**6)
    previous_high = 0
    for index in range(h.max_buckets):
        low, high = h._bounds(index)
        assert low == previous_high
        assert h._index(low) == index
        assert h._index(high - 1) == index
        previous_high = high


def test_rejects_bad_percentiles_and_layouts() -> None:
    h = Histogram()
    h.record(1)
    with pytest.raises(ValueError):
        h.percentile_ns(101)
    with pytest.raises(ValueError):
        Histogram(unit_ns=0)


def test_summary_in_ms() -> None:
    h = Histogram()
    for v in range(1, 101):
        h.record(v * 1_000_000)
    summary = h.summary_ms()
    assert summary["count"] == 100
    assert summary["max"] == 100.0
    assert abs(summary["p50"] - 50.5) < 0.5
    assert abs(summary["p99"] - 99.01) < 1.0
    assert h.mean_ns() == pytest.approx(50.5e6)


def test_record_puts_each_value_in_the_bucket_index_says() -> None:
    # Batches are put into buckets by numpy, not by _index: both must agree on every
    # magnitude and the clamp.
    h = Histogram(max_ns=10**9)
    values = [0, 1, 999, 1000, 255_999, 256_000, 256_999, 10**6, 123_456_789, 10**9, 10**12]
    for value in values:
        h.record(value)
    expected: dict[int, int] = {}
    for value in values:
        index = min(h._index(value // h.unit_ns), h._max_index)
        expected[index] = expected.get(index, 0) + 1
    assert h.bucket_counts() == expected
    assert (h.min_ns, h.max_ns, h.count) == (0, 10**12, len(values))


@pytest.mark.parametrize(("unit_ns", "sub_bits", "max_ns"), [(1000, 8, 10**10), (1, 4, 2**62)])
def test_batched_recording_is_exact_at_every_magnitude(
    unit_ns: int, sub_bits: int, max_ns: int
) -> None:
    # Powers of two and their neighbours up to 2**62 (where a float rounds), values past
    # 64 bits and below zero, over several batch boundaries: the same buckets and exact
    # extremes and sum as bucketing each value on its own.
    rng = np.random.default_rng(11)
    values = [v for k in range(63) for v in (2**k - 1, 2**k, 2**k + 1)]
    values += [int(v) for v in rng.integers(-1000, 10**9, 500)] + [-(2**70), 2**70, 2**63]
    h = Histogram(unit_ns, sub_bits, max_ns, batch=37)
    expected: dict[int, int] = {}
    for value in values:
        h.record(value)
        index = min(h._index(max(0, value) // unit_ns), h._max_index)
        expected[index] = expected.get(index, 0) + 1
    assert h.count == len(values)
    assert h.bucket_counts() == expected
    clamped = [max(0, v) for v in values]
    assert (h.min_ns, h.max_ns, h.sum_ns) == (min(clamped), max(clamped), sum(clamped))


def test_histograms_survive_pickling_for_load_processes() -> None:
    # bridge load --procs sends each process's histograms to the parent by pickle.
    h = Histogram()
    h.record_many(range(0, 50_000_000, 12_345))
    copy = pickle.loads(pickle.dumps(h))
    assert copy.percentiles_ns(PERCENTS) == h.percentiles_ns(PERCENTS)
    merged = Histogram()
    merged.merge(copy)
    merged.merge(h)
    assert merged.count == 2 * h.count
