"""ITU-T G.711 mu-law and A-law, as lookup tables in numpy (no ``audioop`` at run time).

Twilio streams 8 kHz mu-law only; Telnyx and Plivo may too, Telnyx may send A-law
(docs/carriers.md). ``audioop`` did this in C but is deprecated and gone in Python 3.13, so
the tables are built here once, at import, with the segment arithmetic of the reference
implementation (Sun's ``g711.c``, which ``audioop`` used): decoding is a 256-entry table,
encoding a 65 536-entry table indexed by the 16-bit sample. tests/unit/test_g711.py checks
every code and every linear value against ``audioop`` on Python 3.11.

Round trips: decoding then encoding gives every A-law code back; for mu-law it does too except
0x7F ("negative zero"), which comes back as 0xFF, the one zero the encoder produces. So a
mu-law stream made by an encoder survives decode + encode byte for byte.

Import rule: numpy and the standard library only.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

#: The encoded value of silence: the code a zero sample encodes to.
ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5

_PCM = np.dtype("<i2")
# Segment end points of the reference implementation (magnitudes, 14-bit mu / 13-bit A).
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # the largest 14-bit magnitude before the bias


def _all_samples() -> NDArray[np.int32]:
    """Every int16 value, in the order of its unsigned 16-bit pattern (the table index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> NDArray[np.uint8]:
    value = _all_samples() >> 2  # the 14-bit sample
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -value, value), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_SEG_UEND, magnitude, side="left")
    shift = np.minimum(segment, 7) + 1
    code = (segment << 4) | ((magnitude >> shift) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    out: NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return out


def _ulaw_decode_table() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0xF) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    out: NDArray[np.int16] = np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)
    return out


def _alaw_encode_table() -> NDArray[np.uint8]:
    value = _all_samples() >> 3  # the 13-bit sample
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_SEG_AEND, magnitude, side="left")
    shift = np.where(segment < 2, 1, np.minimum(segment, 7))
    code = (segment << 4) | ((magnitude >> shift) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    out: NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return out


def _alaw_decode_table() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    t = (code & 0xF) << 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    out: NDArray[np.int16] = np.where(code & 0x80, t, -t).astype(np.int16)
    return out


_ULAW_ENCODE: Final = _ulaw_encode_table()
_ULAW_DECODE: Final = _ulaw_decode_table()
_ALAW_ENCODE: Final = _alaw_encode_table()
_ALAW_DECODE: Final = _alaw_decode_table()


def ulaw_to_pcm(data: bytes) -> bytes:
    """mu-law codes -> 16-bit little-endian PCM (two bytes per code)."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype(_PCM, copy=False).tobytes()


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> mu-law codes (one byte per sample)."""
    out: bytes = _ULAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()
    return out


def alaw_to_pcm(data: bytes) -> bytes:
    """A-law codes -> 16-bit little-endian PCM (two bytes per code)."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype(_PCM, copy=False).tobytes()


def pcm_to_alaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> A-law codes (one byte per sample)."""
    out: bytes = _ALAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()
    return out
