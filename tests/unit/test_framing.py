"""Exact 20 ms framing: any way of cutting the input gives the same frames.

Vonage needs exactly one frame per message (docs/protocol.md s.4).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest

from bridge.audio.framing import ByteFramer, SampleFramer
from bridge.audio.pcm import Samples, to_bytes, to_samples, tone

FRAME_BYTES = 640
FRAME_SAMPLES = 320


def _stream_bytes(n: int) -> bytes:
    """A byte stream with no repeating pattern at frame boundaries."""
    return bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8))


def _cuts(total: int, how: str) -> Iterator[tuple[int, int]]:
    """(start, end) pieces of ``range(total)`` cut in one named way."""
    if how == "whole":
        yield 0, total
        return
    rng = random.Random(42)
    start = 0
    while start < total:
        if how == "per frame":
            size = FRAME_BYTES
        elif how == "one by one":
            size = 1
        elif how == "odd":
            size = 333
        elif how == "frame plus one":
            size = FRAME_BYTES + 1
        else:  # random
            size = rng.randint(1, 3 * FRAME_BYTES)
        yield start, min(start + size, total)
        start += size


CUTS = ["whole", "per frame", "one by one", "odd", "frame plus one", "random"]


def _reference_frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


# --- ByteFramer ------------------------------------------------------------------------


@pytest.mark.parametrize("how", CUTS)
@pytest.mark.parametrize("total", [10 * FRAME_BYTES, 10 * FRAME_BYTES + 333])
def test_byte_framer_gives_identical_frames_however_fed(how: str, total: int) -> None:
    data = _stream_bytes(total)
    framer = ByteFramer(FRAME_BYTES)
    frames: list[bytes] = []
    for start, end in _cuts(total, how):
        frames += framer.push(data[start:end])
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert frames == _reference_frames(data, FRAME_BYTES)
    assert framer.pending_bytes == total % FRAME_BYTES
    tail = framer.flush()
    if total % FRAME_BYTES:
        assert tail == data[len(frames) * FRAME_BYTES :] + bytes(FRAME_BYTES - total % FRAME_BYTES)
    else:
        assert tail is None


def test_byte_framer_carries_remainder_across_pushes() -> None:
    framer = ByteFramer(4)
    assert framer.push(b"abc") == []
    assert framer.pending_bytes == 3
    assert framer.push(b"defgh") == [b"abcd", b"efgh"]
    assert framer.pending_bytes == 0
    assert framer.push(b"ijklmn") == [b"ijkl"]
    assert framer.pending_bytes == 2


def test_byte_framer_exact_frame_is_returned_as_is() -> None:
    framer = ByteFramer(FRAME_BYTES)
    frame = _stream_bytes(FRAME_BYTES)
    (out,) = framer.push(frame)
    assert out is frame


def test_byte_framer_exact_frame_after_a_remainder_is_resliced() -> None:
    framer = ByteFramer(4)
    framer.push(b"ab")
    assert framer.push(b"cdef") == [b"abcd"]
    assert framer.flush() == b"ef\x00\x00"


def test_byte_framer_flush_pads_odd_byte_to_full_frame() -> None:
    framer = ByteFramer(FRAME_BYTES)
    framer.push(b"\x01\x02\x03")
    tail = framer.flush()
    assert tail is not None
    assert len(tail) == FRAME_BYTES
    assert tail[:3] == b"\x01\x02\x03"
    assert tail[3:] == bytes(FRAME_BYTES - 3)
    assert framer.flush() is None
    assert framer.pending_bytes == 0


def test_byte_framer_clear_drops_remainder() -> None:
    framer = ByteFramer(4)
    framer.push(b"abc")
    framer.clear()
    assert framer.pending_bytes == 0
    assert framer.flush() is None
    assert framer.push(b"wxyz") == [b"wxyz"]


@pytest.mark.parametrize("size", [0, -2, 3, 641])
def test_byte_framer_rejects_odd_or_empty_frames(size: int) -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        ByteFramer(size)


# --- SampleFramer ----------------------------------------------------------------------


def _signal(n: int) -> Samples:
    return np.random.default_rng(7).integers(-32768, 32768, n).astype(np.int16)


def _sample_cuts(total: int, how: str) -> Iterator[tuple[int, int]]:
    if how == "per frame":
        for start in range(0, total, FRAME_SAMPLES):
            yield start, min(start + FRAME_SAMPLES, total)
    elif how == "odd":
        for start in range(0, total, 101):
            yield start, min(start + 101, total)
    else:
        yield from _cuts(total, how)


@pytest.mark.parametrize("how", ["whole", "per frame", "one by one", "odd", "random"])
@pytest.mark.parametrize("total", [8 * FRAME_SAMPLES, 8 * FRAME_SAMPLES + 77])
def test_sample_framer_gives_identical_frames_however_fed(how: str, total: int) -> None:
    signal = _signal(total)
    framer = SampleFramer(FRAME_SAMPLES)
    frames: list[Samples] = []
    for start, end in _sample_cuts(total, how):
        frames += framer.push(signal[start:end])
    n_full = total // FRAME_SAMPLES
    assert len(frames) == n_full
    for i, frame in enumerate(frames):
        assert frame.dtype == np.int16
        np.testing.assert_array_equal(frame, signal[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
    assert framer.pending_samples == total % FRAME_SAMPLES
    tail = framer.flush()
    if total % FRAME_SAMPLES:
        assert tail is not None
        expected = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        expected[: total % FRAME_SAMPLES] = signal[n_full * FRAME_SAMPLES :]
        np.testing.assert_array_equal(tail, expected)
    else:
        assert tail is None


def test_sample_framer_remainder_is_not_a_view_of_the_callers_array() -> None:
    framer = SampleFramer(4)
    chunk = np.array([1, 2, 3, 4, 5, 6], dtype=np.int16)
    framer.push(chunk)
    chunk[:] = 0  # the caller reuses its buffer
    (frame,) = framer.push(np.array([7, 8], dtype=np.int16))
    np.testing.assert_array_equal(frame, [5, 6, 7, 8])


def test_sample_framer_exact_frame_is_returned_as_is() -> None:
    framer = SampleFramer(FRAME_SAMPLES)
    frame = _signal(FRAME_SAMPLES)
    (out,) = framer.push(frame)
    assert out is frame


def test_sample_framer_clear_and_empty_flush() -> None:
    framer = SampleFramer(4)
    assert framer.flush() is None
    framer.push(np.array([1, 2, 3], dtype=np.int16))
    framer.clear()
    assert framer.pending_samples == 0
    assert framer.flush() is None


def test_sample_framer_rejects_empty_frames() -> None:
    with pytest.raises(ValueError, match="frame_samples"):
        SampleFramer(0)


# --- PCM conversions -------------------------------------------------------------------


def test_pcm_round_trip_is_byte_exact_and_little_endian() -> None:
    data = _stream_bytes(FRAME_BYTES)
    samples = to_samples(data)
    assert samples.dtype == np.dtype("<i2")
    assert len(samples) == FRAME_SAMPLES
    assert to_bytes(samples) == data
    assert to_bytes(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"
    assert to_bytes(np.array([1, -2], dtype=">i2")) == b"\x01\x00\xfe\xff"


def test_pcm_rejects_odd_byte_count() -> None:
    with pytest.raises(ValueError, match="even"):
        to_samples(b"\x00\x01\x02")


def test_tone_is_phase_continuous_in_pieces() -> None:
    def make(start: int, n: int) -> Samples:
        return tone(1000, 16000, n, start_sample=start)

    whole = make(0, 1000)
    pieces = np.concatenate([make(0, 333), make(333, 333), make(666, 334)])
    np.testing.assert_array_equal(whole, pieces)
    assert int(np.abs(whole).max()) == 8000
