"""The live-path resampler on real signals: pitch, exact counts, chunking, delay, aliasing.

Quality numbers are asserted (they are deterministic); speed is not - that is the benchmark's
job (benchmarks/resampling.py, whose measurement functions these tests reuse).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from benchmarks.resampling import (
    MAX_DELAY_MS,
    MIN_REJECTION_DB,
    measure_delay,
    measure_rejection_db,
    measure_sinad_db,
    ours,
    peak_frequency_hz,
    stream,
    tone,
)
from bridge.audio.resample import Resampler, resample_whole
from bridge.units import SUPPORTED_RATES, frame_samples

PAIRS = [(a, b) for a in SUPPORTED_RATES for b in SUPPORTED_RATES if a != b]
ALL_PAIRS = PAIRS + [(rate, rate) for rate in SUPPORTED_RATES]


def _ids(pairs: list[tuple[int, int]]) -> list[str]:
    return [f"{a // 1000}k-{b // 1000}k" for a, b in pairs]


def floor_length(n: int, in_rate: int, out_rate: int) -> int:
    return n * out_rate // in_rate


def flushed_length(n: int, in_rate: int, out_rate: int) -> int:
    """round(n * out / in) with halves up: the documented total after flush()."""
    return (2 * n * out_rate + in_rate) // (2 * in_rate)


def mixed_signal(rate: int, seconds: float, seed: int) -> NDArray[np.int16]:
    """Noise, a tone, silence and a full-scale square burst (which the filter overshoots, so the
    output has to clip)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    signal = rng.normal(0.0, 4000.0, n) + tone(440.0, rate, n, level=0.3).astype(np.float64)
    signal[n // 3 : n // 3 + rate // 100] = 0.0
    burst = np.arange(n // 2, min(n, n // 2 + rate // 20))
    signal[burst] = np.where(burst % (rate // 400) < rate // 800, 32767.0, -32768.0)
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def feed(resampler: Resampler, samples: NDArray[np.int16], sizes: list[int]) -> NDArray[np.int16]:
    parts = []
    start = 0
    for size in sizes:
        parts.append(resampler.process(samples[start : start + size]))
        start += size
    assert start >= samples.size
    parts.append(resampler.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize(("in_rate", "out_rate"), ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_1khz_tone_stays_at_1khz(in_rate: int, out_rate: int) -> None:
    out, _ = stream(Resampler(in_rate, out_rate).process, tone(1000, in_rate, in_rate), 320)
    window = out[out_rate // 4 : out_rate // 4 + out_rate // 2]  # 0.5 s: 2 Hz bins
    assert peak_frequency_hz(window, out_rate) == pytest.approx(1000.0, abs=1.0)
    # and at the same level (+-0.1 dB; the passband ripple is +-0.065 dB)
    level_in = np.sqrt(np.mean(tone(1000, in_rate, in_rate).astype(np.float64) ** 2))
    level_out = np.sqrt(np.mean(window.astype(np.float64) ** 2))
    assert 20 * np.log10(level_out / level_in) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_passband_reaches_085_of_the_lower_nyquist(in_rate: int, out_rate: int) -> None:
    edge_hz = 0.85 * min(in_rate, out_rate) / 2
    levels = []
    for freq in (1000.0, edge_hz):
        out, _ = stream(Resampler(in_rate, out_rate).process, tone(freq, in_rate, in_rate), 480)
        window = out[out_rate // 4 : out_rate // 4 + out_rate // 2].astype(np.float64)
        levels.append(np.sqrt(np.mean(window**2)))
    assert 20 * np.log10(levels[1] / levels[0]) == pytest.approx(0.0, abs=0.15)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
@pytest.mark.parametrize(
    "n", [0, 1, 2, 3, 5, 159, 160, 161, 319, 320, 321, 479, 480, 481, 1921, 5003, 12345]
)
def test_lengths_are_exact(in_rate: int, out_rate: int, n: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    samples = mixed_signal(in_rate, 1.0 + n / in_rate, seed=n)[:n]
    processed = resampler.process(samples)
    assert processed.dtype == np.int16
    assert processed.size == floor_length(n, in_rate, out_rate)
    tail = resampler.flush()
    assert processed.size + tail.size == flushed_length(n, in_rate, out_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_running_total_is_floor_after_every_chunk(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(7)
    samples = mixed_signal(in_rate, 0.5, seed=1)
    sizes = rng.integers(0, 50, 400).tolist()
    resampler = Resampler(in_rate, out_rate)
    taken = released = 0
    for size in sizes:
        released += resampler.process(samples[taken : taken + size]).size
        taken = min(taken + size, samples.size)
        assert released == floor_length(taken, in_rate, out_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_output_is_bit_identical_however_the_input_is_chunked(in_rate: int, out_rate: int) -> None:
    samples = mixed_signal(in_rate, 0.3, seed=in_rate + out_rate)
    n = samples.size
    whole = feed(Resampler(in_rate, out_rate), samples, [n])
    assert whole.size == flushed_length(n, in_rate, out_rate)
    assert np.abs(whole.astype(np.int32)).max() == 32768  # the burst really clipped

    frame = frame_samples(in_rate)
    by_frame = feed(Resampler(in_rate, out_rate), samples, [frame] * (-(-n // frame)))
    by_sample = feed(Resampler(in_rate, out_rate), samples, [1] * n)
    rng = np.random.default_rng(2024)
    random_sizes = rng.integers(0, 700, 2 * n // 350 + 10).tolist()
    by_random = feed(Resampler(in_rate, out_rate), samples, random_sizes)

    np.testing.assert_array_equal(by_frame, whole)
    np.testing.assert_array_equal(by_sample, whole)
    np.testing.assert_array_equal(by_random, whole)


@pytest.mark.parametrize(("in_rate", "out_rate"), ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_added_delay_is_under_5_ms_and_as_advertised(in_rate: int, out_rate: int) -> None:
    delay = measure_delay(ours(in_rate, out_rate), in_rate, out_rate)
    assert delay.buffering_ms == 0.0  # fed 20 ms frames, nothing is held back
    assert delay.total_ms <= MAX_DELAY_MS
    assert delay.content_ms == pytest.approx(Resampler(in_rate, out_rate).delay_ms, abs=0.01)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_aliases_and_images_are_80_db_down(in_rate: int, out_rate: int) -> None:
    assert measure_rejection_db(ours(in_rate, out_rate), in_rate, out_rate) >= MIN_REJECTION_DB


@pytest.mark.parametrize(("in_rate", "out_rate"), ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_sinad_of_a_passband_tone(in_rate: int, out_rate: int) -> None:
    assert measure_sinad_db(ours(in_rate, out_rate), in_rate, out_rate) >= 84.0


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_same_rate_is_a_passthrough(rate: int) -> None:
    resampler = Resampler(rate, rate)
    samples = mixed_signal(rate, 0.02, seed=3)
    assert resampler.process(samples) is samples
    assert resampler.delay_ms == 0.0
    assert resampler.flush().size == 0
    assert resample_whole(samples, rate, rate) is samples


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(44100, 16000), (16000, 44100), (8000, 11025), (48000, 48000), (0, 8000), (16000, -16000)],
)
def test_unsupported_rates_raise_value_error(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="unsupported resampling"):
        Resampler(in_rate, out_rate)


def test_wrong_sample_type_is_refused() -> None:
    resampler = Resampler(8000, 16000)
    with pytest.raises(TypeError, match="int16"):
        resampler.process(np.zeros(160, dtype=np.float32))
    with pytest.raises(TypeError, match="1-D"):
        resampler.process(np.zeros((160, 1), dtype=np.int16))


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_reset_and_flush_start_a_fresh_stream(in_rate: int, out_rate: int) -> None:
    samples = mixed_signal(in_rate, 0.1, seed=5)
    fresh = Resampler(in_rate, out_rate).process(samples)

    resampler = Resampler(in_rate, out_rate)
    resampler.process(mixed_signal(in_rate, 0.05, seed=6)[:-7])
    resampler.reset()
    np.testing.assert_array_equal(resampler.process(samples), fresh)

    resampler.process(samples[:333])
    resampler.flush()
    np.testing.assert_array_equal(resampler.process(samples), fresh)


def test_two_streams_of_one_pair_do_not_share_state() -> None:
    first, second = Resampler(16000, 8000), Resampler(16000, 8000)
    samples = mixed_signal(16000, 0.1, seed=8)
    expected = Resampler(16000, 8000).process(samples)
    first.process(mixed_signal(16000, 0.1, seed=9))
    np.testing.assert_array_equal(second.process(samples), expected)


@pytest.mark.parametrize(("in_rate", "out_rate"), ALL_PAIRS, ids=_ids(ALL_PAIRS))
@pytest.mark.parametrize("n", [0, 1, 2, 3, 161, 8001])
def test_resample_whole_has_the_flushed_length(in_rate: int, out_rate: int, n: int) -> None:
    samples = mixed_signal(in_rate, 1.0 + n / in_rate, seed=n)[:n]
    converted = resample_whole(samples, in_rate, out_rate)
    assert converted.dtype == np.int16
    assert converted.size == flushed_length(n, in_rate, out_rate)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=_ids(PAIRS))
def test_resample_whole_keeps_a_1khz_tone(in_rate: int, out_rate: int) -> None:
    converted = resample_whole(tone(1000, in_rate, in_rate), in_rate, out_rate)
    assert peak_frequency_hz(converted[: out_rate // 2], out_rate) == pytest.approx(1000.0, abs=1.0)


def test_resample_whole_accepts_file_rates() -> None:
    converted = resample_whole(tone(1000, 44100, 44100), 44100, 16000)
    assert converted.size == 16000
    assert peak_frequency_hz(converted, 16000) == pytest.approx(1000.0, abs=1.0)
