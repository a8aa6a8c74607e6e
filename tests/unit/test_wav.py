"""WAV I/O: exact round trips, other widths read as int16 mono, a header valid while growing."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.pcm import Samples, tone
from bridge.audio.wav import WavWriter, read_wav, write_wav
from tests.helpers import require_command

RATE = 16000


def _noise(n: int, seed: int = 5) -> Samples:
    return np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)


def _write_with_stdlib(path: Path, raw: bytes, width: int, channels: int, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def _stdlib_frames(path: Path) -> tuple[int, int, int]:
    """(frames, channels, rate) as the stdlib ``wave`` module sees the file."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes(), w.getnchannels(), w.getframerate()


# --- round trips and other formats ---------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100])
def test_write_then_read_is_exact(tmp_path: Path, rate: int) -> None:
    samples = _noise(rate // 3)
    path = tmp_path / "a.wav"
    write_wav(path, samples, rate)
    back, back_rate = read_wav(path)
    assert back_rate == rate
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, samples)
    assert _stdlib_frames(path) == (len(samples), 1, rate)


def test_empty_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_wav(path, np.zeros(0, dtype=np.int16), 8000)
    back, rate = read_wav(path)
    assert rate == 8000
    assert len(back) == 0


def test_8_bit_unsigned_reads_as_int16(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    _write_with_stdlib(path, bytes([0, 64, 128, 192, 255]), 1, 1, 8000)
    back, rate = read_wav(path)
    assert rate == 8000
    np.testing.assert_array_equal(back, [-32768, -16384, 0, 16384, 32512])


def test_24_bit_reads_as_its_top_16_bits(tmp_path: Path) -> None:
    expected = _noise(1000)
    low = np.random.default_rng(9).integers(0, 256, 1000, dtype=np.uint8)
    hi = expected.astype("<i2").view(np.uint8).reshape(-1, 2)
    raw = np.column_stack([low, hi[:, 0], hi[:, 1]]).astype(np.uint8).tobytes()
    path = tmp_path / "s24.wav"
    _write_with_stdlib(path, raw, 3, 1, RATE)
    back, rate = read_wav(path)
    assert rate == RATE
    np.testing.assert_array_equal(back, expected)


def test_32_bit_reads_as_its_top_16_bits(tmp_path: Path) -> None:
    expected = _noise(1000)
    low = np.random.default_rng(9).integers(0, 65536, 1000).astype(np.int64)
    raw = ((expected.astype(np.int64) << 16) | low).astype("<i4").tobytes()
    path = tmp_path / "s32.wav"
    _write_with_stdlib(path, raw, 4, 1, RATE)
    back, _ = read_wav(path)
    np.testing.assert_array_equal(back, expected)


def test_stereo_reads_as_the_mean_of_the_channels(tmp_path: Path) -> None:
    left = np.array([100, -100, 32767, -32768, 1, 0], dtype=np.int16)
    right = np.array([300, -300, 32767, -32768, 2, 0], dtype=np.int16)
    path = tmp_path / "stereo.wav"
    _write_with_stdlib(path, np.column_stack([left, right]).astype("<i2").tobytes(), 2, 2, 8000)
    back, rate = read_wav(path)
    assert rate == 8000
    np.testing.assert_array_equal(back, [200, -200, 32767, -32768, 2, 0])  # 1.5 rounds to even


def _extensible_wav(bits: int, channels: int, rate: int, raw: bytes) -> bytes:
    """WAVE_FORMAT_EXTENSIBLE, as sox and most editors write 24- and 32-bit files."""
    width = bits // 8
    block = width * channels
    pcm_guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 4)
    fmt += pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(raw)) + raw
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_extensible_24_bit_is_read(tmp_path: Path) -> None:
    expected = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    hi = expected.astype("<i2").view(np.uint8).reshape(-1, 2)
    raw = np.column_stack([np.zeros(5, np.uint8), hi[:, 0], hi[:, 1]]).astype(np.uint8).tobytes()
    path = tmp_path / "ext24.wav"
    path.write_bytes(_extensible_wav(24, 1, 24000, raw))
    back, rate = read_wav(path)
    assert rate == 24000
    np.testing.assert_array_equal(back, expected)


def test_truncated_file_reads_whole_frames(tmp_path: Path) -> None:
    samples = _noise(100)
    path = tmp_path / "cut.wav"
    write_wav(path, samples, 8000)
    path.write_bytes(path.read_bytes()[:-3])  # the writer died mid-sample
    back, _ = read_wav(path)
    np.testing.assert_array_equal(back, samples[:98])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "RIFF"),
        (b"hello world, not a wav file", "RIFF"),
        (b"RIFF\x04\x00\x00\x00WAVE", "fmt"),
    ],
)
def test_non_wav_raises_value_error_naming_the_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "not-audio.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as info:
        read_wav(path)
    assert str(path) in str(info.value)


def test_float_wav_is_refused_with_the_file_name(tmp_path: Path) -> None:
    raw = np.zeros(10, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 40) + raw
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match="format") as info:
        read_wav(path)
    assert str(path) in str(info.value)


# --- the streaming writer ------------------------------------------------------------------


@pytest.mark.parametrize("chunk_s", [0.02, 0.3, 2.5])
def test_header_is_valid_while_the_file_grows(tmp_path: Path, chunk_s: float) -> None:
    rate = 8000
    path = tmp_path / "growing.wav"
    signal = tone(440, rate, int(2.5 * rate))
    writer = WavWriter(path, rate, header_every_s=1)
    step = int(chunk_s * rate)
    for start in range(0, len(signal), step):
        writer.write(signal[start : start + step])
    assert writer.duration_s == 2.5
    # The process could die now: what is on disk must already be a playable file.
    snapshot = tmp_path / "snapshot.wav"
    shutil.copyfile(path, snapshot)
    frames, channels, snap_rate = _stdlib_frames(snapshot)
    assert (channels, snap_rate) == (1, rate)
    assert frames >= 2 * rate
    partial, _ = read_wav(snapshot)
    np.testing.assert_array_equal(partial, signal[: len(partial)])
    writer.close()
    assert _stdlib_frames(path) == (int(2.5 * rate), 1, rate)
    whole, _ = read_wav(path)
    np.testing.assert_array_equal(whole, signal)
    writer.close()  # a second close is harmless


def test_header_of_a_new_file_says_empty(tmp_path: Path) -> None:
    path = tmp_path / "new.wav"
    with WavWriter(path, 16000) as writer:
        shutil.copyfile(path, tmp_path / "copy.wav")
        assert writer.frames_written == 0
    assert _stdlib_frames(tmp_path / "copy.wav") == (0, 1, 16000)


def test_stereo_writing(tmp_path: Path) -> None:
    left = _noise(800, seed=1)
    right = _noise(800, seed=2)
    path = tmp_path / "stereo.wav"
    with WavWriter(path, 8000, channels=2) as writer:
        writer.write(np.column_stack([left, right])[:300])
        writer.write(np.column_stack([left, right])[300:].reshape(-1))  # interleaved 1-D
        assert writer.frames_written == 800
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getnframes(), w.getsampwidth()) == (2, 800, 2)
        raw = np.frombuffer(w.readframes(800), dtype="<i2").reshape(-1, 2)
    np.testing.assert_array_equal(raw[:, 0], left)
    np.testing.assert_array_equal(raw[:, 1], right)
    back, _ = read_wav(path)
    mean = np.rint((left.astype(np.float64) + right) / 2).astype(np.int16)
    np.testing.assert_array_equal(back, mean)


def test_write_wav_of_a_2d_array_is_multichannel(tmp_path: Path) -> None:
    both = np.column_stack([_noise(10, 1), _noise(10, 2)])
    path = tmp_path / "two.wav"
    write_wav(path, both, 8000)
    assert _stdlib_frames(path) == (10, 2, 8000)


def test_writer_refuses_the_wrong_channel_count(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "x.wav", 8000, channels=2) as writer:
        with pytest.raises(ValueError, match="channels"):
            writer.write(np.zeros((4, 3), dtype=np.int16))
        with pytest.raises(ValueError, match="whole frames"):
            writer.write(np.zeros(3, dtype=np.int16))


def test_sox_agrees_on_duration(tmp_path: Path) -> None:
    sox = require_command("sox")
    path = tmp_path / "sox.wav"
    with WavWriter(path, 16000, header_every_s=1) as writer:
        for _ in range(125):  # 2.5 s in 20 ms frames
            writer.write(tone(1000, 16000, 320))
    out = subprocess.run(
        [sox, "--i", "-D", str(path)], capture_output=True, text=True, check=True, timeout=30
    )
    assert float(out.stdout) == pytest.approx(2.5, abs=1e-6)


def test_files_written_by_sox_are_read(tmp_path: Path) -> None:
    sox = require_command("sox")
    for bits, channels in [(8, 1), (16, 2), (24, 1), (32, 1)]:
        path = tmp_path / f"sox-{bits}-{channels}.wav"
        encoding = ["-e", "unsigned-integer"] if bits == 8 else ["-e", "signed-integer"]
        subprocess.run(
            [
                sox,
                "-n",
                "-r",
                "8000",
                "-b",
                str(bits),
                *encoding,
                "-c",
                str(channels),
                str(path),
                "synth",
                "0.5",
                "sine",
                "1000",
                "vol",
                "0.5",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        samples, rate = read_wav(path)
        assert rate == 8000
        assert len(samples) == 4000
        # a 1 kHz tone at half scale, whatever the width
        assert int(np.abs(samples).max()) == pytest.approx(16384, rel=0.03)
