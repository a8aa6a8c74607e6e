"""Which dialect a websocket speaks, from its first messages (docs/carriers.md s.1).

Vonage's first message is ``websocket:connected`` with a ``content-type``. The four JSON
dialects start with ``connected`` (Twilio, Telnyx, Exotel) or ``start`` (Plivo); only their
``start`` tells them apart, by the names of its fields:

| carrier | ``start`` has |
|---|---|
| Twilio | ``start.streamSid`` and ``start.callSid`` |
| Telnyx | a top-level ``stream_id`` and ``start.call_control_id`` |
| Plivo | ``start.streamId`` and ``start.callId`` |
| Exotel | ``start.call_sid`` and ``stream_sid`` (top level or in ``start``) |

Import rule: standard library, ``bridge.errors``, ``bridge.protocol`` and ``bridge.units``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, get_args

from bridge.protocol.carrier import Dialect
from bridge.protocol.exotel import Exotel
from bridge.protocol.plivo import Plivo
from bridge.protocol.telnyx import Telnyx
from bridge.protocol.twilio import Twilio

#: ``--carrier``: one dialect for every call, or ``auto`` (from each call's first messages).
CarrierChoice = Literal["auto", "vonage", "twilio", "telnyx", "plivo", "exotel"]
CARRIER_CHOICES: tuple[str, ...] = get_args(CarrierChoice)

DIALECTS: Mapping[str, type[Dialect]] = {cls.name: cls for cls in (Twilio, Telnyx, Plivo, Exotel)}

#: What a first message says: ``vonage``, a carrier, ``carrier`` (a JSON dialect whose
#: ``start`` has not come yet: Twilio, Telnyx and Exotel all begin with ``connected``), or
#: ``unknown`` (no dialect's: not JSON, or no field any dialect starts with).
PENDING = "carrier"
UNKNOWN = "unknown"


def recognize(start: Mapping[str, Any]) -> type[Dialect] | None:
    """The dialect whose ``start`` message this is, if any."""
    for cls in DIALECTS.values():
        if cls.recognizes(start):
            return cls
    return None


def first_message_dialect(text: str) -> str:
    """``vonage``, a carrier's name, :data:`PENDING` or :data:`UNKNOWN`, from a websocket's
    first message. (For an unknown one, Vonage's parser says exactly what is wrong with it:
    not JSON, no ``content-type``...)"""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return UNKNOWN
    if not isinstance(obj, dict):
        return UNKNOWN
    event = obj.get("event")
    if "content-type" in obj or event == "websocket:connected":
        return "vonage"
    if event == "connected":
        return PENDING
    if event == "start":
        cls = recognize(obj)
        return cls.name if cls is not None else PENDING
    return UNKNOWN
