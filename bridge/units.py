"""The audio facts and units every layer shares, each defined here and nowhere else.

A Vonage call's audio (docs/protocol.md s.4) is signed 16-bit little-endian mono PCM at one of
three rates, named by the content type ``audio/l16;rate=N``, in messages of exactly 20 ms.
Those numbers decide frame sizes, the pacing grid, buffer bounds in ms, the NCCO's
``content-type`` and the choices of every ``--*-rate`` option; they were once spelled out in
four modules, which is how facts drift apart. Times are integer nanoseconds (``MS`` and
``FRAME_NS`` convert); sample counts are integers too (docs/architecture.md s.3).

Import rule: standard library only; every module may import it.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

#: A rate Vonage can stream: the annotation of every rate setting (its choices come from here).
Rate = Literal[8000, 16000, 24000]
SUPPORTED_RATES: Final[tuple[int, ...]] = get_args(Rate)

#: One frame: every message of audio, both ways, is exactly this long.
FRAME_MS: Final = 20
#: Nanoseconds in a millisecond and in a second: the clock's unit is the nanosecond.
MS: Final = 1_000_000
SECOND: Final = 1000 * MS
FRAME_NS: Final = FRAME_MS * MS
FRAMES_PER_SECOND: Final = 1000 // FRAME_MS
#: 16-bit linear PCM.
BYTES_PER_SAMPLE: Final = 2

_CONTENT_TYPE_PREFIX: Final = "audio/l16;rate="
# Parsing is lenient about case and spaces (a proxy may rewrite them); building is exact.
# ASCII only: ``\d`` would otherwise accept other scripts' digits (Arabic-Indic, ...).
_CONTENT_TYPE = re.compile(r"^\s*audio/l16\s*;\s*rate\s*=\s*(\d+)\s*$", re.IGNORECASE | re.ASCII)


def frame_samples(sample_rate: int) -> int:
    """Samples in one frame at ``sample_rate`` (160, 320 or 480)."""
    return sample_rate * FRAME_MS // 1000


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one frame (320, 640 or 960): the only outbound message size Vonage accepts."""
    return frame_samples(sample_rate) * BYTES_PER_SAMPLE


def content_type(sample_rate: int) -> str:
    """The content type naming ``sample_rate``, exactly as Vonage writes it."""
    return f"{_CONTENT_TYPE_PREFIX}{sample_rate}"


#: Every content type bridge accepts and asks for, in rate order.
CONTENT_TYPES: Final[tuple[str, ...]] = tuple(content_type(rate) for rate in SUPPORTED_RATES)


def rate_of(value: str) -> int | None:
    """The supported rate a content type names, or ``None`` when it names none."""
    match = _CONTENT_TYPE.match(value)
    if match is None or int(match.group(1)) not in SUPPORTED_RATES:
        return None
    return int(match.group(1))


def rates_text() -> str:
    """``8000, 16000, 24000``: the rates as error messages list them."""
    return ", ".join(str(rate) for rate in SUPPORTED_RATES)
