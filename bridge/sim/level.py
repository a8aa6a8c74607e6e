"""Where speech is in 16-bit PCM: the samples whose level reaches a threshold.

Turn latency and barge-in are measured from the last and the first *speech* sample, and the
test agent decides when the caller spoke the same way. A sample is speech when its magnitude
reaches the threshold (``--speech-threshold-dbfs``, default -40 dBFS: 328 of 32768): an
instantaneous energy threshold, exact to the sample, with no window to smear the edges. A
quieter sound (line noise, a breath, the stamps' +-1 in the least significant bit) is silence.

Import rule: numpy and ``bridge.audio``.
"""

from __future__ import annotations

import math

import numpy as np

from bridge.audio.pcm import Samples, to_samples

FULL_SCALE = 32768


def threshold_of(dbfs: float) -> int:
    """A level in dBFS as the 16-bit magnitude it stands for (at least 1)."""
    return max(1, round(FULL_SCALE * 10 ** (dbfs / 20)))


def speech_bounds(samples: Samples, threshold: int) -> tuple[int, int] | None:
    """``(first, last + 1)``: the span from the first to the last speech sample, or ``None``."""
    if not len(samples):
        return None
    if int(samples.max()) < threshold and int(samples.min()) > -threshold:
        return None
    hits = np.flatnonzero((samples >= threshold) | (samples <= -threshold))
    return int(hits[0]), int(hits[-1]) + 1


def frame_bounds(frame: bytes, threshold: int) -> tuple[int, int] | None:
    """:func:`speech_bounds` of one frame of little-endian PCM bytes."""
    return speech_bounds(to_samples(frame), threshold)


def peak(frame: bytes) -> int:
    """The largest magnitude in a frame of PCM bytes."""
    samples = to_samples(frame)
    if not len(samples):
        return 0
    return max(int(samples.max()), -int(samples.min()))


def dbfs(magnitude: int) -> float:
    """A magnitude in dBFS (-120 for silence)."""
    return 20 * math.log10(magnitude / FULL_SCALE) if magnitude > 0 else -120.0
