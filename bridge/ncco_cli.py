"""``bridge ncco``: print a validated NCCO that connects a call to one endpoint.

It exists so that a person setting up a Vonage application can paste an answer that is known
to be valid, and so that ``--websocket`` prints exactly what bridge's ``/answer`` webhook
returns for the same settings: both are built by :func:`bridge.endpoints.websocket_ncco`, and
``--auth vonage`` / ``--token`` ask for the socket authentication that a server with
``--vonage-signature-secret`` / ``--token`` asks for
(:func:`bridge.endpoints.bridge_authorization`). ``--explain`` adds, after the JSON, what
Vonage will do with it in plain words (the models' ``explain()``).

Every invalid value becomes a :class:`~bridge.errors.ConfigError`, which ``bridge.cli.main``
prints as one ``bridge: error: ...`` line with exit status 2.

Import rule: standard library, ``bridge.endpoints``, ``bridge.errors``, ``bridge.settings``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bridge.endpoints import (
    EVENT_METHODS,
    Connect,
    Endpoint,
    EndpointError,
    PhoneEndpoint,
    SipEndpoint,
    VbcEndpoint,
    bridge_authorization,
    ncco,
    validate_ncco,
    websocket_ncco,
)
from bridge.errors import ConfigError
from bridge.settings import parse_pairs

DEFAULT_RATE = 16000
# Options that only make sense with one endpoint type, and that type's option.
_ONLY_WITH: dict[str, str] = {
    "rate": "--websocket",
    "header": "--websocket",
    "auth": "--websocket",
    "token": "--websocket",
    "dtmf_answer": "--phone",
}


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``ncco``; it sets ``func(args) -> int`` like every other subcommand."""
    parser = subparsers.add_parser(
        "ncco",
        help="print a validated NCCO that connects a call to one endpoint",
        description=(
            "Print the NCCO (JSON) of one connect action. --websocket prints what bridge's "
            "/answer webhook returns; with --event-url that connect is synchronous."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--websocket", metavar="URI", help="ws:// or wss:// URI (e.g. bridge)")
    target.add_argument("--phone", metavar="NUMBER", help="E.164 without '+', e.g. 447700900123")
    target.add_argument("--sip", metavar="URI", help="sip:user@host[:port][;transport=tls]")
    target.add_argument("--vbc", metavar="EXT", help="a Vonage Business Cloud extension")
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        metavar="HZ",
        help=f"websocket audio rate: 8000, 16000 or 24000 (default {DEFAULT_RATE})",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="websocket header, sent in the first message (repeatable; 512 bytes in all)",
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--auth",
        choices=["vonage"],
        help="websocket: Vonage sends a signed JWT on the upgrade (a bridge with "
        "--vonage-signature-secret)",
    )
    auth.add_argument(
        "--token",
        metavar="TOKEN",
        help="websocket: Vonage sends 'Authorization: Bearer TOKEN' (a bridge with --token)",
    )
    parser.add_argument(
        "--dtmf-answer", metavar="DIGITS", help="phone: 0-9 * # p, keyed in on answer"
    )
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        help="caller id: a Vonage number of the account (required for --phone and --sip)",
    )
    parser.add_argument("--event-url", metavar="URL", help="http(s) URL for the leg's events")
    parser.add_argument(
        "--event-method",
        type=str.upper,
        choices=list(EVENT_METHODS),
        help="method for --event-url (websocket default GET; otherwise Vonage's, POST)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="after the NCCO, say in plain words what Vonage will do with it "
        "(host, port, caller ID, rate, header size...)",
    )
    parser.set_defaults(func=run_ncco)


def run_ncco(args: argparse.Namespace) -> int:
    """Print the NCCO as indented JSON; invalid values raise ``ConfigError``."""
    try:
        document = build_ncco(args)
    except EndpointError as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps(document, indent=2))
    if args.explain:
        print()
        print("What Vonage will do:")
        for connect in validate_ncco(document):
            for line in connect.explain().lines():
                print(f"  {line}")
    return 0


def build_ncco(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The NCCO for parsed arguments; raises ``ConfigError`` or ``EndpointError``."""
    chosen = next(
        option
        for option, value in (
            ("--websocket", args.websocket),
            ("--phone", args.phone),
            ("--sip", args.sip),
            ("--vbc", args.vbc),
        )
        if value is not None
    )
    for dest, owner in _ONLY_WITH.items():
        if owner != chosen and getattr(args, dest) not in (None, []):
            option = "--" + dest.replace("_", "-")
            raise ConfigError(f"{option} applies only to {owner}, not {chosen}")
    if args.token == "":
        raise ConfigError("--token must not be empty")
    if args.event_method is not None and args.event_url is None:
        raise ConfigError("--event-method needs --event-url")
    if args.websocket is not None:
        return websocket_ncco(
            args.websocket,
            DEFAULT_RATE if args.rate is None else args.rate,
            parse_pairs(args.header, "--header", unique=True),
            bridge_authorization(signed=args.auth == "vonage", token=args.token),
            args.event_url,
            args.event_method or "GET",
            from_=args.from_,
        )
    endpoint: Endpoint
    if args.phone is not None:
        endpoint = PhoneEndpoint(args.phone, dtmf_answer=args.dtmf_answer)
    elif args.sip is not None:
        endpoint = SipEndpoint(args.sip)
    else:
        endpoint = VbcEndpoint(args.vbc)
    connect = Connect(
        endpoint,
        from_=args.from_,
        event_url=None if args.event_url is None else (args.event_url,),
        event_method=args.event_method,
    )
    return ncco(connect)
