"""Bounded-memory statistics for long calls and many calls: a log-linear histogram.

A call of hours records one value per 20 ms frame; keeping the samples would grow without
bound (docs/lessons.md s.8: nothing per call may grow with call length). :class:`Histogram`
keeps counts in HDR-style buckets instead: values below ``2**sub_bits`` units are exact, above that
every power-of-two range is split into ``2**(sub_bits-1)`` equal buckets, so the relative
error of a percentile is below ``2**-(sub_bits-1)`` (0.8 % with the default 8 bits) at any
magnitude. Buckets are a sparse dict, so memory follows the number of distinct buckets hit
(at most :attr:`Histogram.max_buckets`, about 2300 with the defaults), not the sample count.
Count, sum, minimum and maximum are kept exactly.

Values are integers in nanoseconds (the project's timestamps are integers); ``unit_ns`` sets
the resolution of the smallest bucket (1 us by default).

Import rule: standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Histogram:
    """Counts of non-negative integer values (ns) in log-linear buckets, with exact extremes."""

    __slots__ = (
        "_buckets",
        "_half",
        "_max_index",
        "_sub",
        "count",
        "max_ns",
        "min_ns",
        "sub_bits",
        "sum_ns",
        "unit_ns",
    )

    def __init__(self, unit_ns: int = 1_000, sub_bits: int = 8, max_ns: int = 10**10) -> None:
        if unit_ns <= 0 or sub_bits < 2 or max_ns <= 0:
            raise ValueError("unit_ns and max_ns must be positive and sub_bits >= 2")
        self.unit_ns = unit_ns
        self.sub_bits = sub_bits
        self._sub = 1 << sub_bits
        self._half = self._sub >> 1
        # Values past max_ns share the last bucket; the exact maximum is still kept.
        self._max_index = self._index(max_ns // unit_ns)
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.sum_ns = 0
        self.min_ns = 0
        self.max_ns = 0

    @property
    def max_buckets(self) -> int:
        """The most buckets this histogram can ever hold: its memory bound."""
        return self._max_index + 1

    def __len__(self) -> int:
        return self.count

    def _index(self, units: int) -> int:
        if units < self._sub:
            return units
        shift = units.bit_length() - self.sub_bits
        return self._sub + (shift - 1) * self._half + (units >> shift) - self._half

    def _bounds(self, index: int) -> tuple[int, int]:
        """The bucket's [low, high) range in units."""
        if index < self._sub:
            return index, index + 1
        j = index - self._sub
        shift = j // self._half + 1
        low = (j % self._half + self._half) << shift
        return low, low + (1 << shift)

    def record(self, value_ns: int) -> None:
        """Add one value; negative values count as 0 (a clock cannot be early by design).

        The load generator calls this three times per frame, so :meth:`_index` is inlined
        and no builtin is called (comparisons instead of ``max``/``min``: each builtin call
        costs about as much as the rest of a record).
        """
        if value_ns < 0:  # noqa: PLR1730
            value_ns = 0
        units = value_ns // self.unit_ns
        if units < self._sub:
            index = units
        else:
            shift = units.bit_length() - self.sub_bits
            index = self._sub + (shift - 1) * self._half + (units >> shift) - self._half
            if index > self._max_index:  # noqa: PLR1730 - no builtin call per record
                index = self._max_index
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + 1
        if value_ns > self.max_ns:  # noqa: PLR1730
            self.max_ns = value_ns
        if value_ns < self.min_ns or not self.count:
            self.min_ns = value_ns
        self.count += 1
        self.sum_ns += value_ns

    def record_many(self, values_ns: Iterable[int]) -> None:
        for value in values_ns:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts (same bucket layout required) into this histogram."""
        if (other.unit_ns, other.sub_bits, other._max_index) != (
            self.unit_ns,
            self.sub_bits,
            self._max_index,
        ):
            raise ValueError("cannot merge histograms with different bucket layouts")
        if other.count == 0:
            return
        buckets = self._buckets
        for index, n in other._buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        if self.count == 0 or other.min_ns < self.min_ns:
            self.min_ns = other.min_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.sum_ns += other.sum_ns

    def mean_ns(self) -> float | None:
        return self.sum_ns / self.count if self.count else None

    def percentiles_ns(self, percents: Iterable[float]) -> list[float | None]:
        """Percentiles with numpy's default (linear) definition, to within one bucket.

        The k-th smallest value is estimated by the middle of its bucket, clamped to the exact
        min and max; a percentile between two ranks interpolates linearly as numpy does, so the
        result differs from ``numpy.percentile`` on the raw data by at most a bucket width.
        """
        wanted = list(percents)
        if self.count == 0:
            return [None for _ in wanted]
        ranks: list[tuple[float, int, int]] = []
        needed: set[int] = set()
        for p in wanted:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be in [0, 100], got {p}")
            position = p / 100 * (self.count - 1)
            lower = math.floor(position)
            upper = min(lower + 1, self.count - 1)
            ranks.append((position - lower, lower, upper))
            needed.update((lower, upper))
        values: dict[int, float] = {}
        targets = sorted(needed)
        t = 0
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            while t < len(targets) and targets[t] < seen:
                values[targets[t]] = self._representative(index)
                t += 1
            if t == len(targets):
                break
        # The smallest and largest values are known exactly.
        values[0] = float(self.min_ns)
        values[self.count - 1] = float(self.max_ns)
        return [values[lo] + frac * (values[hi] - values[lo]) for frac, lo, hi in ranks]

    def percentile_ns(self, percent: float) -> float | None:
        return self.percentiles_ns([percent])[0]

    def percentile_ms(self, percent: float) -> float | None:
        value = self.percentile_ns(percent)
        return None if value is None else value / 1e6

    def _representative(self, index: int) -> float:
        low, high = self._bounds(index)
        # The bucket holds values in [low * unit, high * unit - 1] ns: take the middle.
        middle = (low * self.unit_ns + high * self.unit_ns - 1) / 2
        return min(max(middle, float(self.min_ns)), float(self.max_ns))

    def summary_ms(self, percents: Iterable[float] = (50, 99)) -> dict[str, Any]:
        """``{"p50": ..., "p99": ..., "max": ..., "count": ...}`` in ms (``None`` when empty)."""
        wanted = list(percents)
        out: dict[str, Any] = {}
        for p, value in zip(wanted, self.percentiles_ns(wanted), strict=True):
            out[f"p{p:g}"] = None if value is None else round(value / 1e6, 3)
        out["max"] = round(self.max_ns / 1e6, 3) if self.count else None
        out["count"] = self.count
        return out
