"""The fuzzer's inputs: hostile bytes for every layer, each with what bridge must do with it.

Every generator here is deterministic for a seed and yields *sessions*: one TCP connection's
worth of inputs. An input is counted once, in its layer; what must follow it is its
expectation (``OPEN``: the connection stays usable; a set of close codes; ``ANY``: any
documented close code or staying open; for the HTTP layer, ``101`` or ``NOT_101``).

Expectations come from two places, never from the server under test: the RFC (websocket
framing: bad opcodes, masks, lengths, UTF-8, control frames) and bridge's sans-I/O parsers run
here, in the fuzzer's process (``bridge.protocol``: what a message means; the close code is
the README's table, ``bridge.server.CLOSE_CODES``). So the live server is checked against its
documented behaviour and against its own parsers; the parsers themselves are checked by the
property-based tests (tests/unit/test_properties.py).

Import rule: the standard library and ``bridge`` (sans-I/O modules, ``bridge.server`` for its
table of close codes).
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bridge.carriers import CarrierSession
from bridge.errors import PeerError
from bridge.protocol.carrier import Stopped
from bridge.protocol.vonage import build_connected, parse_event
from bridge.server import CLOSE_CODES
from bridge.sim.carrier_peer import CarrierPeer, PeerOptions
from bridge.units import SUPPORTED_RATES, content_type

OPEN = "open"
ANY = "any"
HTTP_101 = "101"
NOT_101 = "not 101"
#: The close codes bridge documents (README, "Bad input"; a peer's own close is echoed).
DOCUMENTED = frozenset({1000, 1002, 1003, 1007, 1008, 1009})
#: The fuzz server's --max-message-bytes: large enough for 1 MB JSON strings to be parsed.
MAX_MESSAGE_BYTES = 2 << 20
#: A session's inputs stop growing past this many bytes (then one read's work stays small).
BATCH_BYTES = 32 << 10

Expect = str | frozenset[int]


@dataclass
class Input:
    layer: str
    data: bytes
    expect: Expect


@dataclass
class Session:
    """One connection: an upgrade to ``path`` (or ``raw`` bytes instead), a prelude, inputs."""

    path: str = "/socket"
    prelude: bytes = b""
    inputs: list[Input] = field(default_factory=list)
    #: HTTP layer: these bytes replace the whole upgrade; ``raw_expect`` is its oracle.
    raw: bytes | None = None
    raw_expect: str = ANY
    raw_layer: str = ""
    #: What the input is (an HTTP mutation's name), for the report's examples.
    note: str = ""


# --- websocket frames, as a client sends them ---------------------------------------------


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
    long_form: int = 0,
) -> bytes:
    """One frame; ``length`` lies about the payload's size, ``long_form`` forces a 16- (2) or
    64-bit (8) length field for a short payload (a non-minimal encoding)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if long_form == 8 or n >= 65536:
        head = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    elif long_form == 2 or n >= 126:
        head = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | n))
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def _mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    whole = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(whole, "big")).to_bytes(len(data), "big")


def text(message: str | bytes) -> bytes:
    return frame(1, message.encode() if isinstance(message, str) else message)


def binary(payload: bytes) -> bytes:
    return frame(2, payload)


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return frame(8, payload)


def upgrade(path: str, extra: str = "", key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


# --- hostile JSON values -------------------------------------------------------------------

#: Raw JSON tokens that ``json.dumps`` would not write: out-of-range and non-finite numbers,
#: an integer past Python's 4300-digit limit.
RAW_TOKENS = (
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" * 5000,
    "4.9e-400",
    "123456789012345678901234567890",
)


def hostile_values(rng: random.Random) -> list[Any]:
    """Values of every JSON type, edge sizes included, for any field."""
    deep: Any = "x"
    for _ in range(60):
        deep = [deep]
    values: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        1,
        5,
        2**31,
        2**63,
        -(2**63) - 1,
        1.5,
        -0.0,
        1e308,
        "",
        " ",
        "5",
        "#",
        "55",
        "x" * 300,
        "\u0000",
        "\ud800",
        "\u202e\u0645",
        "../../etc/passwd",
        "%s%n",
        [],
        {},
        [1, 2],
        {"a": {"b": None}},
        deep,
        {"digit": "5"},
    ]
    values += [f"@RAW{i}@" for i in range(len(RAW_TOKENS))]
    values.append("@MB@")  # a 1 MB string, placed by dumps_hostile
    rng.shuffle(values)
    return values


_ONE_MB_JSON = json.dumps("A" * (1 << 20))


def dumps_hostile(obj: Any) -> str:
    """JSON text, with the ``@RAW<i>@`` and ``@MB@`` placeholders made real."""
    out = json.dumps(obj, separators=(",", ":"))
    if "@" not in out:
        return out
    for i, token in enumerate(RAW_TOKENS):
        out = out.replace(f'"@RAW{i}@"', token)
    return out.replace('"@MB@"', _ONE_MB_JSON)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a template (``()`` is the whole message)."""
    out: list[tuple[Any, ...]] = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += paths(value, (*prefix, key))
    return out


def mutated(template: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    """A copy of ``template`` with the value at ``path`` replaced (or deleted)."""
    if not path:
        return value
    copy = json.loads(json.dumps(template))
    node = copy
    for key in path[:-1]:
        node = node[key]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return copy


def field_mutations(templates: list[Any], rng: random.Random) -> Iterator[str]:
    """Every field of every template with every hostile value (and deleted), then random
    combinations of two or three, forever."""
    values = hostile_values(rng)
    for template in templates:
        for path in paths(template):
            if path:
                yield dumps_hostile(mutated(template, path, None, delete=True))
            for value in values:
                yield dumps_hostile(mutated(template, path, value))
    # 1 MB strings were in every field above; from here on one message in a thousand.
    common = [v for v in values if v != "@MB@"]
    while True:
        template = rng.choice(templates)
        obj = template
        every = paths(template)[1:] or [()]  # the whole message was replaced above, enough
        pool = values if rng.random() < 0.001 else common
        for path in rng.sample(every, min(len(every), rng.randint(1, 3))):
            try:
                obj = mutated(obj, path, rng.choice(pool))
            except (KeyError, TypeError, IndexError):
                break
        yield dumps_hostile(obj)


def deep_json(rng: random.Random) -> str:
    depth = rng.choice((10, 100, 900, 1100, 5000, 100_000))
    inner = "[" * depth + "]" * depth
    return '{"event":"websocket:notify","payload":' + inner + "}"


# --- the Vonage call layer -------------------------------------------------------------------

VONAGE_TEMPLATES: list[Any] = [
    {"event": "websocket:dtmf", "digit": "5", "duration": 260},
    {"event": "websocket:dtmf", "dtmf": {"digit": "#", "duration": 100}},
    {"event": "websocket:cleared"},
    {"event": "websocket:notify", "payload": {"name": "prompt-1", "n": 3}},
    {"event": "websocket:connected", "content-type": content_type(16000)},
    {"event": "something-new", "data": {"x": 1}},
]


def vonage_expect(message: str) -> Expect:
    """What bridge must do with a text message on an open Vonage call (its parser, here)."""
    if len(message.encode()) > MAX_MESSAGE_BYTES:
        return frozenset({1009})
    try:
        parse_event(message)
    except PeerError as exc:
        return frozenset({CLOSE_CODES[exc.fault]})
    return OPEN


def vonage_prelude(rate: int) -> bytes:
    return text(build_connected(rate, {"call_id": "fuzz"}))


# --- the carriers ---------------------------------------------------------------------------

CARRIER_RATES = {"twilio": 8000, "telnyx": 8000, "plivo": 8000, "exotel": 8000}


class CarrierOracle:
    """bridge's own session for the carrier, fed the same messages: what the server must do."""

    def __init__(self, carrier: str | None) -> None:
        self.session = CarrierSession(carrier, lambda _text: None, "")

    def expect(self, message: str) -> Expect:
        if len(message.encode()) > MAX_MESSAGE_BYTES:
            return frozenset({1009})
        try:
            items = self.session.feed(message)
        except PeerError as exc:
            return frozenset({CLOSE_CODES[exc.fault]})
        if any(isinstance(item, Stopped) for item in items):
            return frozenset({1000})
        return OPEN


def carrier_templates(carrier: str) -> tuple[list[str], list[Any]]:
    """The carrier's opening messages, and templates of everything it sends after them."""
    peer = CarrierPeer(PeerOptions(carrier=carrier, rate=CARRIER_RATES[carrier]))
    opening = peer.opening()
    later = [json.loads(m) for m in peer.frame(bytes(peer.frame_wire_bytes))]
    if carrier == "exotel":
        for _ in range(20):
            later += [json.loads(m) for m in peer.frame(bytes(peer.frame_wire_bytes))]
    later += [json.loads(peer.dtmf("5")), json.loads(peer.mark_done("m1"))]
    cleared = peer.cleared()
    if cleared is not None:
        later.append(json.loads(cleared))
    stop = peer.stop()
    if stop is not None:
        later.append(json.loads(stop))
    later += [json.loads(m) for m in opening]  # again, out of order
    return opening, later


def media_of(template: dict[str, Any], payload: bytes) -> str:
    obj = json.loads(json.dumps(template))
    obj["media"]["payload"] = base64.b64encode(payload).decode()
    return json.dumps(obj, separators=(",", ":"))


# --- generators: one per layer ---------------------------------------------------------------


class Layers:
    """Every layer's sessions (module doc); ``quota`` inputs per layer at most."""

    def __init__(self, seed: int, quota: dict[str, int], batch: int = 200) -> None:
        self.rng = random.Random(seed)
        self.quota = quota
        self.batch = batch

    def all(self) -> Iterator[tuple[str, Iterator[Session]]]:
        for name, make in (
            ("http_raw", self.http_raw),
            ("http_headers", self.http_headers),
            ("http_during_upgrade", self.during_upgrade),
            ("ws_opcodes", self.ws_opcodes),
            ("ws_masks_rsv", self.ws_masks),
            ("ws_lengths", self.ws_lengths),
            ("ws_fragments", self.ws_fragments),
            ("ws_utf8", self.ws_utf8),
            ("vonage_json", self.vonage_json),
            ("vonage_binary", self.vonage_binary),
            ("vonage_order", self.vonage_order),
            *[(f"carrier_{c}", lambda c=c: self.carrier(c)) for c in CARRIER_RATES],
        ):
            if self.quota.get(name, 0) > 0:
                yield name, make()

    # --- HTTP: before and during the upgrade ------------------------------------------------

    def http_raw(self) -> Iterator[Session]:
        rng = self.rng
        n = self.quota["http_raw"]
        valid = upgrade("/socket")
        for i in range(n):
            kind = i % 6
            if kind == 0:
                data = os.urandom(rng.randint(1, 2048))
                expect = ANY
            elif kind == 1:  # a valid request cut anywhere: the server waits, then drops it
                data = valid[: rng.randint(1, len(valid) - 3)]
                expect = ANY
            elif kind == 2:  # a valid request with one byte flipped
                b = bytearray(valid)
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                data = bytes(b)
                expect = ANY
            elif kind == 3:  # TLS, HTTP/2 and SSH greetings on the plain port
                data = rng.choice(
                    (
                        bytes.fromhex("16030100a5010000a10303") + os.urandom(160),
                        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                        b"SSH-2.0-OpenSSH_9.6\r\n",
                        b"\r\n\r\n",
                        b"\x00" * 64 + b"\r\n\r\n",
                    )
                )
                expect = NOT_101
            elif kind == 4:  # random printable lines ending the head
                lines = ["".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 80)))]
                data = ("\r\n".join(lines) + "\r\n\r\n").encode()
                expect = NOT_101
            else:  # request lines with every method and odd targets
                method = rng.choice(("POST", "PUT", "HEAD", "OPTIONS", "CONNECT", "get", "G E T"))
                data = upgrade("/socket").replace(b"GET", method.encode(), 1)
                expect = NOT_101
            yield Session(raw=data, raw_expect=expect, raw_layer="http_raw")

    def http_headers(self) -> Iterator[Session]:
        rng = self.rng
        n = self.quota["http_headers"]
        mutations: list[tuple[str, Any]] = [
            ("no key", lambda: upgrade("/socket").replace(b"Sec-WebSocket-Key", b"X-Key")),
            ("bad key", lambda: upgrade("/socket", key=rng.choice(("", "abc", "!" * 24)))),
            ("version 8", lambda: upgrade("/socket").replace(b"Version: 13", b"Version: 8")),
            ("no upgrade", lambda: upgrade("/socket").replace(b"Upgrade: websocket\r\n", b"")),
            ("upgrade h2c", lambda: upgrade("/socket").replace(b"websocket", b"h2c")),
            ("no connection", lambda: upgrade("/socket").replace(b"Connection: Upgrade", b"X: y")),
            ("http/1.0", lambda: upgrade("/socket").replace(b"HTTP/1.1", b"HTTP/1.0")),
            (
                "two keys",
                lambda: upgrade("/socket", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
            ),
            ("huge head", lambda: upgrade("/socket", f"X-Big: {'v' * 70000}\r\n")),
            (
                "many headers",
                lambda: upgrade(
                    "/socket", "".join(f"X-{i}: v\r\n" for i in range(rng.choice((130, 600))))
                ),
            ),
            ("no colon", lambda: upgrade("/socket", "NoColonHere\r\n")),
            ("nul", lambda: upgrade("/socket", "X-Nul: a\x00b\r\n")),
            ("huge path", lambda: upgrade("/socket?" + "a=" + "b" * 70000)),
        ]
        #: Not valid HTTP, but a server may read them leniently (RFC 9112 s.2.2, s.5.2).
        lax: list[tuple[str, Any]] = [
            ("obs-fold", lambda: upgrade("/socket", "X-Fold: a\r\n  folded\r\n")),
            ("space name", lambda: upgrade("/socket", "X Bad: a\r\n")),
            ("lf only", lambda: upgrade("/socket").replace(b"\r\n", b"\n")),
            ("long path", lambda: upgrade("/socket?" + "a=" + "b" * 5000)),
            ("9 KB value", lambda: upgrade("/socket", f"X-Big: {'v' * 9000}\r\n")),
            (
                "latin-1 value",
                lambda: upgrade("/socket", "X-Name: caf\xe9\r\n").replace(
                    b"caf\xc3\xa9", b"caf\xe9"
                ),
            ),
            ("8-bit host", lambda: upgrade("/socket").replace(b"127.0.0.1", b"127.0.0.\xb1")),
        ]
        accepted: list[tuple[str, Any]] = [
            ("carrier path", lambda: upgrade(f"/socket/{rng.choice(list(CARRIER_RATES))}")),
            ("query", lambda: upgrade("/socket?call_id=%00%ff&x=" + "y" * 100)),
            ("extra headers", lambda: upgrade("/socket", "X-Forwarded-For: 1.2.3.4, ::1\r\n")),
            (
                "deflate offered",
                lambda: upgrade("/socket", "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            ),
            ("subprotocol", lambda: upgrade("/socket", "Sec-WebSocket-Protocol: a, b\r\n")),
        ]
        plain: list[tuple[str, Any]] = [
            (
                "other path",
                lambda: upgrade(rng.choice(("/", "/x", "/socket/", "/socket/vonage2", "/%2e%2e/"))),
            ),
            ("health", lambda: b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("metrics", lambda: b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("answer", lambda: b"GET /answer?from=1&to=2 HTTP/1.1\r\nHost: x\r\n\r\n"),
            (
                "event post",
                lambda: b'POST /event HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{"a":',
            ),
        ]
        for i in range(n):
            pick = i % 10
            if pick < 5:
                name, make = mutations[rng.randrange(len(mutations))]
                yield Session(raw=make(), raw_expect=NOT_101, raw_layer="http_headers", note=name)
            elif pick < 7:
                name, make = lax[rng.randrange(len(lax))]
                yield Session(raw=make(), raw_expect=ANY, raw_layer="http_headers", note=name)
            elif pick < 9:
                _, make = accepted[rng.randrange(len(accepted))]
                yield Session(raw=make(), raw_expect=HTTP_101, raw_layer="http_headers")
            else:
                _, make = plain[rng.randrange(len(plain))]
                yield Session(raw=make(), raw_expect=NOT_101, raw_layer="http_headers")

    def during_upgrade(self) -> Iterator[Session]:
        """A valid upgrade with more bytes in the same write, before the 101 came back."""
        rng = self.rng
        for i in range(self.quota["http_during_upgrade"]):
            kind = i % 4
            rate = rng.choice(SUPPORTED_RATES)
            expect: Expect
            if kind == 0:
                tail, expect = vonage_prelude(rate), OPEN
            elif kind == 1:
                tail, expect = os.urandom(rng.randint(1, 600)), ANY
            elif kind == 2:
                tail, expect = upgrade("/socket"), frozenset({1002})  # "GET ..." as a frame
            else:
                tail, expect = vonage_prelude(rate) + binary(bytes(rng.randint(0, 4096))), OPEN
            yield Session(
                raw=upgrade("/socket") + tail,
                raw_expect=HTTP_101,
                raw_layer="http_during_upgrade",
                inputs=[Input("", b"", expect)],
            )

    # --- the websocket layer, on an open call -------------------------------------------------

    def _ws_sessions(self, layer: str, make: Any) -> Iterator[Session]:
        """Sessions of ``self.batch`` inputs: ``make()`` gives ``(bytes, expect)``; a fatal
        one ends its session."""
        left = self.quota[layer]
        while left > 0:
            rate = self.rng.choice(SUPPORTED_RATES)
            session = Session(prelude=vonage_prelude(rate))
            size = 0
            while left > 0 and len(session.inputs) < self.batch and size < BATCH_BYTES:
                data, expect = make()
                session.inputs.append(Input(layer, data, expect))
                size += len(data)
                left -= 1
                if expect != OPEN:
                    break
            yield session

    def ws_opcodes(self) -> Iterator[Session]:
        rng = self.rng

        def make() -> tuple[bytes, Expect]:
            op = rng.randrange(16)
            payload = os.urandom(rng.choice((0, 1, 2, 10, 125, 126, 700)))
            if op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
                return frame(op, payload), frozenset({1002})
            if op == 0:
                return frame(0, payload), frozenset({1002})  # nothing to continue
            if op == 1:
                return text_case(rng)
            if op == 2:
                return binary(payload), OPEN
            if op == 8:
                return close_case(rng)
            if len(payload) > 125:
                return frame(op, payload), frozenset({1002})
            return frame(op, payload), OPEN  # ping (answered) or an unsolicited pong

        return self._ws_sessions("ws_opcodes", make)

    def ws_masks(self) -> Iterator[Session]:
        rng = self.rng

        def make() -> tuple[bytes, Expect]:
            op = rng.choice((1, 2, 9))
            payload = b"{}" if op == 1 else os.urandom(rng.randint(0, 120))
            if rng.random() < 0.5:
                return frame(op, payload, masked=False), frozenset({1002})
            return frame(op, payload, rsv=rng.randint(1, 7)), frozenset({1002})

        return self._ws_sessions("ws_masks_rsv", make)

    def ws_lengths(self) -> Iterator[Session]:
        rng = self.rng

        def make() -> tuple[bytes, Expect]:
            kind = rng.randrange(5)
            payload = os.urandom(rng.randint(0, 1000))
            if kind == 0:  # longer than what follows: the server waits for the rest
                return frame(2, payload, length=len(payload) + rng.randint(1, 5000)), ANY
            if kind == 1:  # shorter: the rest is read as the next frame's header
                return frame(2, payload + os.urandom(20), length=len(payload)), ANY
            if kind == 2:  # over --max-message-bytes, by the header alone
                n = rng.choice((MAX_MESSAGE_BYTES + 1, 1 << 40, (1 << 63) - 1))
                return frame(2, b"", length=n), frozenset({1009})
            if kind == 3:  # the length's top bit set (RFC 6455: it must be 0)
                return frame(2, b"", length=(1 << 63) + rng.randint(0, 100)), frozenset(
                    {1002, 1009}
                )
            small = payload[:100]  # a non-minimal length field (RFC 6455: "MUST" be minimal)
            return frame(2, small, long_form=rng.choice((2, 8))), ANY

        return self._ws_sessions("ws_lengths", make)

    def ws_fragments(self) -> Iterator[Session]:
        rng = self.rng

        def make() -> tuple[bytes, Expect]:
            kind = rng.randrange(6)
            body = json.dumps({"event": "websocket:notify", "payload": "x" * rng.randint(0, 300)})
            raw = body.encode()
            cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 4))))
            parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
            if kind == 0:  # text in fragments with pings and pongs between them: valid
                out = frame(1, parts[0], fin=False)
                for part in parts[1:-1]:
                    out += frame(9, b"p") + frame(0, part, fin=False) + frame(10, b"")
                return out + frame(9, b"q") + frame(0, parts[-1]), OPEN
            if kind == 1:  # binary in fragments: one message, echoed
                data = os.urandom(rng.randint(1, 3000))
                half = len(data) // 2
                return frame(2, data[:half], fin=False) + frame(9, b"") + frame(
                    0, data[half:]
                ), OPEN
            if kind == 2:  # a new data frame inside a fragmented message
                return frame(1, parts[0], fin=False) + frame(rng.choice((1, 2)), b"x"), frozenset(
                    {1002}
                )
            if kind == 3:  # a fragmented control frame
                return frame(9, b"ab", fin=False), frozenset({1002})
            if kind == 4:  # fragments adding up past --max-message-bytes
                chunk = bytes(1 << 20)
                return (
                    frame(2, chunk, fin=False) + frame(0, chunk, fin=False) + frame(0, b"xyz")
                ), frozenset({1009})
            # a close frame between fragments: ends the call cleanly
            return frame(1, parts[0], fin=False) + close_frame(1000), frozenset({1000})

        return self._ws_sessions("ws_fragments", make)

    def ws_utf8(self) -> Iterator[Session]:
        rng = self.rng
        bad = (b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf")

        def make() -> tuple[bytes, Expect]:
            body = b'{"event":"x","v":"' + rng.choice(bad) + b'"}'
            if rng.random() < 0.5:
                return frame(1, body), frozenset({1007})
            half = rng.randint(1, len(body) - 1)
            return frame(1, body[:half], fin=False) + frame(0, body[half:]), frozenset({1007})

        return self._ws_sessions("ws_utf8", make)

    # --- the Vonage call: events and audio -----------------------------------------------------

    def vonage_json(self) -> Iterator[Session]:
        rng = self.rng
        messages = field_mutations(VONAGE_TEMPLATES, rng)

        def make() -> tuple[bytes, Expect]:
            r = rng.random()
            message = deep_json(rng) if r < 0.01 else next(messages)
            if r > 0.995:  # the same, with its text split over fragments
                raw = message.encode()
                return frame(1, raw[:1], fin=False) + frame(0, raw[1:]), vonage_expect(message)
            return text(message), vonage_expect(message)

        return self._ws_sessions("vonage_json", make)

    def vonage_binary(self) -> Iterator[Session]:
        lengths = iter(range(1 << 62))

        def make() -> tuple[bytes, Expect]:
            n = next(lengths) % 4097  # every length 0-4096, in turn
            return binary(os.urandom(n) if n % 7 else bytes(n)), OPEN

        return self._ws_sessions("vonage_binary", make)

    def vonage_order(self) -> Iterator[Session]:
        """Events out of order: before the first message, twice, answers never asked for."""
        rng = self.rng
        left = self.quota["vonage_order"]
        while left > 0:
            kind = rng.randrange(5)
            if kind == 0:  # audio before websocket:connected (not --lenient)
                s = Session(inputs=[Input("vonage_order", binary(bytes(640)), frozenset({1002}))])
            elif kind == 1:  # a DTMF event as the first message
                first = json.dumps({"event": "websocket:dtmf", "digit": "1"})
                s = Session(inputs=[Input("vonage_order", text(first), frozenset({1003}))])
            elif kind == 2:  # connected twice, cleared and notify answers never asked for
                s = Session(prelude=vonage_prelude(16000))
                for message in (
                    build_connected(8000),
                    '{"event":"websocket:cleared"}',
                    '{"event":"websocket:notify","payload":{"never":"sent"}}',
                    '{"event":"websocket:cleared"}',
                ):
                    s.inputs.append(Input("vonage_order", text(message), OPEN))
            elif kind == 3:  # a carrier's messages on a Vonage call
                s = Session(prelude=vonage_prelude(8000))
                for message in carrier_templates(rng.choice(list(CARRIER_RATES)))[0]:
                    s.inputs.append(Input("vonage_order", text(message), OPEN))
            else:  # Vonage's first message on a carrier's path
                s = Session(
                    path=f"/socket/{rng.choice(list(CARRIER_RATES))}",
                    inputs=[Input("vonage_order", vonage_prelude(16000), frozenset({1008}))],
                )
            left -= len(s.inputs)
            yield s

    # --- the carriers -------------------------------------------------------------------------

    def carrier(self, carrier: str) -> Iterator[Session]:
        rng = self.rng
        layer = f"carrier_{carrier}"
        opening, later = carrier_templates(carrier)
        media_template = next(m for m in later if m.get("event") == "media")
        messages = field_mutations([*[json.loads(m) for m in opening], *later], rng)
        lengths = iter(range(1 << 62))
        left = self.quota[layer]
        while left > 0:
            forced = rng.random() < 0.5
            path = f"/socket/{carrier}" if forced else "/socket"
            oracle = CarrierOracle(carrier if forced else None)
            session = Session(path=path)
            # The opening goes through the oracle as inputs too: a mutated start is an input.
            for message in opening:
                expect = oracle.expect(message)
                session.prelude += text(message)
                if expect != OPEN:
                    raise AssertionError(f"{carrier}'s own opening refused: {expect}")
            size = 0
            while left > 0 and len(session.inputs) < self.batch and size < BATCH_BYTES:
                r = rng.random()
                if r < 0.4:  # media of every payload length 0-4096
                    n = next(lengths) % 4097
                    message = media_of(media_template, os.urandom(n))
                elif r < 0.42:
                    data = binary(bytes(160))  # audio as a binary frame on a JSON socket
                    session.inputs.append(Input(layer, data, frozenset({1003})))
                    left -= 1
                    break
                else:
                    message = next(messages)
                expect = oracle.expect(message)
                session.inputs.append(Input(layer, text(message), expect))
                size += len(message)
                left -= 1
                if expect != OPEN:
                    break
            yield session


def text_case(rng: random.Random) -> tuple[bytes, Expect]:
    """A text frame on an open Vonage call: an event, a non-JSON line, or not an object."""
    message = rng.choice(
        (
            '{"event":"websocket:dtmf","digit":"3"}',
            '{"event":"unknown"}',
            "not json",
            "[1,2]",
            '"string"',
            "",
        )
    )
    return text(message), vonage_expect(message)


def close_case(rng: random.Random) -> tuple[bytes, Expect]:
    """A close frame from the caller, valid or not (RFC 6455 s.5.5.1, s.7.4)."""
    kind = rng.randrange(5)
    if kind == 0:
        code = rng.choice((1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999))
        return close_frame(code, b"bye"), frozenset({code, 1000})
    if kind == 1:
        return close_frame(None), frozenset({1000, 1005})
    if kind == 2:  # codes no endpoint may send
        code = rng.choice((0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535))
        return close_frame(code), frozenset({1002})
    if kind == 3:  # a one-byte payload
        return frame(8, b"\x03"), frozenset({1002})
    return close_frame(1000, b"\xff\xfe"), frozenset({1002, 1007})  # a reason not UTF-8
