"""Live-path resampling benchmark: bridge's streaming FIR against soxr's streaming recipes.

Run ``python -m benchmarks.resampling [--quick]``. It prints a Markdown table and writes
``benchmarks/results/resampling.json``. Every implementation is fed the way a call feeds it:
20 ms frames, one stateful stream per measurement.

The measurement functions are plain and deterministic (no timing except ``cost_us_per_frame``)
so that ``tests/unit/test_resample.py`` asserts quality with the very same code. Import rule:
numpy, soxr and ``bridge.audio.resample`` only.

Definitions, per rate pair and implementation:
- delay: content delay (passband group delay, from the phase slope of a click's response)
  plus buffering (the most output, in ms, that a stream has held back after any frame, relative
  to ``floor(n_in * out / in)``). soxr aligns its content (delay ~0) but buffers; a FIR delays
  its content and buffers nothing. Both are added latency.
- alias rejection: for tones across the band that must be removed (between the two Nyquist
  frequencies when downsampling, the input band when upsampling), the power landing on their
  alias/image frequencies, relative to the output power of a 1 kHz tone of the same level.
  The worst tone counts. Tones sit on exact FFT bins (coherent sampling), so no window leaks.
- SINAD: a 997 Hz tone at 0.9 full scale; a least-squares sine fit at the known frequency
  (IEEE 1241 three-parameter fit) is the ideal resampled tone, aligned in amplitude and phase
  (for a linear-phase FIR that phase is the measured delay), and everything else (noise,
  distortion, aliases, images, rounding at both int16 ends) is the error. Two int16
  roundings cap it near 95 dB; soxr also dithers its int16 output (+-1 LSB).
- cost: perf_counter around each 20 ms frame of noise. soxr works in bursts (most frames only
  queue input), so the median understates it: the mean (less the slowest 1% of frames, which
  are scheduler noise) is reported too and is what the verdict uses.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from numpy.typing import NDArray

from bridge.audio.resample import Resampler
from bridge.units import SUPPORTED_RATES, frame_samples

StreamFn = Callable[[NDArray[np.int16]], NDArray[np.int16]]
"""One stateful stream: takes the next chunk, returns whatever output is ready."""
StreamFactory = Callable[[], StreamFn]

MAX_DELAY_MS = 5.0
MIN_REJECTION_DB = 80.0
MAX_COST_US = 10.0
FULL_SCALE = 32767.0
TONE_LEVEL = 0.9
REFERENCE_HZ = 1000
# SINAD tone: 997 Hz is not a sub-multiple of any rate, so int16 rounding error spreads like
# noise instead of folding back onto the tone (1 kHz at 8 kHz repeats every 8 samples).
SINAD_HZ = 997.0
# Coherent analysis: 0.5 s windows put every even-Hz tone on an exact bin at every rate here.
ANALYSIS_S = 0.5
# Skipped before analysing; longer than any soxr hold-back and any FIR's settling.
SETTLE_S = 0.25
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "resampling.json"

PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in SUPPORTED_RATES for b in SUPPORTED_RATES if a != b
)


def tone(freq_hz: float, rate: int, n_samples: int, level: float = TONE_LEVEL) -> NDArray[np.int16]:
    """A sine at ``level`` x full scale, rounded to int16; phase 0 at sample 0."""
    t = np.arange(n_samples) / rate
    return np.round(level * FULL_SCALE * np.sin(2.0 * math.pi * freq_hz * t)).astype(np.int16)


def stream(
    process: StreamFn, samples: NDArray[np.int16], chunk: int
) -> tuple[NDArray[np.int16], NDArray[np.int64]]:
    """Feed ``samples`` in chunks; return the joined output and the output total after each."""
    outputs: list[NDArray[np.int16]] = []
    totals: list[int] = []
    total = 0
    for start in range(0, samples.size, chunk):
        out = process(samples[start : start + chunk])
        outputs.append(out)
        total += out.size
        totals.append(total)
    joined = np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.int16)
    return joined, np.array(totals, dtype=np.int64)


def stream_frames(
    factory: StreamFactory, samples: NDArray[np.int16], in_rate: int
) -> tuple[NDArray[np.int16], NDArray[np.int64]]:
    return stream(factory(), samples, frame_samples(in_rate))


def ours(in_rate: int, out_rate: int) -> StreamFactory:
    return lambda: Resampler(in_rate, out_rate).process


def soxr_stream(in_rate: int, out_rate: int, quality: str) -> StreamFactory:
    def make() -> StreamFn:
        resampler = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

        def process(samples: NDArray[np.int16]) -> NDArray[np.int16]:
            out: NDArray[np.int16] = resampler.resample_chunk(samples)
            return out

        return process

    return make


# libsoxr's SOXR_MINIMUM_PHASE recipe flag. The Python binding only maps QQ..VHQ, but its
# extension passes the recipe integer straight to soxr_quality_spec, so we can try it.
_SOXR_MINIMUM_PHASE = 0x30


def soxr_minimum_phase(in_rate: int, out_rate: int) -> StreamFactory | None:
    """soxr HQ with minimum phase through the binding's private extension (None if absent)."""
    ext = getattr(soxr, "soxr_ext", None)
    if ext is None or not hasattr(ext, "CSoxr"):
        return None

    def make() -> StreamFn:
        flags = int(ext.HQ) | _SOXR_MINIMUM_PHASE
        csoxr = ext.CSoxr(float(in_rate), float(out_rate), 1, ext.SOXR_INT16_I, flags, False)

        def process(samples: NDArray[np.int16]) -> NDArray[np.int16]:
            out: NDArray[np.int16] = csoxr.process_int16(samples[:, np.newaxis], False)[:, 0]
            return out

        return process

    return make


@dataclass(frozen=True)
class Delay:
    content_ms: float
    buffering_ms: float

    @property
    def total_ms(self) -> float:
        return self.content_ms + self.buffering_ms


def measure_delay(factory: StreamFactory, in_rate: int, out_rate: int) -> Delay:
    """Added delay of a stream fed 20 ms frames: content delay plus worst buffering."""
    # A 3-sample click (1/2, 1, 1/2) rather than one sample: a decimator that merely picks
    # samples (soxr QQ) would lose a lone sample. Its spectrum, 1 + cos(2 pi f / in_rate), is
    # real and positive below the input Nyquist once its centre is rotated out: no phase added.
    impulse_at = int(0.3 * in_rate) + 7  # off the frame grid on purpose
    samples = np.zeros(int(0.8 * in_rate), dtype=np.int16)
    samples[impulse_at - 1 : impulse_at + 2] = (8192, 16384, 8192)
    out, totals = stream_frames(factory, samples, in_rate)

    # Buffering: compare what each frame released with what the input so far allows.
    frame = frame_samples(in_rate)
    inputs = np.minimum(np.arange(1, totals.size + 1) * frame, samples.size)
    due = inputs * out_rate // in_rate
    buffering_ms = 1000.0 * max(0, int((due - totals).max())) / out_rate

    # Content delay: remove the impulse's own position from the response's phase and fit the
    # remaining slope over the passband (0.8 x the lower Nyquist), which is -2 pi f delay.
    size = 1 << max(16, math.ceil(math.log2(max(out.size, 1))) + 2)
    spectrum = np.fft.rfft(out.astype(np.float64), size)
    freqs = np.fft.rfftfreq(size, 1.0 / out_rate)
    band = freqs <= 0.8 * min(in_rate, out_rate) / 2.0
    rotated = spectrum[band] * np.exp(2j * math.pi * freqs[band] * impulse_at / in_rate)
    phase = np.unwrap(np.angle(rotated))
    slope = float(np.polyfit(freqs[band], phase, 1)[0])
    content_ms = -1000.0 * slope / (2.0 * math.pi)
    return Delay(content_ms, buffering_ms)


def _bin_power(spectrum: NDArray[np.complex128], freq_hz: float) -> float:
    index = round(freq_hz * ANALYSIS_S)
    return float(np.abs(spectrum[index]) ** 2)


def _analysed(
    factory: StreamFactory, freq_hz: float, in_rate: int, out_rate: int
) -> NDArray[np.complex128]:
    """Spectrum of one coherent analysis window of the streamed output for a tone."""
    n_in = int((SETTLE_S + ANALYSIS_S + SETTLE_S) * in_rate)
    out, _ = stream_frames(factory, tone(freq_hz, in_rate, n_in), in_rate)
    start = int(SETTLE_S * out_rate)
    window = out[start : start + int(ANALYSIS_S * out_rate)].astype(np.float64)
    if window.size < int(ANALYSIS_S * out_rate):
        raise ValueError("stream released too little output to analyse")
    spectrum: NDArray[np.complex128] = np.fft.rfft(window)
    return spectrum


def _fold(freq_hz: float, rate: int) -> float:
    folded = freq_hz % rate
    return rate - folded if folded > rate / 2 else folded


def unwanted_frequencies(freq_hz: float, in_rate: int, out_rate: int) -> list[float]:
    """Where an input tone's images and aliases land in the output band, minus the tone."""
    nyquist = min(in_rate, out_rate) / 2.0
    wanted = freq_hz if freq_hz < nyquist else None
    found: set[float] = set()
    for k in range(0, out_rate // in_rate + 2):
        for component in (k * in_rate + freq_hz, k * in_rate - freq_hz):
            folded = _fold(abs(component), out_rate)
            if wanted is None or abs(folded - wanted) > 1e-9:
                found.add(folded)
    return sorted(found)


def rejection_tones(in_rate: int, out_rate: int, count: int) -> list[int]:
    """Tones that the resampler must remove (or whose images it must remove), on even Hz.

    Dense next to the stopband edge, where a lowpass is weakest, then spread evenly.
    """
    low_nyquist = min(in_rate, out_rate) // 2
    if out_rate < in_rate:  # decimating: everything between the two Nyquists must go
        lo, hi = low_nyquist + 2, in_rate // 2 - 2
    else:  # interpolating: images of the whole input band must go
        lo, hi = 2, low_nyquist - 2
    edge = [low_nyquist + 2, low_nyquist + 20, low_nyquist + 100]
    if out_rate > in_rate:
        edge = [low_nyquist - 2, low_nyquist - 20, low_nyquist - 100]
    spread = np.linspace(lo, hi, count).tolist()
    return sorted({2 * round(f / 2) for f in edge + spread})


def measure_rejection_db(
    factory: StreamFactory, in_rate: int, out_rate: int, n_tones: int = 24
) -> float:
    """Worst alias/image rejection in dB (see the module docstring)."""
    reference = _bin_power(_analysed(factory, REFERENCE_HZ, in_rate, out_rate), REFERENCE_HZ)
    worst = 0.0
    for freq in rejection_tones(in_rate, out_rate, n_tones):
        spectrum = _analysed(factory, freq, in_rate, out_rate)
        power = sum(_bin_power(spectrum, f) for f in unwanted_frequencies(freq, in_rate, out_rate))
        worst = max(worst, power)
    return 10.0 * math.log10(reference / max(worst, 1e-30))


def sine_fit_sinad_db(samples: NDArray[np.float64], freq_hz: float, rate: int) -> float:
    """SINAD of ``samples`` against the best-fitting sine at ``freq_hz`` (plus DC)."""
    t = np.arange(samples.size) / rate
    basis = np.column_stack(
        (np.sin(2 * math.pi * freq_hz * t), np.cos(2 * math.pi * freq_hz * t), np.ones_like(t))
    )
    coefficients = np.linalg.lstsq(basis, samples, rcond=None)[0]
    fitted = basis[:, :2] @ coefficients[:2]
    residual = samples - basis @ coefficients
    return 10.0 * math.log10(float(np.mean(fitted**2)) / max(float(np.mean(residual**2)), 1e-30))


def measure_sinad_db(
    factory: StreamFactory, in_rate: int, out_rate: int, freq_hz: float = SINAD_HZ
) -> float:
    n_in = int((SETTLE_S + ANALYSIS_S + SETTLE_S) * in_rate)
    out, _ = stream_frames(factory, tone(freq_hz, in_rate, n_in), in_rate)
    start = int(SETTLE_S * out_rate)
    window = out[start : start + int(ANALYSIS_S * out_rate)].astype(np.float64)
    return sine_fit_sinad_db(window, freq_hz, out_rate)


def peak_frequency_hz(samples: NDArray[np.int16], rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window, DC ignored)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * rate / samples.size


@dataclass(frozen=True)
class Cost:
    median_us: float
    mean_us: float


def cost_us_per_frame(factory: StreamFactory, in_rate: int, n_frames: int) -> Cost:
    """Time per 20 ms frame of speech-level noise, after a warm-up."""
    frame = frame_samples(in_rate)
    rng = np.random.default_rng(20)
    noise = np.clip(rng.normal(0.0, 3000.0, frame * 64), -32768, 32767).astype(np.int16)
    frames = [noise[i * frame : (i + 1) * frame] for i in range(64)]
    process = factory()
    for i in range(100):
        process(frames[i % 64])
    timings = np.empty(n_frames)
    clock = time.perf_counter
    for i in range(n_frames):
        chunk = frames[i % 64]
        started = clock()
        process(chunk)
        timings[i] = clock() - started
    # The mean drops the slowest 1% of frames: on a shared 2-core machine those are the
    # scheduler's, not the resampler's (soxr's bursts come every 2-8 frames, so they stay).
    kept = np.sort(timings)[: max(1, n_frames * 99 // 100)]
    return Cost(float(np.median(timings)) * 1e6, float(np.mean(kept)) * 1e6)


@dataclass(frozen=True)
class Row:
    pair: str
    implementation: str
    delay_ms: float
    content_delay_ms: float
    buffering_ms: float
    alias_rejection_db: float | None
    sinad_db: float
    median_us_per_frame: float
    mean_us_per_frame: float
    failed: tuple[str, ...]  # which targets were missed: "delay", "alias", "cost"

    @property
    def verdict(self) -> str:
        return "PASS" if not self.failed else "fail: " + ", ".join(self.failed)


def implementations(in_rate: int, out_rate: int) -> list[tuple[str, StreamFactory]]:
    if in_rate == out_rate:
        return [("bridge passthrough", ours(in_rate, out_rate))]
    found: list[tuple[str, StreamFactory]] = [("bridge FIR", ours(in_rate, out_rate))]
    for quality in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
        found.append((f"soxr {quality}", soxr_stream(in_rate, out_rate, quality)))
    minimum = soxr_minimum_phase(in_rate, out_rate)
    if minimum is not None:
        found.append(("soxr HQ min-phase*", minimum))
    return found


def measure(name: str, factory: StreamFactory, in_rate: int, out_rate: int, quick: bool) -> Row:
    delay = measure_delay(factory, in_rate, out_rate)
    rejection = (
        None
        if in_rate == out_rate
        else measure_rejection_db(factory, in_rate, out_rate, 6 if quick else 40)
    )
    sinad = measure_sinad_db(factory, in_rate, out_rate)
    cost = cost_us_per_frame(factory, in_rate, 2000 if quick else 10000)
    failed = tuple(
        target
        for target, missed in (
            ("delay", delay.total_ms > MAX_DELAY_MS),
            ("alias", rejection is not None and rejection < MIN_REJECTION_DB),
            ("cost", cost.mean_us > MAX_COST_US),
        )
        if missed
    )
    return Row(
        pair=f"{in_rate // 1000}k->{out_rate // 1000}k",
        implementation=name,
        delay_ms=round(delay.total_ms, 3),
        content_delay_ms=round(delay.content_ms, 3),
        buffering_ms=round(delay.buffering_ms, 3),
        alias_rejection_db=None if rejection is None else round(rejection, 1),
        sinad_db=round(sinad, 1),
        median_us_per_frame=round(cost.median_us, 2),
        mean_us_per_frame=round(cost.mean_us, 2),
        failed=failed,
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| pair | implementation | delay ms (content + buffer) | alias rej. dB | SINAD dB "
        "| us/frame median | us/frame mean | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rejection = "n/a" if row.alias_rejection_db is None else f"{row.alias_rejection_db:.1f}"
        lines.append(
            f"| {row.pair} | {row.implementation} | {row.delay_ms:.2f} "
            f"({row.content_delay_ms:.2f} + {row.buffering_ms:.2f}) | {rejection} "
            f"| {row.sinad_db:.1f} | {row.median_us_per_frame:.1f} | {row.mean_us_per_frame:.1f} "
            f"| {row.verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer tones and frames (seconds)")
    args = parser.parse_args(argv)
    quick: bool = args.quick

    pairs = [*PAIRS, *((rate, rate) for rate in SUPPORTED_RATES)]
    rows = [
        measure(name, factory, in_rate, out_rate, quick)
        for in_rate, out_rate in pairs
        for name, factory in implementations(in_rate, out_rate)
    ]
    print(markdown(rows))
    print(
        f"\nTargets: delay <= {MAX_DELAY_MS} ms, rejection >= {MIN_REJECTION_DB} dB, "
        f"mean cost <= {MAX_COST_US} us per 20 ms frame. * private soxr_ext recipe flag."
    )
    report: dict[str, Any] = {
        "quick": quick,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "soxr": soxr.__version__,
        },
        "targets": {
            "max_delay_ms": MAX_DELAY_MS,
            "min_alias_rejection_db": MIN_REJECTION_DB,
            "max_us_per_frame": MAX_COST_US,
        },
        "rows": [{**asdict(row), "verdict": row.verdict} for row in rows],
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
