"""The Vonage Voice API websocket dialect (docs/protocol.md s.3-5), both directions.

Parsing is for the server (Vonage -> bridge); the ``build_*_event`` helpers are for the
simulator, which plays Vonage's side. Every function is pure: text in, dataclass or text out.

Import rule: standard library, ``bridge.errors`` and ``bridge.units`` only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from bridge.errors import Fault, PeerError
from bridge.units import content_type, rate_of

DTMF_DIGITS = frozenset("0123456789*#")
#: Vonage's playback buffer for the audio we send, in frames: 3072 (about 61 s) in current
#: docs, 1024 in older ones; past it, assume audio is dropped (docs/protocol.md s.4).
PLAYBACK_BUFFER_FRAMES = 3072
#: The longest a websocket leg may last, and Vonage's default ``limit`` (docs/protocol.md s.6).
MAX_LEG_S = 7200


def parse_content_type(value: object) -> int:
    """Return the sample rate named by a ``content-type`` value, or raise ``PeerError``."""
    rate = rate_of(value) if isinstance(value, str) else None
    if rate is None:
        raise PeerError(Fault.UNSUPPORTED_CONTENT_TYPE, f"{value!r}")
    return rate


def parse_query(query: str) -> dict[str, str]:
    """Query-string values as call metadata; a repeated key keeps its last value."""
    return dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Connected:
    """The first message: the call's rate plus everything else as metadata."""

    sample_rate: int
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def parse_connected(text: str, query: str = "") -> Connected:
    """Parse the ``websocket:connected`` text frame (docs/protocol.md s.3).

    Unknown keys are metadata, never rejected; ``event`` is not required because the
    rate is what matters and some proxies rewrite it.
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays ("[[[[...") are the peer's fault too.
        raise PeerError(Fault.FIRST_MESSAGE_NOT_JSON, str(exc)) from exc
    if not isinstance(obj, dict):
        raise PeerError(Fault.FIRST_MESSAGE_NOT_OBJECT, type(obj).__name__)
    if "content-type" not in obj:
        raise PeerError(Fault.MISSING_CONTENT_TYPE)
    rate = parse_content_type(obj["content-type"])
    metadata = {k: v for k, v in obj.items() if k not in ("event", "content-type")}
    return Connected(
        sample_rate=rate,
        metadata=MappingProxyType(metadata),
        query=MappingProxyType(parse_query(query)),
    )


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Cleared:
    """Vonage confirms our ``clear``: its playback buffer is empty."""


@dataclass(frozen=True, slots=True)
class Notified:
    """Everything queued before our matching ``notify`` has been played."""

    payload: Any = None


Event = Dtmf | Cleared | Notified


def parse_event(text: str) -> Event | None:
    """Parse a text event after the first message; ``None`` for events we ignore.

    A DTMF digit may be flat (``{"digit": "5"}``) or nested (``{"dtmf": {"digit": "5"}}``):
    both shapes appear in Vonage's documentation over the years.
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PeerError(Fault.INVALID_EVENT, f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PeerError(Fault.INVALID_EVENT, "not a JSON object")
    name = obj.get("event")
    if name == "websocket:dtmf":
        nested = obj.get("dtmf")
        source: dict[str, Any] = nested if isinstance(nested, dict) else obj
        digit = str(source.get("digit", ""))
        if digit not in DTMF_DIGITS:
            raise PeerError(Fault.INVALID_EVENT, f"bad DTMF digit {digit!r}")
        return Dtmf(digit, _duration_ms(source.get("duration")))
    if name == "websocket:cleared":
        return Cleared()
    if name == "websocket:notify":
        return Notified(obj.get("payload"))
    return None


def _duration_ms(value: object) -> int | None:
    """A DTMF duration, or ``None`` when absent or not a finite number.

    ``json.loads`` accepts ``NaN``, ``Infinity`` and ``1e400``; ``int()`` of those raises
    ValueError/OverflowError, which must not escape as anything but a quiet ``None``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def build_clear() -> str:
    """``clear``: Vonage stops playback and drops its buffer, then sends ``cleared``."""
    return '{"action":"clear"}'


def build_notify(payload: Any) -> str:
    """``notify``: a marker in Vonage's playback queue, echoed back when reached."""
    return json.dumps({"action": "notify", "payload": payload}, separators=(",", ":"))


# --- Vonage's side, for the simulator -------------------------------------------------


def build_connected(sample_rate: int, headers: Mapping[str, Any] | None = None) -> str:
    """The first message as Vonage sends it: the endpoint's headers flattened in."""
    obj: dict[str, Any] = {
        "event": "websocket:connected",
        "content-type": content_type(sample_rate),
    }
    for key, value in (headers or {}).items():
        obj.setdefault(key, value)
    return json.dumps(obj, separators=(",", ":"))


def build_dtmf_event(digit: str, duration_ms: int = 100) -> str:
    if digit not in DTMF_DIGITS:
        raise ValueError(f"DTMF digit must be one of 0-9 * #, got {digit!r}")
    return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": duration_ms})


def build_cleared_event() -> str:
    return '{"event":"websocket:cleared"}'


def build_notify_event(payload: Any) -> str:
    return json.dumps({"event": "websocket:notify", "payload": payload}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Command:
    """A command bridge sent to Vonage, as the simulator sees it."""

    action: str
    payload: Any = None


def parse_command(text: str) -> Command:
    """Parse bridge's ``clear``/``notify`` on the simulator side; anything else is an error."""
    try:
        obj = json.loads(text)
    except RecursionError as exc:
        raise ValueError(f"not a Vonage websocket command: {text[:80]!r}") from exc
    if not isinstance(obj, dict) or obj.get("action") not in ("clear", "notify"):
        raise ValueError(f"not a Vonage websocket command: {text[:80]!r}")
    return Command(str(obj["action"]), obj.get("payload"))
