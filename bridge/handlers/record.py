"""Record: one stereo WAV per call, streamed to disk while the call runs (any mode).

Left is what the caller sent, exactly (every inbound frame, in order, at the call's rate);
right is what bridge sent into the call, exactly. Both sit on one timeline of 20 ms rows:
row ``k`` covers ``[start + 20k, start + 20k + 20) ms`` of the call. Inbound frame ``i`` is
row ``i`` (Vonage sends frames back to back, so their count is the caller's clock, not their
arrival time); an outbound frame goes to its slot on the send schedule (``bridge.pacing``),
which is when Vonage plays it. A row is written once both sides are settled: ``HOLD_ROWS``
behind the newest inbound frame, or ``FORCE_ROWS`` behind the newest outbound one when the
caller's audio stalls (the caller's next frames then continue after the written rows). At the
end the file is padded with silence to the call's full length.

Rows are interleaved and written in blocks of ``BLOCK_ROWS`` (200 ms): per frame the taps
only keep the frame. The writes themselves (the block, then the header rewritten to cover
it) are done by the process's file writer (``bridge.filewriter``, a process of its own),
never on the event loop, so a slow disk delays the file, not the calls. Memory stays flat:
at most ``FORCE_ROWS`` plus a block of frames per side are held here, and what waits for the
writer is bounded (a recording whose writes cannot be queued fails, logged, and the call
goes on unrecorded). A crash mid-call leaves a playable file holding everything up to the
last block handed over: at most ``HOLD_ROWS + BLOCK_ROWS`` rows (0.4 s) short of the crash
(the writer outlives the server long enough to write what it was given).

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.units``, ``bridge.handlers.calllog``,
``bridge.filewriter``, standard library.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np

from bridge.audio.pcm import PCM_DTYPE
from bridge.audio.wav import wav_header
from bridge.call import Call, Handler
from bridge.filewriter import file_writer
from bridge.handlers.calllog import reserve_path
from bridge.units import FRAME_NS, frame_bytes

log = logging.getLogger("bridge.record")

#: Rows are written this far behind the newest inbound frame, so an outbound frame sent a
#: little late for its slot still lands in it (200 ms; any later one is counted and dropped).
HOLD_ROWS = 10
#: If the caller's audio stalls, rows are written anyway this far behind the newest outbound
#: frame (2 s), so memory stays bounded whatever the peer does.
FORCE_ROWS = 100
#: Rows are written in blocks of this many (200 ms), each followed by a header update.
BLOCK_ROWS = 10


class Recorder:
    """Writes one call to ``path``; fed by the call's taps, finished by :meth:`close`."""

    def __init__(self, call: Call, path: Path) -> None:
        self.path = path
        self.rate = call.rate
        self._call = call
        self._frame_bytes = frame_bytes(call.rate)
        self._silence = bytes(self._frame_bytes)
        self._files = file_writer()
        self._file = self._files.open(path, on_error=self._on_write_error)
        self._data_bytes = 0
        self._files.write(self._file, wav_header(self.rate, 2, 0))  # valid (empty) from the start
        self._left: deque[bytes] = deque()  # rows [written, left_next)
        self._left_next = 0
        self._right: dict[int, bytes] = {}
        self._right_high = -1
        self.written_rows = 0
        self.late_frames = 0
        self.failed = False

    @property
    def duration_s(self) -> float:
        """Audio handed to the file so far (on disk once the writer has run)."""
        return self.written_rows * FRAME_NS / 1e9

    def on_inbound(self, frame: bytes) -> None:
        if self.failed:
            return
        self._left.append(frame)
        self._left_next += 1
        if self._left_next - HOLD_ROWS - self.written_rows >= BLOCK_ROWS:
            self._write_until(self._left_next - HOLD_ROWS)

    def on_outbound(self, frame: bytes, slot: int) -> None:
        if self.failed:
            return
        if slot < self.written_rows:
            self.late_frames += 1
            return
        self._right[slot] = frame
        self._right_high = max(self._right_high, slot)
        if slot - FORCE_ROWS - self.written_rows >= BLOCK_ROWS:
            self._write_until(slot - FORCE_ROWS)

    def close(self) -> None:
        """The call ended: write every row up to its full length, finish the header."""
        if not self.failed:
            elapsed = -(-(self._call.clock.now_ns() - self._call.start_ns) // FRAME_NS)
            self._write_until(max(self._left_next, self._right_high + 1, elapsed))
        self._files.close(self._file)
        log.info(
            "recording closed",
            extra={
                "call_id": self._call.id,
                "path": str(self.path),
                "seconds": round(self.duration_s, 3),
                "late_frames": self.late_frames,
            },
        )

    def _write_until(self, rows: int) -> None:
        n = rows - self.written_rows
        if n <= 0 or self.failed:
            return
        first = self.written_rows
        left = self._left
        lefts = [left.popleft() if left else self._silence for _ in range(n)]
        # Rows the caller's audio has not reached are written as silence; its next frame
        # then starts after them (the stalled-caller case, see the module doc).
        self._left_next = max(self._left_next, rows)
        rights = [self._right.pop(first + i, self._silence) for i in range(n)]
        stereo = np.empty((n * (self._frame_bytes // 2), 2), dtype=PCM_DTYPE)
        stereo[:, 0] = np.frombuffer(b"".join(lefts), dtype=PCM_DTYPE)
        stereo[:, 1] = np.frombuffer(b"".join(rights), dtype=PCM_DTYPE)
        self.written_rows = rows
        self._data_bytes += stereo.nbytes
        # The data, then the header that covers it (it never claims what is not there).
        files = self._files
        if not (
            files.write(self._file, stereo.data.cast("B"))
            and files.pwrite(self._file, wav_header(self.rate, 2, self._data_bytes), 0)
        ):
            self._fail(OSError("the file writer is behind (disk too slow): queue full"))

    def _on_write_error(self, exc: Exception) -> None:
        """From the file writer: the file cannot be written (disk full, removed...)."""
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """Stop recording this call (logged once); the taps then do nothing."""
        if not self.failed:
            self.failed = True
            log.error(
                "recording failed; the call goes on unrecorded",
                extra={"call_id": self._call.id, "path": str(self.path), "error": str(exc)},
            )


def start_recording(call: Call, directory: Path) -> Recorder | None:
    """Tap ``call`` into ``directory/<call id>.wav``; ``None`` (logged) if it cannot."""
    try:
        recorder = Recorder(call, reserve_path(directory, call.id, ".wav"))
    except OSError as exc:
        log.error(
            "cannot record call",
            extra={"call_id": call.id, "dir": str(directory), "error": str(exc)},
        )
        return None
    call.add_taps(inbound=recorder.on_inbound, outbound=recorder.on_outbound)
    call.on_end(recorder.close)
    return recorder


def recorded(handler: Handler, directory: Path) -> Handler:
    """``handler`` with every call recorded to ``directory`` (``--record-dir``)."""

    async def record_call(call: Call) -> None:
        recorder = start_recording(call, directory)
        await handler(call)
        if recorder is not None and call.ended:
            await file_writer().written()  # the file is complete once the handler returns

    return record_call
