"""Sample-rate conversion for the live audio path and for whole buffers.

Role: every resampling in bridge goes through this module. The live path (one call, one
direction) uses :class:`Resampler`, a stateful polyphase FIR of our own; whole buffers (files,
recordings) use :func:`resample_whole`, which is soxr at its best quality.

Why not soxr on the live path: ``soxr.ResampleStream`` processes in large internal blocks, so
fed 20 ms frames it holds back up to ~113 ms of audio (8k<->16k at HQ; ~37 ms for 16k<->24k)
and releases it in bursts. None of its recipes (QQ..VHQ, linear or minimum phase) both rejects
aliases by 80 dB and stays under a few ms (benchmarks/resampling.py measures them all). A
telephony bridge cannot add that, so the live path's budget per stage is <= 5 ms added delay,
>= 80 dB alias/image rejection and ~10 us of CPU per 20 ms frame.

Import rule: numpy, soxr and ``bridge.units`` only. No asyncio, no websockets, nothing else from
bridge; this is plain synchronous CPU work that any layer may call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
import soxr
from numpy.typing import NDArray

from bridge.units import SUPPORTED_RATES, rates_text

# The passband ends at 0.85 x the lower Nyquist (3.4 kHz for anything touching 8 kHz: the
# telephony band edge) and the stopband starts exactly at the lower Nyquist, so every alias or
# image lands >= 80 dB down. The transition band is what sets the filter length, hence the delay.
_PASSBAND_FRACTION: Final = 0.85
# Design target, 6 dB over the 80 dB requirement: an equiripple stopband puts every image at
# the same level, and upsampling by 3 lands two or three of them in the output band at once
# (measured worst case ~84 dB for the sum).
_DESIGN_ATTENUATION_DB: Final = 86.0
# Passband ripple is allowed to be this many times the stopband ripple: with 86 dB that is
# +-0.065 dB, inaudible, and it buys far shorter filters than equal ripple would.
_STOPBAND_WEIGHT: Final = 150.0
# Coefficients are rounded to multiples of 2**-30 so that every product and partial sum with an
# int16 sample is a multiple of 2**-30 below 2**23 in magnitude: float64 represents all of them
# exactly. The dot products are therefore exact whatever order BLAS sums in, which is what makes
# the output bit-identical however the input is chunked (and lets us use BLAS at all).
_COEF_FRACTION_BITS: Final = 30
# Longer inputs are processed in slices so the float64 scratch buffer stays ~16 KiB per
# instance (hundreds of calls, two directions each). 1920 samples is 80 ms at 24 kHz, so a
# 20 ms frame is always a single slice.
_MAX_SLICE_SAMPLES: Final = 1920
# 0-d arrays rather than Python floats: the ufuncs then skip a conversion on every frame.
_INT16_MIN: Final = np.array(-32768.0)
_INT16_MAX: Final = np.array(32767.0)


def _check_rates(in_rate: int, out_rate: int) -> None:
    if in_rate not in SUPPORTED_RATES or out_rate not in SUPPORTED_RATES:
        raise ValueError(
            f"unsupported resampling {in_rate} Hz -> {out_rate} Hz: both rates must be one of "
            f"{rates_text()} Hz"
        )


def _rounded_length(n_samples: int, in_rate: int, out_rate: int) -> int:
    """n * out / in rounded to nearest, halves up, in integers (no float error on long calls)."""
    return (2 * n_samples * out_rate + in_rate) // (2 * in_rate)


@dataclass(frozen=True)
class _Design:
    """A polyphase filter bank for one rate pair, shared read-only by all its Resamplers.

    The prototype lowpass runs at the common rate in_rate * up == out_rate * down. Output
    sample m sits at time m * down on that grid; it needs inputs up to (m * down) // up and the
    prototype phase (m * down) % up. Outputs come in blocks of ``up`` that advance the input by
    ``down``; column r of ``bank_t`` holds, for output r of a block, its phase reversed and
    placed in a common window of ``window`` inputs (``lookahead`` is how far the last output of
    a block reaches past the first), so one matrix product computes whole blocks.
    """

    up: int
    down: int
    window: int
    lookahead: int
    bank_t: NDArray[np.float64]
    group_delay_ms: float


def _barycentric_weights(nodes: NDArray[np.float64]) -> NDArray[np.float64]:
    # Differences are doubled (the capacity of [-1, 1] is 1/2) so the products of ~100 factors
    # stay near 1 instead of underflowing.
    differences = 2.0 * (nodes[:, None] - nodes[None, :])
    np.fill_diagonal(differences, 1.0)
    weights: NDArray[np.float64] = 1.0 / np.prod(differences, axis=1)
    return weights


def _interpolate(
    x: NDArray[np.float64],
    nodes: NDArray[np.float64],
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:
    differences = x[:, None] - nodes[None, :]
    on_node = differences == 0.0
    differences[on_node] = 1.0
    terms = weights / differences
    result: NDArray[np.float64] = (terms @ values) / terms.sum(axis=1)
    rows, columns = np.nonzero(on_node)
    result[rows] = values[columns]
    return result


def _remez_lowpass(
    n_taps: int, passband_edge: float, stopband_edge: float, stopband_weight: float
) -> tuple[NDArray[np.float64], float]:
    """Equiripple (Parks-McClellan) linear-phase lowpass; edges in cycles per sample.

    Why not a windowed sinc: a Kaiser window forces equal ripple in both bands, so 86 dB of
    stopband also buys a useless 0.0005 dB passband. Letting the passband ripple by +-0.065 dB
    cuts the length, hence delay and cost, by a third: 93 taps instead of 147 at 16 kHz
    (2.9 ms instead of 4.6 ms). scipy is not a dependency, so this is the classic exchange
    algorithm on a dense grid, with barycentric Lagrange interpolation. Returns the taps and
    the stopband ripple (linear) of the converged design.
    """
    half = (n_taps - 1) // 2
    n_extremals = half + 2
    grid_points = 16 * (half + 1)
    pass_w = 2.0 * math.pi * passband_edge
    stop_w = 2.0 * math.pi * stopband_edge
    n_pass = max(2, round(grid_points * pass_w / (pass_w + math.pi - stop_w)))
    n_stop = max(2, grid_points - n_pass)
    omega = np.concatenate((np.linspace(0.0, pass_w, n_pass), np.linspace(stop_w, math.pi, n_stop)))
    desired = np.concatenate((np.ones(n_pass), np.zeros(n_stop)))
    weight = np.concatenate((np.ones(n_pass), np.full(n_stop, stopband_weight)))
    x = np.cos(omega)
    bands = ((0, n_pass), (n_pass, n_pass + n_stop))
    alternation = (-1.0) ** np.arange(n_extremals)

    extremals = np.round(np.linspace(0, omega.size - 1, n_extremals)).astype(np.intp)
    delta = 0.0
    nodes = values = node_weights = np.zeros(0)
    for _ in range(100):
        ext_x = x[extremals]
        b = _barycentric_weights(ext_x)
        delta = float(np.dot(b, desired[extremals]) / np.dot(b, alternation / weight[extremals]))
        ext_values = desired[extremals] - alternation * delta / weight[extremals]
        nodes, values = ext_x[:-1], ext_values[:-1]
        node_weights = _barycentric_weights(nodes)
        error = weight * (desired - _interpolate(x, nodes, values, node_weights))

        # New extremals: per band, the local peaks of the signed error (a peak of |E| next to
        # an opposite-signed sample is still the peak of its lobe), then one per sign run.
        candidates: list[int] = []
        for lo, hi in bands:
            band = error[lo:hi]
            sign = np.where(band >= 0.0, 1.0, -1.0)
            level = band * sign
            left = np.concatenate(([-np.inf], band[:-1] * sign[1:]))
            right = np.concatenate((band[1:] * sign[:-1], [-np.inf]))
            candidates.extend((np.nonzero((level >= left) & (level >= right))[0] + lo).tolist())
        chosen: list[int] = []
        for index in candidates:
            if chosen and (error[index] >= 0.0) == (error[chosen[-1]] >= 0.0):
                if abs(error[index]) > abs(error[chosen[-1]]):
                    chosen[-1] = index
            else:
                chosen.append(index)
        while len(chosen) > n_extremals:  # dropping an end keeps the alternation
            chosen.pop(0 if abs(error[chosen[0]]) < abs(error[chosen[-1]]) else -1)
        if len(chosen) < n_extremals:
            break
        new_extremals = np.array(chosen, dtype=np.intp)
        peak = float(np.abs(error).max())
        converged = peak - abs(delta) <= 1e-6 * peak
        extremals = new_extremals
        if converged:
            break

    # Sample the amplitude response at n_taps uniform frequencies; its inverse DFT is the filter.
    uniform = np.cos(2.0 * math.pi * np.arange(half + 1) / n_taps)
    amplitude = _interpolate(uniform, nodes, values, node_weights)
    spectrum = np.concatenate((amplitude, amplitude[1:][::-1]))
    centre_out = np.real(np.fft.ifft(spectrum))[: half + 1]
    taps = np.concatenate((centre_out[:0:-1], centre_out))
    return taps, abs(delta) / stopband_weight


@cache
def _lowpass(common_rate: int, lower_nyquist: int) -> NDArray[np.float64]:
    """The shortest equiripple design meeting the attenuation target (lengths are odd so the
    delay is a whole number of prototype samples).

    Arguments are the rate ratio in lowest terms, so 8k<->24k and 16k<->24k share one design.
    Cached: the first Resampler of a process pays ~15-30 ms of design, later ones nothing.
    """
    passband = _PASSBAND_FRACTION * lower_nyquist / common_rate
    stopband = lower_nyquist / common_rate
    target = 10.0 ** (-_DESIGN_ATTENUATION_DB / 20.0)
    # Kaiser's length estimate for equiripple designs; usually right or 2 taps short.
    ripple_product = target * target * _STOPBAND_WEIGHT
    estimate = (-10.0 * math.log10(ripple_product) - 13.0) / (14.6 * (stopband - passband))
    first_try = 2 * (int(estimate) // 2) + 1
    for n_taps in range(first_try, 2 * first_try, 2):
        taps, stopband_ripple = _remez_lowpass(n_taps, passband, stopband, _STOPBAND_WEIGHT)
        if stopband_ripple <= target:
            taps.flags.writeable = False
            return taps
    raise AssertionError(f"no lowpass design converged for edges {passband:.4f}/{stopband:.4f}")


@cache
def _design(in_rate: int, out_rate: int) -> _Design:
    common = in_rate * out_rate // math.gcd(in_rate, out_rate)
    up = common // in_rate
    down = common // out_rate
    lower_nyquist = min(in_rate, out_rate) // 2
    reduce = math.gcd(common, lower_nyquist)
    # Gain `up` makes up for the zeros that upsampling stuffs in. No renormalising to unity DC
    # gain: the equiripple passband is already centred on 1 (+-0.065 dB), and DC sits on a
    # ripple peak, so normalising there would skew the whole band by that much.
    prototype = _lowpass(common // reduce, lower_nyquist // reduce) * float(up)
    taps_per_phase = -(-prototype.size // up)
    padded = np.zeros(taps_per_phase * up)
    padded[: prototype.size] = prototype
    scale = float(1 << _COEF_FRACTION_BITS)
    quantized = np.round(padded * scale) / scale

    lookahead = ((up - 1) * down) // up
    window = taps_per_phase + lookahead
    bank = np.zeros((up, window))
    for r in range(up):
        offset = (r * down) // up
        phase = (r * down) % up
        bank[r, offset : offset + taps_per_phase] = quantized[phase::up][::-1]
    # Exactness bound (see _COEF_FRACTION_BITS): worst-case partial sum stays far below 2**53.
    worst = 32768.0 * float(np.abs(bank).sum(axis=1).max()) * scale
    if worst >= 2.0**52:
        raise AssertionError("resampler coefficients too large for exact float64 sums")
    group_delay_ms = 1000.0 * (prototype.size - 1) / 2.0 / common
    # Column stride 1 so numpy's dot hands each (window row, phase column) pair to BLAS ddot.
    bank_t = np.ascontiguousarray(bank[0]) if up == 1 else bank.T
    bank_t.flags.writeable = False  # shared by every Resampler of the pair
    return _Design(up, down, window, lookahead, bank_t, group_delay_ms)


class Resampler:
    """Stateful streaming resampler: one per call per direction.

    Never shared, never reset on a timer. Why stateful: resampling each chunk on its own clicks
    at every boundary, and resetting on a timer drops syllables (docs/lessons.md s.5). The filter
    history therefore lives here for the whole call and is dropped only on an explicit
    ``reset()`` (a ``clear``) or ``flush()``.

    Accounting: after ``process()`` has been given N samples in total, it has returned exactly
    ``floor(N * out_rate / in_rate)`` samples, whatever the chunking, and the samples are
    bit-identical however the input was split. The filter delay shows in the content (output
    sample m carries the input from ``delay_ms`` earlier), not in the count. ``flush()`` then
    brings the total to ``round(N * out_rate / in_rate)`` with halves rounded up, i.e.
    ``(2 * N * out_rate + in_rate) // (2 * in_rate)`` - at most one more sample. The last
    ``delay_ms`` of input is not emitted: a live stream simply ends that much later.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        _check_rates(in_rate, out_rate)
        self.in_rate: int = in_rate
        self.out_rate: int = out_rate
        self._passthrough = in_rate == out_rate
        if self._passthrough:
            return
        design = _design(in_rate, out_rate)
        self._filter = design
        self._up = design.up
        self._down = design.down
        self._bank_t = design.bank_t
        # Room for the history kept between calls, one slice of new input, and a partial block.
        size = _MAX_SLICE_SAMPLES + design.window + 2 * design.down
        self._buffer = np.zeros(size)
        rows = (size - design.window) // design.down + 1
        self._windows = np.lib.stride_tricks.as_strided(
            self._buffer,
            shape=(rows, design.window),
            strides=(design.down * self._buffer.itemsize, self._buffer.itemsize),
            writeable=False,
        )
        self.reset()

    @property
    def delay_ms(self) -> float:
        """Group delay of the linear-phase filter: the whole added delay for 20 ms frames.

        There is no buffering on top: each chunk releases every output whose inputs have
        arrived, which for 20 ms frames (a multiple of every decimation factor here) is all
        ``n * out / in`` of them. Chunks of other sizes may leave the fraction of one output
        sample for the next chunk.
        """
        if self._passthrough:
            return 0.0
        return self._filter.group_delay_ms

    def reset(self) -> None:
        """Forget all history, as if the call had just started."""
        if self._passthrough:
            return
        self._buffer[:] = 0.0
        # Integer sample counters (never floats): inputs taken and outputs returned so far.
        self._inputs_total = 0
        self._outputs_total = 0
        # Buffer position 0 holds input index first_block * down - (window - lookahead - 1);
        # the history before the first sample is the zeros written above.
        self._first_block = 0
        self._filled = self._filter.window - self._filter.lookahead - 1

    def process(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        """Return every output sample whose inputs have now all arrived."""
        if self._passthrough:
            return samples
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError(
                f"Resampler.process expects a 1-D int16 array, got {samples.ndim}-D {samples.dtype}"
            )
        if samples.size <= _MAX_SLICE_SAMPLES:
            return self._process_slice(samples)
        parts = [
            self._process_slice(samples[start : start + _MAX_SLICE_SAMPLES])
            for start in range(0, samples.size, _MAX_SLICE_SAMPLES)
        ]
        return np.concatenate(parts)

    def flush(self) -> NDArray[np.int16]:
        """End of stream: pad with silence just far enough to complete the rounded count."""
        if self._passthrough:
            return np.zeros(0, dtype=np.int16)
        target = _rounded_length(self._inputs_total, self.in_rate, self.out_rate)
        missing = target - self._outputs_total
        tail = np.zeros(0, dtype=np.int16)
        if missing > 0:
            # Enough trailing silence to make `missing` more outputs due (one block spare).
            pad = -(-missing * self._filter.down // self._filter.up)
            tail = self._process_slice(np.zeros(pad + self._filter.down, dtype=np.int16))
            tail = tail[:missing]
        self.reset()
        return tail

    def _process_slice(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        # Hot path (~100 calls per second per stream): locals instead of attribute lookups.
        up = self._up
        down = self._down
        buffer = self._buffer
        n = samples.size
        filled = self._filled
        buffer[filled : filled + n] = samples
        inputs_total = self._inputs_total + n
        self._inputs_total = inputs_total
        due = inputs_total * up // down
        start = self._outputs_total
        self._outputs_total = due
        first_block = self._first_block
        next_block = due // up
        if due > start:
            n_blocks = (due - 1) // up - first_block + 1
            out = np.dot(self._windows[:n_blocks], self._bank_t)
            if up > 1:
                out = out.reshape(-1)
            first_output = first_block * up
            if start != first_output or due != first_output + out.size:
                out = out[start - first_output : due - first_output]
            np.rint(out, out=out)
            np.maximum(out, _INT16_MIN, out=out)
            np.minimum(out, _INT16_MAX, out=out)
            result: NDArray[np.int16] = out.astype(np.int16)
        else:
            result = np.zeros(0, dtype=np.int16)
        # Drop the inputs that no future block needs: blocks before next_block are done.
        shift = (next_block - first_block) * down
        keep = filled + n - shift
        if shift:
            buffer[:keep] = buffer[shift : shift + keep]
        self._filled = keep
        self._first_block = next_block
        return result


def resample_whole(samples: NDArray[np.int16], in_rate: int, out_rate: int) -> NDArray[np.int16]:
    """Resample a complete buffer (a file, a recording) where quality matters more than delay.

    soxr at VHQ has no delay cost here because the whole signal is available; its own length
    rounding is not specified, so the result is trimmed or zero-padded to exactly
    ``round(n * out_rate / in_rate)`` (halves up), the same total a flushed Resampler gives.
    """
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} Hz -> {out_rate} Hz")
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise TypeError(
            f"resample_whole expects a 1-D int16 array, got {samples.ndim}-D {samples.dtype}"
        )
    if in_rate == out_rate:
        return samples
    target = _rounded_length(samples.size, in_rate, out_rate)
    if samples.size == 0:
        return np.zeros(0, dtype=np.int16)
    converted: NDArray[np.int16] = soxr.resample(samples, in_rate, out_rate, quality="VHQ")
    if converted.size >= target:
        return converted[:target]
    return np.concatenate((converted, np.zeros(target - converted.size, dtype=np.int16)))
