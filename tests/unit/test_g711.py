"""G.711 tables against the standard library's ``audioop`` (Python 3.11/3.12 still ship it):
every one of the 256 codes decoded, every one of the 65 536 linear values encoded."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

from bridge.audio import g711

audioop: Any
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        audioop = importlib.import_module("audioop")
    except ImportError:  # Python 3.13 removed it: the round trips below still run
        audioop = None

ALL_CODES = bytes(range(256))
ALL_VALUES = np.arange(-32768, 32768, dtype="<i2").tobytes()

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is gone in Python 3.13")


@needs_audioop
def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    assert g711.ulaw_to_pcm(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


@needs_audioop
def test_ulaw_encode_matches_audioop_for_every_value() -> None:
    assert g711.pcm_to_ulaw(ALL_VALUES) == audioop.lin2ulaw(ALL_VALUES, 2)


@needs_audioop
def test_alaw_decode_matches_audioop_for_every_code() -> None:
    assert g711.alaw_to_pcm(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


@needs_audioop
def test_alaw_encode_matches_audioop_for_every_value() -> None:
    assert g711.pcm_to_alaw(ALL_VALUES) == audioop.lin2alaw(ALL_VALUES, 2)


def test_round_trips() -> None:
    # A-law: every code comes back. mu-law: every code but 0x7F (negative zero -> 0xFF).
    assert g711.pcm_to_alaw(g711.alaw_to_pcm(ALL_CODES)) == ALL_CODES
    back = g711.pcm_to_ulaw(g711.ulaw_to_pcm(ALL_CODES))
    assert [c for c in range(256) if back[c] != c] == [0x7F]
    assert back[0x7F] == 0xFF
    assert g711.pcm_to_ulaw(bytes(2)) == bytes([g711.ULAW_SILENCE])
    assert g711.pcm_to_alaw(bytes(2)) == bytes([g711.ALAW_SILENCE])


def test_extremes_and_sign() -> None:
    loud = np.array([32767, -32768, 1000, -1000], dtype="<i2").tobytes()
    decoded = np.frombuffer(g711.ulaw_to_pcm(g711.pcm_to_ulaw(loud)), dtype="<i2")
    assert decoded[0] > 32000 and decoded[1] < -32000
    assert abs(int(decoded[2]) - 1000) < 40 and abs(int(decoded[3]) + 1000) < 40
