"""WAV files: read any PCM WAV as mono int16, write 16-bit PCM that is valid while it grows.

The writer rewrites the RIFF and data sizes in the header after each second of audio, so a
process that dies mid-call still leaves a playable file holding everything up to the last
second (docs/lessons.md s.8: never keep a whole call in memory).

Import rule: numpy, the standard library and ``bridge.audio.pcm`` only.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bridge.audio.pcm import PCM_DTYPE, Samples

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
HEADER_BYTES = _HEADER.size


def read_wav(path: str | Path) -> tuple[Samples, int]:
    """Samples (int16 mono: channels averaged) and the file's sample rate.

    8-, 16-, 24- and 32-bit integer PCM are accepted, plain or WAVE_FORMAT_EXTENSIBLE (what
    sox and most editors write above 16 bits; the stdlib ``wave`` module rejects it before
    Python 3.12); anything else raises ``ValueError`` with the reason, because a silent
    misread would play noise into a call.
    """
    width, channels, rate, raw = _read_pcm(path)
    # A truncated file (its writer died mid-frame) can end in a partial frame: drop it.
    raw = raw[: len(raw) - len(raw) % (width * channels)]
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype=PCM_DTYPE).astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16
    else:
        data = np.frombuffer(raw, dtype="<i4").astype(np.int64) >> 16
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return np.clip(np.rint(data), -32768, 32767).astype(np.int16), rate


_FORMAT_PCM = 0x0001
_FORMAT_EXTENSIBLE = 0xFFFE


def _read_pcm(path: str | Path) -> tuple[int, int, int, bytes]:
    """(sample width in bytes, channels, rate, raw frames) of an integer PCM WAV file."""
    blob = Path(path).read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a PCM WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        size = int.from_bytes(blob[pos + 4 : pos + 8], "little")
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(path, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: not a PCM WAV file (data chunk before fmt chunk)")
            # A data size past the end (a writer that died) reads what is there.
            return (*fmt, body)
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    missing = "data" if fmt is not None else "fmt"
    raise ValueError(f"{path}: not a PCM WAV file (no {missing} chunk)")


def _parse_fmt(path: str | Path, body: bytes) -> tuple[int, int, int]:
    if len(body) < 16:
        raise ValueError(f"{path}: not a PCM WAV file (fmt chunk of {len(body)} bytes)")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID's first field
    if tag != _FORMAT_PCM:
        raise ValueError(f"{path}: unsupported WAV format {tag:#06x} (integer PCM only)")
    width = (bits + 7) // 8
    if not 1 <= width <= 4:
        raise ValueError(f"{path}: unsupported sample width {width} bytes")
    if channels < 1 or rate < 1:
        raise ValueError(f"{path}: bad WAV header ({channels} channels, {rate} Hz)")
    return width, channels, rate


def write_wav(path: str | Path, samples: Samples, sample_rate: int) -> None:
    """Write a whole mono (1-D) or multi-channel (2-D, frames x channels) int16 array."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with WavWriter(path, sample_rate, channels) as writer:
        writer.write(samples)


class WavWriter:
    """Streams 16-bit PCM to disk, keeping the header valid as the file grows."""

    def __init__(
        self, path: str | Path, sample_rate: int, channels: int = 1, header_every_s: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self._data_bytes = 0
        self._header_every = max(1, int(sample_rate * header_every_s))
        self._since_header = 0
        self._file: BinaryIO = self.path.open("wb")
        try:
            self._file.write(self._header())
            self._file.flush()  # a valid (empty) WAV from the start
        except BaseException:
            self._file.close()
            raise

    def write(self, samples: Samples) -> None:
        """Append frames (1-D for mono, frames x channels for more)."""
        data = samples.astype(PCM_DTYPE, copy=False)
        if data.ndim == 2 and data.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {data.shape[1]}")
        if data.ndim == 1 and self.channels != 1 and len(data) % self.channels:
            raise ValueError("interleaved data must hold whole frames")
        raw = np.ascontiguousarray(data).data.cast("B")  # no copy
        self._file.write(raw)
        self._data_bytes += raw.nbytes
        n_frames = raw.nbytes // (2 * self.channels)
        self.frames_written += n_frames
        self._since_header += n_frames
        if self._since_header >= self._header_every:
            self._since_header = 0
            self._write_header()

    @property
    def duration_s(self) -> float:
        return self.frames_written / self.sample_rate

    def close(self) -> None:
        """Finish the header and close the file (closed even when the header write fails)."""
        if self._file.closed:
            return
        try:
            self._write_header()
        finally:
            self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_header(self) -> None:
        """Data first, then the header that covers it (so it never claims what is not there):
        one ``pwrite`` at offset 0, the append position untouched."""
        self._file.flush()
        os.pwrite(self._file.fileno(), self._header(), 0)

    def _header(self) -> bytes:
        return wav_header(self.sample_rate, self.channels, self._data_bytes)


def wav_header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV whose data is ``data_bytes`` long."""
    block_align = 2 * channels
    return _HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        16,
        b"data",
        data_bytes,
    )
