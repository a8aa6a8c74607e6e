"""Strict fakes of the speech services bridge feeds (``--upstream-dialect``), one module each;
``FAKES`` maps a dialect name to its fake. See ``tests/fakes/base.py``."""

from __future__ import annotations

from tests.fakes.assemblyai import FakeAssemblyAI
from tests.fakes.base import KEY, FakeService, Session
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.speechmatics import FakeSpeechmatics

FAKES: dict[str, type[FakeService]] = {
    "deepgram": FakeDeepgram,
    "assemblyai": FakeAssemblyAI,
    "openai-realtime": FakeOpenAIRealtime,
    "elevenlabs": FakeElevenLabs,
    "speechmatics": FakeSpeechmatics,
}

__all__ = ["FAKES", "KEY", "FakeService", "Session"]
