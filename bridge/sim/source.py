"""The caller's audio: frame ``k`` of a WAV file (looped), a tone or silence, made on demand;
and the frame numbers stamped into it so echoes are matched exactly.

The 16-bit frame number is stamped into the least significant bits of the first 16 samples
(-90 dBFS, inaudible), read back from echoed frames and checked against what was sent with
that number, so echoes match even when the far end drops or reorders frames.

Import rule: numpy, ``bridge.audio``, ``bridge.errors`` and ``bridge.units``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from bridge.audio.pcm import Samples, to_bytes, tone
from bridge.audio.resample import resample_whole
from bridge.audio.wav import read_wav
from bridge.errors import ConfigError
from bridge.units import frame_bytes, frame_samples

STAMP_SAMPLES = 16
SEQ_MASK = 0xFFFF
#: Stamped frames kept per process (see Source.stamped): 1024 frames, 20 s of a ramp.
_STAMP_CACHE = 1024
_STAMP_CACHE_MASK = _STAMP_CACHE - 1


def read_samples(path: Path | str, rate: int) -> Samples:
    """A WAV file's samples at ``rate`` (resampled once, whole); ``ConfigError`` if unreadable."""
    try:
        samples, file_rate = read_wav(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read WAV file: {exc}") from exc
    if file_rate != rate and len(samples):
        samples = resample_whole(samples, file_rate, rate)
    return samples


class FrameSource(Protocol):
    """What the sender takes frames from (a WAV or tone, a conversation)."""

    def frame(self, k: int) -> bytes: ...

    def stamped(self, k: int) -> bytes: ...


class Source:
    """Frame ``k`` of the call's audio, made on demand: a long call holds one file at most."""

    def __init__(
        self, rate: int, wav: Path | str | None = None, tone_hz: float | None = None
    ) -> None:
        self.n = frame_samples(rate)
        self.rate = rate
        self.tone_hz = tone_hz
        self.silence = bytes(frame_bytes(rate))
        self._cache_keys = [-1] * _STAMP_CACHE
        self._cache_frames = [self.silence] * _STAMP_CACHE
        #: The stamp of each cached stamped frame, by the hash of its bytes: an echo that
        #: came back unchanged is matched by the hash it needs anyway, without reading the
        #: stamp out of its samples (which returns the same number, at several times the cost).
        self.stamp_of: dict[int, int] = {}
        self.data: Samples | None = None
        if wav is not None:
            samples = read_samples(wav, rate)
            if len(samples):
                self.data = samples

    def release(self) -> None:
        """Drop the stamped-frame cache (up to 1024 frames: 640 KiB at 16 kHz); it refills
        on demand.

        A call that made its own source ends inside reference cycles (its connection's
        callbacks, its pacer), freed only when the collector next runs a full pass: a
        process that runs call after call (``run_call`` in a loop, the soak's 200 slots)
        held hundreds of ended calls' caches, 1.3 GB after 6 minutes of the soak.
        """
        self._cache_keys = [-1] * _STAMP_CACHE
        self._cache_frames = [self.silence] * _STAMP_CACHE
        self.stamp_of = {}

    def frame(self, k: int) -> bytes:
        if self.data is not None:
            # Looped: frame k starts at sample k*n of an endless repeat of the file.
            data = self.data
            start = (k * self.n) % len(data)
            if start + self.n <= len(data):
                return to_bytes(data[start : start + self.n])
            return to_bytes(np.take(data, np.arange(start, start + self.n), mode="wrap"))
        if self.tone_hz is not None:
            return to_bytes(tone(self.tone_hz, self.rate, self.n, start_sample=k * self.n))
        return self.silence

    def stamped(self, k: int) -> bytes:
        """Frame ``k`` stamped with its number, from a small cache.

        Every call of a load run sends the same frame ``k`` (calls start within a ramp of
        each other), so one process makes each stamped frame once, and its hash, which
        bytes objects keep, once too.
        """
        slot = k & _STAMP_CACHE_MASK
        keys = self._cache_keys
        if keys[slot] == k:
            return self._cache_frames[slot]
        frame = stamp_frame(self.frame(k), k & SEQ_MASK)
        if keys[slot] >= 0:
            self.stamp_of.pop(hash(self._cache_frames[slot]), None)
        keys[slot] = k
        self._cache_frames[slot] = frame
        self.stamp_of[hash(frame)] = k & SEQ_MASK
        return frame


def _spread(value: int) -> int:
    """Bit ``i`` of a byte value moved to bit 0 of byte ``i`` of an 8-byte little-endian int."""
    return sum(((value >> i) & 1) << (8 * i) for i in range(8))


_SPREAD = [_spread(v) for v in range(256)]
_GATHER = {s: v for v, s in enumerate(_SPREAD)}
_LSBS = int.from_bytes(b"\x01" * STAMP_SAMPLES, "little")
_NOT_LSBS = int.from_bytes(b"\xfe" * STAMP_SAMPLES, "little")
_LOW64 = (1 << 64) - 1


def stamp_frame(frame: bytes, seq: int) -> bytes:
    """Write ``seq`` (16 bits) into the LSB of the first 16 samples (bit i in sample i).

    Little-endian PCM puts each sample's LSB in bit 0 of its even byte, so this touches
    16 bytes and changes no sample by more than 1 (-90 dBFS). The 16 even bytes are handled
    as one 128-bit integer (two table look-ups, no Python loop): about 0.5 us per frame.
    """
    out = bytearray(frame)
    low = int.from_bytes(out[0 : 2 * STAMP_SAMPLES : 2], "little") & _NOT_LSBS
    bits = _SPREAD[seq & 0xFF] | (_SPREAD[(seq >> 8) & 0xFF] << 64)
    out[0 : 2 * STAMP_SAMPLES : 2] = (low | bits).to_bytes(STAMP_SAMPLES, "little")
    return bytes(out)


def read_stamp(frame: bytes) -> int:
    """The 16-bit number :func:`stamp_frame` wrote (garbage for an unstamped frame)."""
    lsbs = int.from_bytes(frame[0 : 2 * STAMP_SAMPLES : 2], "little") & _LSBS
    return _GATHER[lsbs & _LOW64] | (_GATHER[lsbs >> 64] << 8)
