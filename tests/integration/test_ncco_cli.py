"""``bridge ncco`` as a user runs it: valid NCCOs on stdout, one-line errors with status 2.

In-process tests build the real parser when ``bridge.cli`` registers ``ncco``, and otherwise a
stand-in with the same parser class, so they run before and after the wiring. The subprocess
tests need the real ``bridge`` command, so they skip until ``ncco`` is registered.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bridge import cli
from bridge.endpoints import WebsocketEndpoint, validate_ncco
from bridge.errors import ConfigError
from bridge.ncco_cli import add_subcommand
from tests.helpers import run_bridge


def _ncco_registered() -> bool:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "ncco" in action.choices
    return False


REGISTERED = _ncco_registered()
needs_wiring = pytest.mark.skipif(
    not REGISTERED, reason="`ncco` is not yet registered in bridge.cli.build_parser()"
)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def _parser() -> argparse.ArgumentParser:
    if REGISTERED:
        return cli.build_parser()
    parser = cli.OneLineParser(prog="bridge")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, parser_class=cli.OneLineParser
    )
    add_subcommand(sub)
    return parser


def run_in_process(*args: str) -> Result:
    """Parse and run as ``bridge.cli.main`` does: ConfigError -> one line, status 2."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parsed = _parser().parse_args(["ncco", *args])
            try:
                code: int = parsed.func(parsed)
            except ConfigError as exc:
                sys.stderr.write(f"bridge: error: {exc}\n")
                code = 2
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*args: str) -> Result:
    done = run_bridge("ncco", *args)
    return Result(done.returncode, done.stdout, done.stderr)


RUNNERS = [
    pytest.param(run_in_process, id="in-process"),
    pytest.param(run_subprocess, id="subprocess", marks=needs_wiring),
]

VALID: list[tuple[str, list[str], dict[str, object]]] = [
    (
        "websocket, everything",
        [
            "--websocket",
            "wss://bridge.example.com/socket?call=abc",
            "--rate",
            "8000",
            "--header",
            "language=en-GB",
            "--header",
            "caller=447700900123",
            "--auth",
            "vonage",
            "--from",
            "447700900000",
            "--event-url",
            "https://bridge.example.com/event",
        ],
        {
            "action": "connect",
            "eventType": "synchronous",
            "eventUrl": ["https://bridge.example.com/event"],
            "eventMethod": "GET",
            "from": "447700900000",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://bridge.example.com/socket?call=abc",
                    "content-type": "audio/l16;rate=8000",
                    "headers": {"language": "en-GB", "caller": "447700900123"},
                    "authorization": {"type": "vonage"},
                }
            ],
        },
    ),
    (
        "websocket, default rate",
        ["--websocket", "ws://127.0.0.1:8080/socket"],
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "ws://127.0.0.1:8080/socket",
                    "content-type": "audio/l16;rate=16000",
                }
            ],
        },
    ),
    (
        "phone with dtmf answer, POST events",
        [
            "--phone",
            "447700900123",
            "--dtmf-answer",
            "p12#",
            "--from",
            "447700900000",
            "--event-url",
            "https://x.example/event",
            "--event-method",
            "post",
        ],
        {
            "action": "connect",
            "eventUrl": ["https://x.example/event"],
            "eventMethod": "POST",
            "from": "447700900000",
            "endpoint": [{"type": "phone", "number": "447700900123", "dtmfAnswer": "p12#"}],
        },
    ),
    (
        "sip over tls",
        ["--sip", "sip:alice@example.com;transport=tls", "--from", "447700900000"],
        {
            "action": "connect",
            "from": "447700900000",
            "endpoint": [{"type": "sip", "uri": "sip:alice@example.com;transport=tls"}],
        },
    ),
    (
        "vbc",
        ["--vbc", "1234"],
        {"action": "connect", "endpoint": [{"type": "vbc", "extension": "1234"}]},
    ),
]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(("args", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_ncco_is_printed_as_json(
    run: object, args: list[str], expected: dict[str, object]
) -> None:
    assert callable(run)
    result: Result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document == [expected]
    assert result.stdout.startswith("[\n  {")  # indented for a person to read
    validate_ncco(document)


@pytest.mark.parametrize("run", RUNNERS)
def test_websocket_ncco_validates_back_to_the_model(run: object) -> None:
    assert callable(run)
    result: Result = run("--websocket", "wss://b.example/socket", "--rate", "24000")
    (connect,) = validate_ncco(json.loads(result.stdout))
    assert connect.endpoint == WebsocketEndpoint("wss://b.example/socket", "audio/l16;rate=24000")


MISTAKES: list[tuple[str, list[str], str]] = [
    ("no endpoint", [], "one of the arguments --websocket --phone --sip --vbc is required"),
    ("two endpoints", ["--phone", "447700900123", "--vbc", "1"], "not allowed with"),
    ("number with +", ["--phone", "+447700900123", "--from", "447700900000"], "endpoint.number"),
    ("number leading 0", ["--phone", "0447700900123", "--from", "447700900000"], "E.164"),
    ("phone without from", ["--phone", "447700900123"], "connect.from"),
    (
        "bad dtmf answer",
        ["--phone", "447700900123", "--from", "447700900000", "--dtmf-answer", "12x"],
        "endpoint.dtmfAnswer",
    ),
    ("sip without user", ["--sip", "sip:example.com", "--from", "447700900000"], "endpoint.uri"),
    ("sip bad port", ["--sip", "sip:a@example.com:70000", "--from", "447700900000"], "port"),
    ("http websocket", ["--websocket", "http://x"], "endpoint.uri"),
    ("rate 44100", ["--websocket", "ws://x", "--rate", "44100"], "rate"),
    ("rate not a number", ["--websocket", "ws://x", "--rate", "fast"], "--rate"),
    ("header without =", ["--websocket", "ws://x", "--header", "novalue"], "--header"),
    ("header twice", ["--websocket", "ws://x", "--header", "a=1", "--header", "a=2"], "twice"),
    (
        "headers too big",
        ["--websocket", "ws://x", "--header", "k=" + "v" * 505],
        "endpoint.headers",
    ),
    ("reserved header", ["--websocket", "ws://x", "--header", "event=x"], "endpoint.headers.event"),
    ("custom auth", ["--websocket", "ws://x", "--auth", "custom"], "--auth"),
    ("empty token", ["--websocket", "ws://x", "--token", ""], "--token must not be empty"),
    (
        "auth and token",
        ["--websocket", "ws://x", "--auth", "vonage", "--token", "t"],
        "not allowed with",
    ),
    (
        "token with sip",
        ["--sip", "sip:a@b.example", "--from", "447700900000", "--token", "t"],
        "--token",
    ),
    (
        "rate with phone",
        ["--phone", "447700900123", "--rate", "8000"],
        "--rate applies only to --websocket",
    ),
    ("dtmf with websocket", ["--websocket", "ws://x", "--dtmf-answer", "1"], "--dtmf-answer"),
    ("bad from", ["--websocket", "ws://x", "--from", "12"], "connect.from"),
    ("bad event url", ["--vbc", "1", "--event-url", "ftp://x/e"], "connect.eventUrl"),
    (
        "event method alone",
        ["--vbc", "1", "--event-method", "GET"],
        "--event-method needs --event-url",
    ),
    (
        "event method PUT",
        ["--vbc", "1", "--event-url", "https://x/e", "--event-method", "PUT"],
        "--event-method",
    ),
    ("bad vbc", ["--vbc", "12a"], "endpoint.extension"),
]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    ("args", "needle"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistakes_print_one_line_and_exit_2(run: object, args: list[str], needle: str) -> None:
    assert callable(run)
    result: Result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bridge: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


EXPLAINED = [
    (
        ["--sip", "sip:alice@pbx.example.com;transport=tls", "--from", "447700900000"],
        [
            "host pbx.example.com, port 5060 (the default",
            "signalling over TLS",
            "media (RTP) over UDP",
            "the far end sees the caller as 447700900000@sip.nexmo.com",
        ],
    ),
    (
        ["--phone", "447700900123", "--from", "447700900000", "--dtmf-answer", "p1234#"],
        [
            "Vonage dials +447700900123",
            "caller ID +447700900000",
            "wait 500 ms, key 1 2 3 4 #",
            "pauses 500 ms in all",
        ],
    ),
    (
        ["--websocket", "wss://b.example.com/socket", "--rate", "24000", "--header", "lang=en"],
        ["24000 Hz", "960-byte frames", '{"lang":"en"} (13 of 512 bytes serialised)'],
    ),
    (["--vbc", "1234"], ["Vonage Business Cloud extension 1234"]),
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("args", "phrases"), EXPLAINED)
def test_explain_adds_what_vonage_will_do_after_the_same_ncco(
    runner: Callable[..., Result], args: list[str], phrases: list[str]
) -> None:
    plain = runner(*args)
    explained = runner(*args, "--explain")
    assert explained.returncode == 0, explained.stderr
    document, _, words = explained.stdout.partition("\n\nWhat Vonage will do:\n")
    assert json.loads(document) == json.loads(plain.stdout)  # the NCCO itself is unchanged
    for phrase in phrases:
        assert phrase in words
    assert "What Vonage will do" not in plain.stdout
