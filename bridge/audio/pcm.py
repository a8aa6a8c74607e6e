"""Linear 16-bit little-endian PCM bytes <-> numpy int16 arrays.

Views, not copies, on the way in: an inbound 640-byte frame becomes an int16 array that
shares its memory with the received ``bytes``. The way out has to produce ``bytes`` for the
socket, which is the one copy we cannot avoid.

Import rule: numpy and the standard library only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PCM_DTYPE = np.dtype("<i2")

Samples = NDArray[np.int16]


def to_samples(data: bytes | bytearray | memoryview) -> Samples:
    """A read-only int16 view of ``data`` (no copy). ``len(data)`` must be even."""
    if len(data) % 2:
        raise ValueError(f"16-bit PCM needs an even byte count, got {len(data)}")
    view: Samples = np.frombuffer(data, dtype=PCM_DTYPE)
    return view


def to_bytes(samples: Samples) -> bytes:
    """Little-endian PCM bytes for the socket (converts only if the array is not <i2)."""
    return samples.astype(PCM_DTYPE, copy=False).tobytes()


def float_to_int16(signal: NDArray[np.floating]) -> Samples:
    """Round and clip a float signal in int16 units (not -1..1) to int16."""
    out: Samples = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return out


def tone(
    freq_hz: float, sample_rate: int, n_samples: int, amplitude: int = 8000, start_sample: int = 0
) -> Samples:
    """A sine tone, phase-continuous across calls through ``start_sample`` (integer time)."""
    n = np.arange(start_sample, start_sample + n_samples, dtype=np.float64)
    return float_to_int16(amplitude * np.sin(2 * np.pi * freq_hz * n / sample_rate))
