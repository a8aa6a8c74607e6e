"""The audio encodings carriers put in their media messages, each to and from bridge's PCM.

Inside bridge every frame is 16-bit little-endian PCM (``bridge.audio.pcm``); a carrier's
media payload may be G.711 (mu-law, A-law) or 16-bit linear PCM in either byte order
(docs/carriers.md). A :class:`Codec` converts one payload in one call, synchronously, with no
state between calls: G.711 and L16 are sample-by-sample codes.

Import rule: numpy, the standard library and ``bridge.audio``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from bridge.audio.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm,
    pcm_to_alaw,
    pcm_to_ulaw,
    ulaw_to_pcm,
)


def _same(data: bytes) -> bytes:
    return data


def _swap(data: bytes) -> bytes:
    """16-bit samples with their two bytes swapped (an odd last byte is dropped)."""
    even = len(data) & ~1
    return np.frombuffer(data, dtype="<u2", count=even // 2).byteswap().tobytes()


@dataclass(frozen=True, slots=True)
class Codec:
    """One wire encoding: ``decode`` gives PCM bytes, ``encode`` takes them."""

    name: str
    #: Bytes one sample takes on the wire (1 for G.711, 2 for L16).
    sample_bytes: int
    decode: Callable[[bytes], bytes]
    encode: Callable[[bytes], bytes]
    #: The byte a silent sample is made of on the wire.
    silence_byte: int

    def silence(self, samples: int) -> bytes:
        """``samples`` samples of silence, encoded."""
        return bytes([self.silence_byte]) * (samples * self.sample_bytes)


PCMU: Final = Codec("PCMU", 1, ulaw_to_pcm, pcm_to_ulaw, ULAW_SILENCE)
PCMA: Final = Codec("PCMA", 1, alaw_to_pcm, pcm_to_alaw, ALAW_SILENCE)
#: 16-bit linear PCM, little-endian: bridge's own format, so both directions copy nothing.
L16_LE: Final = Codec("L16LE", 2, _same, _same, 0)
#: 16-bit linear PCM in network byte order (RFC 3551 L16).
L16_BE: Final = Codec("L16BE", 2, _swap, _swap, 0)
