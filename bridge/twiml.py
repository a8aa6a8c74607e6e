"""TwiML that connects a Twilio call to a websocket: ``<Connect><Stream>`` (bidirectional).

``bridge twiml --stream wss://...`` prints it, and a server with ``--public-url`` answers
``GET /twiml`` with it (``bridge.http``); both are built by :func:`connect_stream`, the way
``bridge ncco`` and ``/answer`` share one NCCO builder.

Twilio's rules (docs/carriers.md s.2; "TwiML Voice: <Stream>",
https://www.twilio.com/docs/voice/twiml/stream): ``wss`` is the only protocol Twilio connects
with, and the ``url`` takes no query string, so per-call values go in ``<Parameter name
value>`` children, which arrive in the ``start`` message's ``customParameters``. With
``<Connect>`` Twilio runs no further TwiML until the websocket closes.

Import rule: standard library, ``bridge.errors`` and ``bridge.settings``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from bridge.errors import ConfigError
from bridge.settings import parse_pairs

CONTENT_TYPE = "text/xml"
#: Twilio webhook values ``/twiml`` passes on as ``<Parameter>``s (so they reach the handler
#: as metadata); the call's SID is in every ``start`` anyway.
CARRIED = {"From": "from", "To": "to"}


class TwimlError(ValueError):
    """A value Twilio would refuse."""


def connect_stream(
    url: str, params: Mapping[str, str] | None = None, name: str | None = None
) -> str:
    """The TwiML document, or ``TwimlError``."""
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.netloc:
        raise TwimlError(
            f"the stream URL must be wss://host/path (Twilio connects with wss only): {url!r}"
        )
    if parts.query or parts.fragment:
        raise TwimlError(
            "the stream URL takes no query string (Twilio drops it): pass values as --param"
        )
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<Response>", "  <Connect>"]
    attributes = f"url={quoteattr(url)}" + (f" name={quoteattr(name)}" if name else "")
    items = list((params or {}).items())
    if not items:
        lines.append(f"    <Stream {attributes} />")
    else:
        lines.append(f"    <Stream {attributes}>")
        for key, value in items:
            if not key:
                raise TwimlError("a <Parameter> needs a name")
            lines.append(f"      <Parameter name={quoteattr(key)} value={quoteattr(value)} />")
        lines.append("    </Stream>")
    lines += ["  </Connect>", "</Response>", ""]
    return "\n".join(lines)


def stream_url(public_url: str, path: str) -> str:
    """Our Twilio websocket as Twilio reaches it: ``--public-url`` + ``PATH/twilio``."""
    parts = urlsplit(public_url)
    return f"wss://{parts.netloc}{path}/twilio"


def answer_twiml(public_url: str, path: str, query: Mapping[str, str]) -> str:
    """``/twiml``: the stream to this server, carrying the webhook's From and To."""
    params = {ours: query[theirs] for theirs, ours in CARRIED.items() if query.get(theirs)}
    return connect_stream(stream_url(public_url, path), params)


# --- bridge twiml ------------------------------------------------------------------------


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "twiml",
        help="print TwiML that connects a Twilio call to a websocket (<Connect><Stream>)",
        description="Print the TwiML of a bidirectional Twilio Media Stream to --stream.",
    )
    parser.add_argument("--stream", required=True, metavar="URL", help="wss:// URL of bridge")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a <Parameter>: reaches the call's metadata (repeatable)",
    )
    parser.add_argument("--name", metavar="NAME", help="the stream's name")
    parser.set_defaults(func=run_twiml)


def run_twiml(args: argparse.Namespace) -> int:
    try:
        document = connect_stream(
            args.stream, parse_pairs(args.param, "--param", unique=True), args.name
        )
    except TwimlError as exc:
        raise ConfigError(str(exc)) from exc
    print(document, end="")
    return 0
