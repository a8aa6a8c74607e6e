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

Recording is batched: :meth:`Histogram.record` appends the value to a typed array, and every
``batch`` values (or when anything is read) numpy puts the whole batch into its buckets at
once. The load generator records three values per frame sent and echoed; a bucket update in
Python per value was about 0.55 us, an append about 0.12 us and the batch about 0.03 us per
value. What is read (count, sum, extremes, percentiles, buckets) is always exact and up to
date.

Import rule: standard library and numpy.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

#: Values kept before they are put into buckets (8 KiB), unless a histogram says otherwise.
DEFAULT_BATCH = 1024
_INT64_MAX = (1 << 63) - 1


class Histogram:
    """Counts of non-negative integer values (ns) in log-linear buckets, with exact extremes."""

    __slots__ = (
        "_batch",
        "_buckets",
        "_count",
        "_half",
        "_max_index",
        "_max_ns",
        "_max_units",
        "_min_ns",
        "_pending",
        "_sub",
        "_sum_ns",
        "sub_bits",
        "unit_ns",
    )

    def __init__(
        self,
        unit_ns: int = 1_000,
        sub_bits: int = 8,
        max_ns: int = 10**10,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if unit_ns <= 0 or sub_bits < 2 or max_ns <= 0 or batch < 1:
            raise ValueError("unit_ns, max_ns and batch must be positive and sub_bits >= 2")
        self.unit_ns = unit_ns
        self.sub_bits = sub_bits
        self._sub = 1 << sub_bits
        self._half = self._sub >> 1
        # Values past max_ns share the last bucket; the exact maximum is still kept.
        self._max_units = max_ns // unit_ns
        self._max_index = self._index(self._max_units)
        self._buckets: dict[int, int] = {}
        self._batch = batch
        #: Recorded values not yet in buckets (at most ``batch``; see the module doc).
        self._pending = array("q")
        self._count = 0
        self._sum_ns = 0
        self._min_ns = 0
        self._max_ns = 0

    # What is read always includes the pending values.
    @property
    def count(self) -> int:
        return self._count + len(self._pending)

    @property
    def sum_ns(self) -> int:
        self._fold()
        return self._sum_ns

    @property
    def min_ns(self) -> int:
        self._fold()
        return self._min_ns

    @property
    def max_ns(self) -> int:
        self._fold()
        return self._max_ns

    @property
    def max_buckets(self) -> int:
        """The most buckets this histogram can ever hold: its memory bound."""
        return self._max_index + 1

    def __len__(self) -> int:
        return self.count

    def bucket_counts(self) -> dict[int, int]:
        """Bucket index -> values in it (a copy; pending values included)."""
        self._fold()
        return dict(self._buckets)

    def __getstate__(self) -> dict[str, Any]:
        self._fold()  # (pickled between load processes: buckets only)
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

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
        """Add one value; negative values count as 0 (a clock cannot be early by design)."""
        pending = self._pending
        try:
            pending.append(value_ns)
        except OverflowError:  # beyond 64 bits: one value the slow way
            self._fold()
            self._add_one(value_ns)
            return
        if len(pending) >= self._batch:
            self._fold()

    def _add_one(self, value_ns: int) -> None:
        value_ns = max(0, value_ns)
        index = self._index(min(value_ns // self.unit_ns, self._max_units))
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self._max_ns = max(self._max_ns, value_ns)
        self._min_ns = value_ns if not self._count else min(self._min_ns, value_ns)
        self._count += 1
        self._sum_ns += value_ns

    def _fold(self) -> None:
        """Put the pending values into buckets, all at once (see the module doc)."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        values = np.maximum(np.frombuffer(pending, dtype=np.int64), 0)
        low, high = int(values.min()), int(values.max())
        # (an int64 sum could overflow: Python's integers cannot)
        total = int(values.sum()) if high <= _INT64_MAX // n else sum(values.tolist())
        # Past max_ns every value shares the last bucket: clip to it first (the index grows
        # with the value), which also keeps the float conversion below exact enough.
        units = np.minimum(values // self.unit_ns, self._max_units)
        index = units.copy()
        big = units >= self._sub
        if big.any():
            u = units[big]
            # bit_length(u): frexp's exponent, corrected where the float rounded up.
            bits = np.frexp(u.astype(np.float64))[1].astype(np.int64)
            bits -= (u >> (bits - 1)) == 0
            shift = bits - self.sub_bits
            index[big] = self._sub + (shift - 1) * self._half + (u >> shift) - self._half
        counts = np.bincount(index)
        hit = np.flatnonzero(counts)
        buckets = self._buckets
        get = buckets.get
        for i, k in zip(hit.tolist(), counts[hit].tolist(), strict=True):
            buckets[i] = get(i, 0) + k
        self._max_ns = max(self._max_ns, high)
        if low < self._min_ns or not self._count:
            self._min_ns = low
        self._count += n
        self._sum_ns += total
        del pending[:]

    def record_many(self, values_ns: Iterable[int]) -> None:
        for value in values_ns:
            self.record(value)
        self._fold()

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts (same bucket layout required) into this histogram."""
        if (other.unit_ns, other.sub_bits, other._max_index) != (
            self.unit_ns,
            self.sub_bits,
            self._max_index,
        ):
            raise ValueError("cannot merge histograms with different bucket layouts")
        other._fold()
        if other._count == 0:
            return
        self._fold()
        buckets = self._buckets
        for index, n in other._buckets.items():
            buckets[index] = buckets.get(index, 0) + n
        if self._count == 0 or other._min_ns < self._min_ns:
            self._min_ns = other._min_ns
        self._max_ns = max(self._max_ns, other._max_ns)
        self._count += other._count
        self._sum_ns += other._sum_ns

    def mean_ns(self) -> float | None:
        return self.sum_ns / self.count if self.count else None

    def percentiles_ns(self, percents: Iterable[float]) -> list[float | None]:
        """Percentiles with numpy's default (linear) definition, to within one bucket.

        The k-th smallest value is estimated by the middle of its bucket, clamped to the exact
        min and max; a percentile between two ranks interpolates linearly as numpy does, so the
        result differs from ``numpy.percentile`` on the raw data by at most a bucket width.
        """
        wanted = list(percents)
        self._fold()
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
