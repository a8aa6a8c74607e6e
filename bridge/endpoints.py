"""The four NCCO ``connect`` endpoint types and the ``connect`` action (docs/protocol.md s.2).

Vonage answers a malformed NCCO with silence or, worse, with a silently different call (an SDK
that wrote ``contentType`` got 16 kHz whatever it asked for). So every model here is validated
when it is built, and :func:`validate_ncco` applies the same rules to an NCCO someone wrote by
hand. An error names the JSON field and the rule (``endpoint.number: must be ...``), because
that is what a person fixes.

Rules that docs/protocol.md (s.2) leaves open, and what this module decides:

- numbers: ASCII digits only, 7 to 15 of them, the first not ``0`` (E.164 caps numbers at 15
  digits; no country code plus subscriber number is shorter than 7).
- SIP: ``sip:user@host[:port][;transport=tls|udp|tcp]``. At most one parameter, and only
  ``transport``: Vonage documents ``tls``; ``udp`` and ``tcp`` are the RFC 3261 values and
  harmless. Any other parameter is rejected rather than passed to Vonage to be ignored. ``sips:``
  is rejected: Vonage selects TLS with ``;transport=tls``.
- websocket URIs: ``ws://`` or ``wss://`` (case-sensitive, as Vonage writes them), a host,
  a port 1-65535 if given, no fragment (RFC 6455 forbids one), no whitespace or control chars.
- ``headers``: a JSON object with string keys, at most 512 bytes as compact JSON with non-ASCII
  escaped (never smaller than the UTF-8 form, so we fit however Vonage counts); the keys
  ``event`` and ``content-type`` are refused because headers land at the top level of the first
  message (docs/protocol.md s.3) and would overwrite those.
- ``from``: E.164 whenever present; required for ``phone`` and ``sip`` endpoints.
- ``vbc`` extensions: 1 to 10 ASCII digits.
- ``eventMethod`` is exactly ``GET`` or ``POST``; ``timeout`` a positive int; ``limit`` 1..7200.

Each endpoint's ``explain()`` (and ``Connect.explain()``, which adds the caller ID) returns the
fine print as data: what Vonage will connect to (SIP host, port 5060 unless given, TLS, UDP
media; the E.164 number and DTMF on answer; the websocket rate, headers and their size against
the limit; the VBC extension). ``.lines()`` says the same in plain words.

Import rule: standard library, ``bridge.errors``, ``bridge.units`` and ``bridge.protocol``
(its facts) only; no asyncio, no websockets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeAlias
from urllib.parse import urlsplit

from bridge.errors import BridgeError
from bridge.protocol.vonage import MAX_LEG_S
from bridge.units import (
    CONTENT_TYPES,
    SUPPORTED_RATES,
    content_type,
    frame_bytes,
    rate_of,
    rates_text,
)

MAX_HEADERS_BYTES = 512
MAX_CUSTOM_AUTH_CHARS = 8191  # "under 8192 characters" (docs/protocol.md s.2)
EVENT_METHODS: tuple[str, ...] = ("GET", "POST")
SIP_TRANSPORTS: tuple[str, ...] = ("tls", "udp", "tcp")
# What Vonage does when a field leaves it open (docs/protocol.md s.2), for ``explain()``.
SIP_DEFAULT_PORT = 5060
#: A SIP call's caller ID is ``<from>@`` this domain.
SIP_CALLER_DOMAIN = "sip.nexmo.com"
#: Each ``p`` in ``dtmfAnswer`` is a pause of this long.
DTMF_PAUSE_MS = 500
#: The rate Vonage uses for a websocket endpoint without ``content-type``.
VONAGE_DEFAULT_RATE = 16000
# Keys of the first message itself; a header with one of these names would replace it.
RESERVED_HEADER_KEYS: frozenset[str] = frozenset({"event", "content-type"})

JSONObject: TypeAlias = dict[str, Any]

# re.ASCII everywhere: ``\d`` would otherwise accept other scripts' digits.
_E164 = re.compile(r"[1-9][0-9]{6,14}", re.ASCII)
_DTMF_ANSWER = re.compile(r"[0-9*#p]+", re.ASCII)
_VBC_EXTENSION = re.compile(r"[0-9]{1,10}", re.ASCII)
# RFC 3261 user: unreserved, escaped and user-unreserved characters (no ';', '@' or ':').
_SIP_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,?/%]+", re.ASCII)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)
_IPV6_REF = re.compile(r"\[[0-9A-Fa-f:.]+\]", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_SIP_SHAPE = "sip:user@host[:port][;transport=tls|udp|tcp]"
_E164_RULE = "must be E.164 digits without '+' or a leading zero (7 to 15 digits)"


class EndpointError(BridgeError):
    """An endpoint or NCCO value breaks a rule; ``field`` is its JSON path, ``rule`` the why."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


def _show(value: object, limit: int = 60) -> str:
    """``repr`` cut short: an error line must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require_str(field_name: str, value: object) -> str:
    if not isinstance(value, str):
        raise EndpointError(field_name, f"must be a string, got {type(value).__name__}")
    return value


def _check_e164(field_name: str, value: object) -> str:
    number = _require_str(field_name, value)
    if not _E164.fullmatch(number):
        raise EndpointError(field_name, f"{_E164_RULE}, got {_show(number)}")
    return number


def _check_port(field_name: str, port: str, shape: str) -> None:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise EndpointError(field_name, f"port must be 1-65535 ({shape}), got {_show(port)}")


def _check_sip_uri(field_name: str, value: object) -> str:
    uri = _require_str(field_name, value)
    prefix = f"must be {_SIP_SHAPE}"
    if not uri.startswith("sip:"):
        raise EndpointError(field_name, f"{prefix}: must start 'sip:', got {_show(uri)}")
    address, *params = uri[len("sip:") :].split(";")
    user, at, hostport = address.rpartition("@")
    if not at or not user:
        raise EndpointError(field_name, f"{prefix}: no user before '@', got {_show(uri)}")
    if not _SIP_USER.fullmatch(user):
        raise EndpointError(field_name, f"{prefix}: invalid character in user, got {_show(uri)}")
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, port_part = hostport[:end], hostport[end:]
        host_ok = end > 0 and bool(_IPV6_REF.fullmatch(host))
    else:
        host, colon, rest = hostport.partition(":")
        port_part = f":{rest}" if colon else ""
        host_ok = bool(_HOSTNAME.fullmatch(host))
    if not host_ok:
        raise EndpointError(field_name, f"{prefix}: invalid host, got {_show(uri)}")
    if port_part:
        if not port_part.startswith(":"):
            raise EndpointError(field_name, f"{prefix}: invalid host, got {_show(uri)}")
        _check_port(field_name, port_part[1:], _SIP_SHAPE)
    if len(params) > 1:
        raise EndpointError(field_name, f"{prefix}: at most one parameter, got {_show(uri)}")
    for param in params:
        name, _, transport = param.partition("=")
        # RFC 3261: parameter names and values are case-insensitive.
        if name.lower() != "transport" or transport.lower() not in SIP_TRANSPORTS:
            raise EndpointError(
                field_name,
                f"{prefix}: the only parameter is transport=tls, udp or tcp, got {_show(param)}",
            )
    return uri


def _check_url(field_name: str, value: object, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes``, a host, a valid port and nothing unprintable in it."""
    url = _require_str(field_name, value)
    shapes = " or ".join(f"'{scheme}://'" for scheme in schemes)
    if not any(url.startswith(f"{scheme}://") for scheme in schemes):
        raise EndpointError(field_name, f"must start {shapes}, got {_show(url)}")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise EndpointError(field_name, f"must not contain whitespace, got {_show(url)}")
    parts = urlsplit(url)
    if not parts.hostname:
        raise EndpointError(field_name, f"must have a host after {shapes}, got {_show(url)}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise EndpointError(field_name, f"port must be 1-65535, got {_show(url)}")
    return url


def _check_websocket_uri(field_name: str, value: object) -> str:
    uri = _check_url(field_name, value, ("ws", "wss"))
    if "#" in uri:
        raise EndpointError(field_name, f"must not have a fragment (RFC 6455), got {_show(uri)}")
    return uri


def _compact_json(headers: Mapping[str, Any]) -> str:
    """Headers as compact JSON, non-ASCII escaped: the form the 512-byte limit is counted on."""
    return json.dumps(dict(headers), separators=(",", ":"), allow_nan=False)


def _check_headers(field_name: str, value: object) -> Mapping[str, Any]:
    """Validate, then return a read-only deep copy the caller can no longer mutate."""
    if not isinstance(value, Mapping):
        raise EndpointError(field_name, f"must be a JSON object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise EndpointError(field_name, f"keys must be strings, got {_show(key)}")
        if key in RESERVED_HEADER_KEYS:
            raise EndpointError(
                f"{field_name}.{key}",
                "is a key of the first message itself; headers are merged into it "
                "(docs/protocol.md s.3), so this one would replace it",
            )
    try:
        compact = _compact_json(value)
    except (TypeError, ValueError) as exc:
        raise EndpointError(field_name, f"must be JSON-serialisable: {exc}") from exc
    size = len(compact.encode("ascii"))
    if size > MAX_HEADERS_BYTES:
        raise EndpointError(
            field_name,
            f"must be at most {MAX_HEADERS_BYTES} bytes as compact JSON, got {size} bytes",
        )
    copy: dict[str, Any] = json.loads(compact)
    return MappingProxyType(copy)


def _check_keys(field_name: str, obj: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    """Unknown keys are refused: a typo would otherwise be ignored by Vonage, silently."""
    for key in obj:
        if key == "contentType":
            raise EndpointError(
                f"{field_name}.contentType",
                "the key is hyphenated, 'content-type'; Vonage ignores 'contentType' and "
                "silently uses 16000 Hz",
            )
        if key not in known:
            raise EndpointError(
                f"{field_name}.{key}", f"is not a field of {what} (fields: {', '.join(known)})"
            )


def _require_mapping(field_name: str, obj: object) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise EndpointError(field_name, f"must be a JSON object, got {type(obj).__name__}")
    return obj


def _require_int(field_name: str, value: object) -> int:
    # bool is an int subclass; ``true`` is never a number of seconds.
    if not isinstance(value, int) or isinstance(value, bool):
        raise EndpointError(field_name, f"must be an integer, got {_show(value)}")
    return value


# --- authorization -------------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    """What Vonage sends as ``Authorization`` on the websocket upgrade (docs/protocol.md s.2).

    ``vonage``: a signed JWT (``Bearer ...``); ``custom``: ``value`` verbatim.
    """

    type: Literal["vonage", "custom"]
    value: str | None = None

    def __post_init__(self) -> None:
        field_name = "endpoint.authorization"
        if self.type == "vonage":
            if self.value is not None:
                raise EndpointError(f"{field_name}.value", "is only for type 'custom'")
        elif self.type == "custom":
            value = _require_str(f"{field_name}.value", self.value)
            if not 1 <= len(value) <= MAX_CUSTOM_AUTH_CHARS:
                raise EndpointError(
                    f"{field_name}.value",
                    f"must be 1 to {MAX_CUSTOM_AUTH_CHARS} characters, got {len(value)}",
                )
            for index, ch in enumerate(value):
                if not " " <= ch <= "~":
                    # Never echo the value: it is a credential.
                    raise EndpointError(
                        f"{field_name}.value",
                        f"must be printable ASCII, got {ch!r} at index {index}",
                    )
        else:
            raise EndpointError(
                f"{field_name}.type", f"must be 'vonage' or 'custom', got {_show(self.type)}"
            )

    def to_dict(self) -> JSONObject:
        if self.type == "custom":
            return {"type": "custom", "value": self.value}
        return {"type": "vonage"}

    @classmethod
    def from_dict(cls, obj: object) -> Authorization:
        field_name = "endpoint.authorization"
        data = _require_mapping(field_name, obj)
        kind = data.get("type")
        if kind not in ("vonage", "custom"):
            raise EndpointError(
                f"{field_name}.type", f"must be 'vonage' or 'custom', got {_show(kind)}"
            )
        known = ("type", "value") if kind == "custom" else ("type",)
        _check_keys(field_name, data, known, f"a {kind} authorization")
        if kind == "custom" and "value" not in data:
            raise EndpointError(f"{field_name}.value", "is required for type 'custom'")
        return cls(kind, data.get("value"))


# --- what Vonage will do: each endpoint's fine print, as data and in plain words -------------


@dataclass(frozen=True)
class SipFacts:
    """Where Vonage places a SIP call and how (``SipEndpoint.explain``)."""

    uri: str
    host: str
    port: int
    #: False: the URI gives no port and Vonage uses 5060.
    port_given: bool
    #: The URI's ``transport`` parameter (lowercase), None if it has none.
    transport: str | None
    #: Signalling over TLS: ``;transport=tls``.
    tls: bool
    #: The media (RTP) is UDP whatever the signalling transport.
    media: str
    #: What the far end sees as the caller: ``<from>@sip.nexmo.com``.
    caller_id: str | None

    def lines(self) -> list[str]:
        port = f"port {self.port}" + (
            "" if self.port_given else " (the default: the URI gives none)"
        )
        if self.tls:
            signalling = "signalling over TLS (;transport=tls)"
        elif self.transport is not None:
            signalling = f"signalling over {self.transport.upper()}, not encrypted"
        else:
            signalling = "signalling not encrypted (add ;transport=tls for TLS)"
        caller = (
            f"the far end sees the caller as {self.caller_id}"
            if self.caller_id
            else "caller ID: none given (add --from, a Vonage number of the account)"
        )
        return [
            f"Vonage places a SIP call to {self.uri}: host {self.host}, {port}",
            f"{signalling}; media (RTP) over {self.media.upper()}",
            caller,
        ]


@dataclass(frozen=True)
class DtmfStep:
    """Wait ``pause_ms``, then key in ``keys`` (empty for a trailing pause)."""

    pause_ms: int
    keys: str


@dataclass(frozen=True)
class PhoneFacts:
    """The number Vonage dials and what it keys in on answer (``PhoneEndpoint.explain``)."""

    number: str
    #: The ``from`` number the callee sees, E.164 without '+'.
    caller_id: str | None
    dtmf_answer: str | None
    #: ``dtmf_answer`` as pauses and keys, in order (each ``p`` is 500 ms).
    dtmf_steps: tuple[DtmfStep, ...]
    #: Total pause time in ``dtmf_answer``; the tones themselves add their own length.
    dtmf_pause_ms: int

    def lines(self) -> list[str]:
        out = [
            f"Vonage dials +{self.number} (E.164)",
            f"the callee sees the caller ID +{self.caller_id}"
            if self.caller_id
            else "caller ID: none given (add --from, a Vonage number of the account)",
        ]
        if self.dtmf_answer is None:
            out.append("no DTMF on answer")
            return out
        steps = []
        for step in self.dtmf_steps:
            if step.pause_ms:
                steps.append(f"wait {step.pause_ms} ms")
            if step.keys:
                steps.append("key " + " ".join(step.keys))
        keys = sum(len(step.keys) for step in self.dtmf_steps)
        out.append(
            f"when the callee answers, Vonage sends DTMF {self.dtmf_answer!r}: "
            + ", ".join(steps)
            + f" ({keys} key{'' if keys == 1 else 's'}; pauses {self.dtmf_pause_ms} ms in all, "
            f"each p {DTMF_PAUSE_MS} ms, plus the tones' own length)"
        )
        return out


@dataclass(frozen=True)
class WebsocketFacts:
    """The socket Vonage opens and its first message (``WebsocketEndpoint.explain``)."""

    uri: str
    #: ``wss://``: the connection is TLS.
    tls: bool
    rate: int
    #: False: no ``content-type``, so Vonage's default (16000 Hz) applies.
    rate_given: bool
    #: Bytes per 20 ms frame of 16-bit mono PCM at ``rate``.
    bytes_per_frame: int
    headers: Mapping[str, Any]
    #: ``headers`` serialised as Vonage limits them (compact JSON), against ``headers_limit``.
    headers_bytes: int
    headers_limit: int
    #: ``vonage`` (a signed JWT), ``custom`` (a fixed header), or None (no credentials).
    authorization: str | None

    def lines(self) -> list[str]:
        rate = f"{self.rate} Hz" + (
            "" if self.rate_given else " (Vonage's default: no content-type)"
        )
        auth = {
            "vonage": "Authorization: Bearer <JWT> signed with the account's signature secret",
            "custom": "the custom Authorization header you set",
            None: "no credentials: anyone who knows the URI can connect",
        }[self.authorization]
        if self.headers:
            headers = (
                f"the first message carries headers {_compact_json(self.headers)} "
                f"({self.headers_bytes} of {self.headers_limit} bytes serialised)"
            )
        else:
            headers = f"no headers (up to {self.headers_limit} bytes serialised may be added)"
        return [
            f"Vonage opens a websocket to {self.uri}"
            + (" over TLS" if self.tls else ", not encrypted (ws://)"),
            f"audio: 16-bit PCM at {rate}, {self.bytes_per_frame}-byte frames every 20 ms, both ways",
            headers,
            f"upgrade request: {auth}",
        ]


@dataclass(frozen=True)
class VbcFacts:
    """The Vonage Business Cloud extension Vonage rings (``VbcEndpoint.explain``)."""

    extension: str

    def lines(self) -> list[str]:
        return [f"Vonage rings Vonage Business Cloud extension {self.extension}"]


EndpointFacts: TypeAlias = SipFacts | PhoneFacts | WebsocketFacts | VbcFacts


def _dtmf_steps(digits: str) -> tuple[DtmfStep, ...]:
    steps: list[DtmfStep] = []
    pause, keys = 0, ""
    for ch in digits:
        if ch == "p":
            if keys:
                steps.append(DtmfStep(pause, keys))
                pause, keys = 0, ""
            pause += DTMF_PAUSE_MS
        else:
            keys += ch
    if pause or keys:
        steps.append(DtmfStep(pause, keys))
    return tuple(steps)


# --- the four endpoints --------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneEndpoint:
    """A PSTN number; ``dtmf_answer`` is keyed in when the callee answers (``p`` = 500 ms)."""

    number: str
    dtmf_answer: str | None = None

    TYPE: ClassVar[str] = "phone"
    FIELDS: ClassVar[tuple[str, ...]] = ("type", "number", "dtmfAnswer")

    def __post_init__(self) -> None:
        _check_e164("endpoint.number", self.number)
        if self.dtmf_answer is not None:
            digits = _require_str("endpoint.dtmfAnswer", self.dtmf_answer)
            if not _DTMF_ANSWER.fullmatch(digits):
                raise EndpointError(
                    "endpoint.dtmfAnswer",
                    f"must be one or more of 0-9, *, # and p, got {_show(digits)}",
                )

    def to_dict(self) -> JSONObject:
        out: JSONObject = {"type": "phone", "number": self.number}
        if self.dtmf_answer is not None:
            out["dtmfAnswer"] = self.dtmf_answer
        return out

    def explain(self, from_: str | None = None) -> PhoneFacts:
        """What Vonage does with this endpoint; ``from_`` is the connect action's ``from``."""
        steps = _dtmf_steps(self.dtmf_answer or "")
        return PhoneFacts(
            number=self.number,
            caller_id=from_,
            dtmf_answer=self.dtmf_answer,
            dtmf_steps=steps,
            dtmf_pause_ms=sum(step.pause_ms for step in steps),
        )

    @classmethod
    def from_dict(cls, obj: object) -> PhoneEndpoint:
        data = _typed_endpoint(obj, cls.TYPE, cls.FIELDS)
        _present("endpoint.number", data, "number")
        return cls(data["number"], data.get("dtmfAnswer"))


@dataclass(frozen=True)
class SipEndpoint:
    """A SIP URI; media is UDP whatever the signalling transport (docs/protocol.md s.2)."""

    uri: str

    TYPE: ClassVar[str] = "sip"
    FIELDS: ClassVar[tuple[str, ...]] = ("type", "uri")

    def __post_init__(self) -> None:
        _check_sip_uri("endpoint.uri", self.uri)

    def to_dict(self) -> JSONObject:
        return {"type": "sip", "uri": self.uri}

    def explain(self, from_: str | None = None) -> SipFacts:
        """What Vonage does with this endpoint; ``from_`` is the connect action's ``from``."""
        address, _, param = self.uri[len("sip:") :].partition(";")
        hostport = address.rpartition("@")[2]
        if hostport.startswith("["):
            end = hostport.index("]") + 1
            host, port = hostport[:end], hostport[end + 1 :]
        else:
            host, _, port = hostport.partition(":")
        transport = param.partition("=")[2].lower() or None
        return SipFacts(
            uri=self.uri,
            host=host,
            port=int(port) if port else SIP_DEFAULT_PORT,
            port_given=bool(port),
            transport=transport,
            tls=transport == "tls",
            media="udp",
            caller_id=f"{from_}@{SIP_CALLER_DOMAIN}" if from_ else None,
        )

    @classmethod
    def from_dict(cls, obj: object) -> SipEndpoint:
        data = _typed_endpoint(obj, cls.TYPE, cls.FIELDS)
        _present("endpoint.uri", data, "uri")
        return cls(data["uri"])


@dataclass(frozen=True)
class WebsocketEndpoint:
    """bridge itself, or any websocket server; ``content_type`` None lets Vonage pick 16 kHz.

    ``headers`` is kept as a read-only copy (excluded from hashing: mappings are unhashable).
    """

    uri: str
    content_type: str | None = None
    headers: Mapping[str, Any] | None = field(default=None, hash=False)
    authorization: Authorization | None = None

    TYPE: ClassVar[str] = "websocket"
    FIELDS: ClassVar[tuple[str, ...]] = ("type", "uri", "content-type", "headers", "authorization")

    def __post_init__(self) -> None:
        _check_websocket_uri("endpoint.uri", self.uri)
        if self.content_type is not None and self.content_type not in CONTENT_TYPES:
            raise EndpointError(
                "endpoint.content-type",
                f"must be one of {', '.join(CONTENT_TYPES)}, got {_show(self.content_type)}",
            )
        if self.headers is not None:
            object.__setattr__(self, "headers", _check_headers("endpoint.headers", self.headers))
        if self.authorization is not None and not isinstance(self.authorization, Authorization):
            raise EndpointError(
                "endpoint.authorization",
                f"must be an Authorization, got {type(self.authorization).__name__}",
            )

    @property
    def sample_rate(self) -> int | None:
        """The requested rate, or None when Vonage's default (16000) applies."""
        if self.content_type is None:
            return None
        return rate_of(self.content_type)

    def to_dict(self) -> JSONObject:
        out: JSONObject = {"type": "websocket", "uri": self.uri}
        if self.content_type is not None:
            out["content-type"] = self.content_type  # never "contentType" (docs/protocol.md s.2)
        if self.headers is not None:
            out["headers"] = json.loads(json.dumps(dict(self.headers)))
        if self.authorization is not None:
            out["authorization"] = self.authorization.to_dict()
        return out

    def explain(self, from_: str | None = None) -> WebsocketFacts:
        """What Vonage does with this endpoint (``from_`` plays no part for a websocket)."""
        rate = self.sample_rate or VONAGE_DEFAULT_RATE
        headers = dict(self.headers or {})
        return WebsocketFacts(
            uri=self.uri,
            tls=self.uri.startswith("wss://"),
            rate=rate,
            rate_given=self.sample_rate is not None,
            bytes_per_frame=frame_bytes(rate),
            headers=MappingProxyType(headers),
            headers_bytes=len(_compact_json(headers)) if headers else 0,
            headers_limit=MAX_HEADERS_BYTES,
            authorization=None if self.authorization is None else self.authorization.type,
        )

    @classmethod
    def from_dict(cls, obj: object) -> WebsocketEndpoint:
        data = _typed_endpoint(obj, cls.TYPE, cls.FIELDS)
        _present("endpoint.uri", data, "uri")
        content_type = data.get("content-type")
        if content_type is not None:
            _require_str("endpoint.content-type", content_type)
        headers = data.get("headers")
        if "headers" in data and headers is None:
            raise EndpointError("endpoint.headers", "must be a JSON object, got null")
        auth = data.get("authorization")
        return cls(
            data["uri"],
            content_type=content_type,
            headers=headers,
            authorization=None if auth is None else Authorization.from_dict(auth),
        )


@dataclass(frozen=True)
class VbcEndpoint:
    """A Vonage Business Cloud extension (inbound calls on a VBC programmable number)."""

    extension: str

    TYPE: ClassVar[str] = "vbc"
    FIELDS: ClassVar[tuple[str, ...]] = ("type", "extension")

    def __post_init__(self) -> None:
        extension = _require_str("endpoint.extension", self.extension)
        if not _VBC_EXTENSION.fullmatch(extension):
            raise EndpointError(
                "endpoint.extension", f"must be 1 to 10 digits, got {_show(extension)}"
            )

    def to_dict(self) -> JSONObject:
        return {"type": "vbc", "extension": self.extension}

    def explain(self, from_: str | None = None) -> VbcFacts:
        """What Vonage does with this endpoint."""
        return VbcFacts(extension=self.extension)

    @classmethod
    def from_dict(cls, obj: object) -> VbcEndpoint:
        data = _typed_endpoint(obj, cls.TYPE, cls.FIELDS)
        _present("endpoint.extension", data, "extension")
        return cls(data["extension"])


Endpoint: TypeAlias = PhoneEndpoint | SipEndpoint | WebsocketEndpoint | VbcEndpoint
ENDPOINT_TYPES: dict[str, type[Endpoint]] = {
    cls.TYPE: cls for cls in (PhoneEndpoint, SipEndpoint, WebsocketEndpoint, VbcEndpoint)
}


def _typed_endpoint(obj: object, kind: str, known: Sequence[str]) -> Mapping[str, Any]:
    data = _require_mapping("endpoint", obj)
    if data.get("type") != kind:
        raise EndpointError("endpoint.type", f"must be {kind!r}, got {_show(data.get('type'))}")
    _check_keys("endpoint", data, known, f"a {kind} endpoint")
    return data


def _present(field_name: str, data: Mapping[str, Any], key: str) -> None:
    if key not in data:
        raise EndpointError(field_name, "is required")


def endpoint_from_dict(obj: object) -> Endpoint:
    """Parse one endpoint object, dispatching on its ``type``."""
    data = _require_mapping("endpoint", obj)
    kind = data.get("type")
    cls = ENDPOINT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EndpointError(
            "endpoint.type", f"must be one of {', '.join(ENDPOINT_TYPES)}, got {_show(kind)}"
        )
    return cls.from_dict(data)


# --- the connect action ----------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """The ``connect`` action: one endpoint, plus how Vonage reports on the leg.

    ``from_`` is ``from`` in JSON (a Python keyword). Required for phone and SIP endpoints,
    where it must be a Vonage number of the account; checked as E.164 whenever given.
    """

    endpoint: Endpoint
    from_: str | None = None
    event_type: Literal["synchronous"] | None = None
    event_url: tuple[str, ...] | None = None
    event_method: Literal["GET", "POST"] | None = None
    timeout: int | None = None
    limit: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "action",
        "endpoint",
        "from",
        "eventType",
        "eventUrl",
        "eventMethod",
        "timeout",
        "limit",
    )

    def __post_init__(self) -> None:
        endpoint: object = self.endpoint
        if isinstance(endpoint, (list, tuple)):
            raise EndpointError(
                "connect.endpoint", f"takes exactly one endpoint, got {len(endpoint)}"
            )
        if not isinstance(endpoint, tuple(ENDPOINT_TYPES.values())):
            raise EndpointError(
                "connect.endpoint", f"must be an endpoint, got {type(endpoint).__name__}"
            )
        if self.from_ is not None:
            _check_e164("connect.from", self.from_)
        elif isinstance(endpoint, (PhoneEndpoint, SipEndpoint)):
            raise EndpointError(
                "connect.from",
                f"is required for a {endpoint.TYPE} endpoint: a Vonage number of the "
                "account, E.164 without '+'",
            )
        if self.event_type is not None and self.event_type != "synchronous":
            raise EndpointError(
                "connect.eventType", f"must be 'synchronous', got {_show(self.event_type)}"
            )
        if self.event_url is not None:
            urls: object = self.event_url
            if isinstance(urls, str) or not isinstance(urls, Sequence) or len(urls) != 1:
                raise EndpointError(
                    "connect.eventUrl", f"must be a list of exactly one URL, got {_show(urls)}"
                )
            _check_url("connect.eventUrl", urls[0], ("http", "https"))
            object.__setattr__(self, "event_url", tuple(urls))
        if self.event_method is not None and self.event_method not in EVENT_METHODS:
            raise EndpointError(
                "connect.eventMethod", f"must be GET or POST, got {_show(self.event_method)}"
            )
        if self.timeout is not None and _require_int("connect.timeout", self.timeout) < 1:
            raise EndpointError(
                "connect.timeout", f"must be a positive number of seconds, got {self.timeout}"
            )
        if self.limit is not None and not 1 <= _require_int("connect.limit", self.limit) <= (
            MAX_LEG_S
        ):
            raise EndpointError(
                "connect.limit", f"must be 1 to {MAX_LEG_S} seconds, got {self.limit}"
            )

    def to_dict(self) -> JSONObject:
        out: JSONObject = {"action": "connect"}
        if self.event_type is not None:
            out["eventType"] = self.event_type
        if self.event_url is not None:
            out["eventUrl"] = list(self.event_url)
        if self.event_method is not None:
            out["eventMethod"] = self.event_method
        if self.from_ is not None:
            out["from"] = self.from_
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.limit is not None:
            out["limit"] = self.limit
        out["endpoint"] = [self.endpoint.to_dict()]
        return out

    def explain(self) -> EndpointFacts:
        """What Vonage will do with this action's endpoint (host, port, caller ID, rate...);
        ``.lines()`` on the result says it in plain words (``bridge ncco --explain``)."""
        return self.endpoint.explain(self.from_)

    @classmethod
    def from_dict(cls, obj: object) -> Connect:
        data = _require_mapping("connect", obj)
        if data.get("action") != "connect":
            raise EndpointError(
                "connect.action", f"must be 'connect', got {_show(data.get('action'))}"
            )
        _check_keys("connect", data, cls.FIELDS, "the connect action")
        endpoints = data.get("endpoint")
        if not isinstance(endpoints, list):
            raise EndpointError(
                "connect.endpoint", f"must be a list of one endpoint, got {_show(endpoints)}"
            )
        if len(endpoints) != 1:
            raise EndpointError(
                "connect.endpoint", f"takes exactly one endpoint, got {len(endpoints)}"
            )
        event_url = data.get("eventUrl")
        if event_url is not None and not isinstance(event_url, list):
            raise EndpointError(
                "connect.eventUrl", f"must be a list of exactly one URL, got {_show(event_url)}"
            )
        return cls(
            endpoint_from_dict(endpoints[0]),
            from_=data.get("from"),
            event_type=data.get("eventType"),
            event_url=None if event_url is None else tuple(event_url),
            event_method=data.get("eventMethod"),
            timeout=data.get("timeout"),
            limit=data.get("limit"),
        )


# --- whole NCCOs ---------------------------------------------------------------------------


def ncco(*actions: Connect | Mapping[str, Any]) -> list[JSONObject]:
    """An NCCO (a JSON list) from validated actions; other actions pass as plain mappings."""
    if not actions:
        raise EndpointError("ncco", "must have at least one action")
    out: list[JSONObject] = []
    for action in actions:
        out.append(action.to_dict() if isinstance(action, Connect) else dict(action))
    validate_ncco(out)
    return out


def validate_ncco(obj: object) -> list[Connect]:
    """Check an NCCO; return its ``connect`` actions, parsed, in order.

    Only ``connect`` is modelled; any other action must merely be an object with a string
    ``action`` (bridge has no opinion on ``talk`` or ``record``). Errors are prefixed with
    the action's index: ``ncco[1].endpoint.number: ...``.
    """
    if not isinstance(obj, list):
        raise EndpointError("ncco", f"must be a JSON list of actions, got {type(obj).__name__}")
    if not obj:
        raise EndpointError("ncco", "must have at least one action")
    connects: list[Connect] = []
    for index, action in enumerate(obj):
        where = f"ncco[{index}]"
        if not isinstance(action, Mapping):
            raise EndpointError(where, f"must be a JSON object, got {type(action).__name__}")
        name = action.get("action")
        if not isinstance(name, str) or not name:
            raise EndpointError(f"{where}.action", f"must be a string, got {_show(name)}")
        if name != "connect":
            continue
        try:
            connects.append(Connect.from_dict(action))
        except EndpointError as exc:
            field_name = exc.field.removeprefix("connect.").removeprefix("connect")
            path = f"{where}.{field_name}" if field_name else where
            raise EndpointError(path, exc.rule) from exc
    return connects


def bridge_authorization(*, signed: bool, token: str | None) -> Authorization | None:
    """How Vonage must authenticate its websocket to a bridge with these credentials.

    ``signed`` (the bridge has ``--vonage-signature-secret``): ``{"type": "vonage"}``, Vonage
    signs the upgrade with that secret; it wins over a token, which the bridge then also
    accepts. ``token`` alone: ``{"type": "custom", "value": "Bearer TOKEN"}``, a header rather
    than the query string (query strings end up in proxy logs). Neither: no ``authorization``.
    """
    if signed:
        return Authorization("vonage")
    if token:
        return Authorization("custom", f"Bearer {token}")
    return None


def websocket_ncco(  # noqa: PLR0917 - the signature the server's /answer handler calls
    uri: str,
    rate: int,
    headers: Mapping[str, Any] | None,
    authorization: Authorization | None,
    event_url: str | None,
    event_method: str = "GET",
    *,
    from_: str | None = None,
) -> list[JSONObject]:
    """The one builder of bridge's answer: connect the call to the websocket at ``uri``.

    Both ``bridge ncco --websocket`` and the server's ``GET /answer`` return what this
    builds, so what a person pastes into a Vonage application and what bridge answers itself
    are the same document for the same settings (see :func:`bridge_authorization`).

    With an ``event_url`` the connect is ``synchronous`` (docs/protocol.md s.1), so that when
    bridge closes the socket the NCCO returned by the event webhook decides what happens next;
    ``event_method`` is only written alongside it (without one, the application's own event
    URL and method apply). Empty ``headers`` are left out.
    """
    if rate not in SUPPORTED_RATES:
        raise EndpointError("rate", f"must be one of {rates_text()}, got {_show(rate)}")
    if event_method not in EVENT_METHODS:
        raise EndpointError(
            "connect.eventMethod", f"must be GET or POST, got {_show(event_method)}"
        )
    endpoint = WebsocketEndpoint(
        uri,
        content_type=content_type(rate),
        headers=headers or None,
        authorization=authorization,
    )
    method: Literal["GET", "POST"] = "POST" if event_method == "POST" else "GET"
    connect = Connect(
        endpoint,
        from_=from_,
        event_type="synchronous" if event_url is not None else None,
        event_url=(event_url,) if event_url is not None else None,
        event_method=method if event_url is not None else None,
    )
    return ncco(connect)
