"""The playout queue: bounded in ms, drops the oldest audio, never loses or reorders markers."""

from __future__ import annotations

import pytest

from bridge.audio.playout import Marker, PlayoutBuffer


def _frame(i: int) -> bytes:
    return i.to_bytes(2, "little") * 320


def _drain(buffer: PlayoutBuffer) -> list[bytes | Marker]:
    items: list[bytes | Marker] = []
    while buffer:
        items.append(buffer.pop())
    return items


@pytest.mark.parametrize(
    ("max_ms", "frames"), [(20, 1), (39, 1), (40, 2), (100, 5), (2000, 100), (2010, 100)]
)
def test_bound_is_in_milliseconds(max_ms: int, frames: int) -> None:
    buffer = PlayoutBuffer(max_ms)
    assert buffer.max_frames == frames
    assert buffer.room == frames


def test_bound_smaller_than_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        PlayoutBuffer(19)


def test_fifo_and_room() -> None:
    buffer = PlayoutBuffer(100)
    for i in range(3):
        buffer.push(_frame(i))
    assert buffer.frames == 3
    assert buffer.room == 2
    assert buffer.peek() == _frame(0)
    assert _drain(buffer) == [_frame(0), _frame(1), _frame(2)]
    assert buffer.frames == 0
    assert not buffer


def test_overflow_drops_the_oldest_frame_and_counts_it() -> None:
    buffer = PlayoutBuffer(60)  # 3 frames
    for i in range(5):
        buffer.push(_frame(i))
    assert buffer.frames == 3
    assert buffer.dropped_frames == 2
    assert _drain(buffer) == [_frame(2), _frame(3), _frame(4)]


def test_markers_survive_overflow_in_order() -> None:
    buffer = PlayoutBuffer(60)  # 3 frames
    buffer.mark("start")
    buffer.push(_frame(0))
    buffer.mark("after 0")
    buffer.push(_frame(1))
    buffer.push(_frame(2))
    buffer.mark("after 2")
    buffer.push(_frame(3))  # drops frame 0
    buffer.push(_frame(4))  # drops frame 1
    assert buffer.dropped_frames == 2
    assert buffer.frames == 3
    assert _drain(buffer) == [
        Marker("start"),
        Marker("after 0"),
        _frame(2),
        Marker("after 2"),
        _frame(3),
        _frame(4),
    ]


def test_markers_do_not_count_against_the_bound() -> None:
    buffer = PlayoutBuffer(40, max_markers=10)  # 2 frames, 10 markers
    for i in range(10):
        buffer.mark(i)
    buffer.push(_frame(0))
    buffer.push(_frame(1))
    assert buffer.dropped_frames == 0
    assert buffer.frames == 2
    assert buffer.room == 0
    assert len(_drain(buffer)) == 12


def test_markers_have_their_own_bound_the_oldest_marker_dropped_never_audio() -> None:
    buffer = PlayoutBuffer(60)  # 3 frames: by default 3 markers
    buffer.push(_frame(0))
    for i in range(5):
        buffer.mark(i)
    buffer.push(_frame(1))
    assert (buffer.markers, buffer.dropped_markers, buffer.frames) == (3, 2, 2)
    items = _drain(buffer)
    assert [i.payload for i in items if isinstance(i, Marker)] == [2, 3, 4]
    assert [i for i in items if not isinstance(i, Marker)] == [_frame(0), _frame(1)]
    assert buffer.markers == 0


def test_a_buffer_holding_only_markers_is_not_empty() -> None:
    buffer = PlayoutBuffer(40)
    buffer.mark("m")
    assert buffer
    assert buffer.frames == 0
    assert buffer.pop() == Marker("m")
    assert not buffer


def test_clear_returns_frames_dropped_and_removes_markers() -> None:
    buffer = PlayoutBuffer(200)
    for i in range(4):
        buffer.push(_frame(i))
        buffer.mark(i)
    assert buffer.clear() == 4
    assert not buffer
    assert buffer.frames == 0
    assert buffer.room == 10
    assert buffer.dropped_frames == 0  # a clear is not an overflow
    assert buffer.clear() == 0


def test_peak_is_the_most_frames_ever_queued() -> None:
    buffer = PlayoutBuffer(100)
    for i in range(4):
        buffer.push(_frame(i))
    _drain(buffer)
    buffer.push(_frame(9))
    assert buffer.peak_frames == 4
    for i in range(8):
        buffer.push(_frame(i))
    assert buffer.peak_frames == 5  # capped by the bound
