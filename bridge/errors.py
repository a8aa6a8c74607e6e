"""One exception hierarchy for the whole package.

The sans-I/O layers (``protocol``, ``audio``, ``pacing``) raise these; only the server
decides what a failure means on the wire (close code, log line). "The peer sent something
invalid" (:class:`PeerError`) is kept apart from "we misused our own API"
(:class:`UsageError`) because the first must close one call and the second is a bug.

Import rule: imports nothing from the package.
"""

from __future__ import annotations

import enum


class BridgeError(Exception):
    """Base of every error bridge raises on purpose."""


class UsageError(BridgeError):
    """Our own API was called wrongly (a programming error, never the peer's fault)."""


class ConfigError(BridgeError):
    """A setting is invalid; the CLI prints it as one line and exits 2."""


class Fault(enum.Enum):
    """What the peer did wrong. The server maps each to one close code (see README)."""

    BINARY_BEFORE_METADATA = "binary frame before websocket:connected"
    FIRST_MESSAGE_NOT_JSON = "first message is not JSON"
    FIRST_MESSAGE_NOT_OBJECT = "first message is not a JSON object"
    MISSING_CONTENT_TYPE = "first message has no content-type"
    UNSUPPORTED_CONTENT_TYPE = "unsupported content-type"
    MESSAGE_TOO_BIG = "message too big"
    FIRST_MESSAGE_TIMEOUT = "no websocket:connected in time"
    INVALID_EVENT = "invalid event"
    # Carriers whose sockets carry JSON text only (docs/carriers.md s.1).
    BINARY_ON_TEXT_SOCKET = "binary frame on a JSON-only socket"
    MEDIA_BEFORE_START = "media before start"
    INVALID_START = "invalid start message"
    UNSUPPORTED_MEDIA_FORMAT = "unsupported media format"
    INVALID_MEDIA = "invalid media payload"
    WRONG_CARRIER = "unexpected carrier"


class PeerError(BridgeError):
    """The peer sent something invalid; ``fault`` says what, ``detail`` says how."""

    def __init__(self, fault: Fault, detail: str = "") -> None:
        self.fault = fault
        self.detail = detail
        super().__init__(f"{fault.value}: {detail}" if detail else fault.value)
