"""Upstream service dialects: sans-I/O translators between a call and a speech service.

``DIALECTS`` maps each ``--upstream-dialect`` name (except ``raw``, bridge's own protocol,
which ``bridge.handlers.forward`` speaks) to its class; see ``bridge.services.base`` for what
a dialect is, and each module for its service's rules and the documentation behind them.

Import rule: the standard library and ``bridge.services``.
"""

from __future__ import annotations

from typing import get_args

from bridge.services.assemblyai import AssemblyAI
from bridge.services.base import Dialect, DialectName, ServiceSettings, TurnDetection, merge_query
from bridge.services.deepgram import Deepgram
from bridge.services.elevenlabs import ElevenLabs
from bridge.services.openai_realtime import OpenAIRealtime
from bridge.services.speechmatics import Speechmatics

DIALECTS: dict[str, type[Dialect]] = {
    cls.name: cls for cls in (Deepgram, AssemblyAI, OpenAIRealtime, ElevenLabs, Speechmatics)
}
#: Every ``--upstream-dialect`` choice, ``raw`` (bridge's own protocol) first.
DIALECT_NAMES: tuple[str, ...] = get_args(DialectName)
if set(DIALECT_NAMES) != {"raw", *DIALECTS}:  # pragma: no cover - caught by any import
    raise TypeError("DialectName must list 'raw' and every dialect in DIALECTS")

__all__ = [
    "DIALECTS",
    "DIALECT_NAMES",
    "Dialect",
    "DialectName",
    "ServiceSettings",
    "TurnDetection",
    "merge_query",
]
