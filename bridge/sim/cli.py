"""``bridge call`` and ``bridge load``: the simulator's command lines; ``bridge agent``.

A mistake prints one line and exits 2 (``ConfigError``, turned into that by ``bridge.cli``);
a run whose call (or any call) did not complete exits 1.

Import rule: argparse, json, sys, ``bridge.errors``, ``bridge.pacing``, ``bridge.protocol``,
``bridge.runtime``, ``bridge.settings`` and ``bridge.sim``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from bridge.errors import ConfigError
from bridge.pacing import MonotonicClock
from bridge.protocol.carrier import CARRIER_NAMES
from bridge.runtime import freeze_startup_heap, run
from bridge.settings import parse_pairs
from bridge.sim.agent import add_agent_subcommand
from bridge.sim.bridge_view import BridgeWatch
from bridge.sim.call import SimulatedCall
from bridge.sim.html import check_report_path, write_report
from bridge.sim.load import LoadPart, LoadProcessError, run_load_part
from bridge.sim.options import CARRIER_RATE, CallOptions, Impairments, TurnOptions
from bridge.sim.reports import CallReport, LoadReport


def _add_call_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CallOptions("ws://x")
    parser.add_argument("url", help="websocket URL of the bridge, e.g. ws://127.0.0.1:8080/socket")
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        help=f"8000, 16000 or 24000 (default {defaults.rate}; with --carrier, 8000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults.seconds,
        help="seconds of audio to send (default %(default)s; with --turns, the turns decide)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a key of the first message, like an NCCO endpoint header (repeatable)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--wav",
        help="send this WAV file (converted to --rate, looped); with --turns: the utterance",
    )
    source.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone")
    parser.add_argument(
        "--dtmf", default="", metavar="DIGITS", help="send these DTMF digits, 300 ms apart"
    )
    parser.add_argument(
        "--dtmf-at",
        type=float,
        default=defaults.dtmf_at_s,
        metavar="SECONDS",
        help="when the first DTMF digit is sent (default %(default)s)",
    )
    parser.add_argument(
        "--pause-at",
        type=float,
        default=defaults.pause_at_s,
        metavar="SECONDS",
        help="stop sending audio at this point of the call (with --pause)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=defaults.pause_s,
        metavar="SECONDS",
        help="send no audio for this long from --pause-at, as a held leg (default none)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=defaults.linger_s,
        metavar="SECONDS",
        help="wait this long for the last echoes before hanging up",
    )
    parser.add_argument(
        "--no-stamp",
        action="store_true",
        help="send the source unchanged (no frame numbers in the LSBs)",
    )
    parser.add_argument("--record", metavar="OUT.wav", help="write the audio that came back")
    parser.add_argument("--record-sent", metavar="OUT.wav", help="write the audio sent")
    parser.add_argument(
        "--connect-timeout", type=float, default=defaults.connect_timeout_s, metavar="SECONDS"
    )
    parser.add_argument(
        "--measure-pacing",
        action="store_true",
        help="measure how evenly the server's audio arrives: error from a 20 ms grid, drift",
    )
    parser.add_argument(
        "--http-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header on the upgrade, e.g. 'Authorization: Bearer TOKEN' (repeatable)",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="for wss://: trust this CA bundle")
    parser.add_argument(
        "--insecure", action="store_true", help="for wss://: do not verify the certificate"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--report",
        metavar="FILE.html",
        help="write a self-contained HTML report with plots (needs matplotlib: the report extra)",
    )
    parser.add_argument(
        "--metrics-url",
        metavar="URL",
        help="bridge's /metrics (e.g. http://127.0.0.1:8080/metrics): read before and after, "
        "the report adds what bridge counted",
    )
    _add_turn_arguments(parser)
    _add_impairment_arguments(parser)
    _add_carrier_arguments(parser)


def _add_turn_arguments(parser: argparse.ArgumentParser) -> None:
    t = TurnOptions(1)
    group = parser.add_argument_group(
        "conversation (a voice agent: turn latency and barge-in, README 'Benchmark your voice "
        "agent')"
    )
    group.add_argument(
        "--turns", type=int, metavar="N", help="say the --wav utterance N times, each answered"
    )
    group.add_argument(
        "--pause-ms",
        type=int,
        default=t.pause_ms,
        metavar="MS",
        help="speak again once the agent has been silent this long (default %(default)s)",
    )
    group.add_argument(
        "--barge-in-after-ms",
        type=int,
        metavar="MS",
        help="start the next utterance this far into the agent's answer, over it",
    )
    group.add_argument(
        "--speech-threshold-dbfs",
        type=float,
        default=t.threshold_dbfs,
        metavar="DB",
        help="a sample this loud or louder is speech (default %(default)s dBFS)",
    )
    group.add_argument(
        "--gap-ms",
        type=int,
        default=t.gap_ms,
        metavar="MS",
        help="a silence shorter than this inside speech does not end it (default %(default)s)",
    )
    group.add_argument(
        "--answer-timeout-ms",
        type=int,
        default=t.answer_timeout_ms,
        metavar="MS",
        help="no speech heard this long after the caller stopped: not answered "
        "(default %(default)s)",
    )


def _add_impairment_arguments(parser: argparse.ArgumentParser) -> None:
    i = Impairments()
    group = parser.add_argument_group("network impairments (reproducible with --seed)")
    group.add_argument(
        "--jitter-ms",
        type=float,
        default=i.jitter_ms,
        metavar="MS",
        help="hold each message a random extra delay of this mean (exponential, order kept)",
    )
    group.add_argument(
        "--burst-ms",
        type=int,
        default=i.burst_ms,
        metavar="MS",
        help="deliver nothing for this long, then everything at once (with --burst-every-s)",
    )
    group.add_argument(
        "--burst-every-s", type=float, default=i.burst_every_s, metavar="S", help="burst period"
    )
    group.add_argument(
        "--drift-ppm",
        type=float,
        default=i.drift_ppm,
        metavar="PPM",
        help="the carrier's clock runs this much fast (negative: slow) against bridge's",
    )
    group.add_argument(
        "--stall-ms",
        type=int,
        default=i.stall_ms,
        metavar="MS",
        help="once, deliver nothing for this long, then everything at once",
    )
    group.add_argument(
        "--stall-at-s",
        type=float,
        default=i.stall_at_s,
        metavar="S",
        help="when the stall starts (default %(default)s)",
    )
    group.add_argument(
        "--impair",
        choices=["both", "send", "receive"],
        default=i.paths,
        help="the paths impaired: caller to bridge (send), back (receive) or both (default)",
    )
    group.add_argument("--seed", type=int, default=i.seed, help="random seed (default 0)")


def _add_carrier_arguments(parser: argparse.ArgumentParser) -> None:
    carrier = parser.add_argument_group("other carriers (docs/carriers.md)")
    carrier.add_argument(
        "--carrier",
        choices=["vonage", *CARRIER_NAMES],
        default="vonage",
        help="play this carrier's side: its messages, encoding and answers (--header values "
        "become its custom parameters)",
    )
    carrier.add_argument(
        "--encoding",
        metavar="NAME",
        help="the carrier's wire encoding: telnyx PCMU, PCMA or L16; plivo audio/x-mulaw or "
        "audio/x-l16 (default: the carrier's own)",
    )
    carrier.add_argument(
        "--reorder-every",
        type=int,
        default=0,
        metavar="N",
        help="telnyx: send every N-th media message after the next one (0: in order)",
    )
    carrier.add_argument(
        "--twilio-auth-token", metavar="TOKEN", help="twilio: sign the upgrade with this token"
    )
    carrier.add_argument(
        "--telnyx-token", metavar="TOKEN", help="telnyx: send this streaming auth token"
    )


def options_from_args(args: argparse.Namespace) -> CallOptions:
    """Build :class:`CallOptions` from parsed arguments; bad values raise ``ConfigError``."""
    turns = None
    if args.turns is not None:
        turns = TurnOptions(
            turns=args.turns,
            pause_ms=args.pause_ms,
            barge_in_after_ms=args.barge_in_after_ms,
            threshold_dbfs=args.speech_threshold_dbfs,
            gap_ms=args.gap_ms,
            answer_timeout_ms=args.answer_timeout_ms,
        )
    elif args.barge_in_after_ms is not None:
        raise ConfigError("--barge-in-after-ms needs --turns")
    impair = Impairments(
        jitter_ms=args.jitter_ms,
        burst_ms=args.burst_ms,
        burst_every_s=args.burst_every_s,
        drift_ppm=args.drift_ppm,
        stall_ms=args.stall_ms,
        stall_at_s=args.stall_at_s,
        paths=args.impair,
        seed=args.seed,
    )
    if args.report is not None:
        check_report_path(args.report)
    return CallOptions(
        url=args.url,
        rate=args.rate or (CallOptions.rate if args.carrier == "vonage" else CARRIER_RATE),
        seconds=args.seconds,
        headers=parse_pairs(args.header, "--header"),
        wav=args.wav,
        tone_hz=args.tone,
        dtmf=args.dtmf,
        dtmf_at_s=args.dtmf_at,
        pause_at_s=args.pause_at,
        pause_s=args.pause,
        linger_s=args.linger,
        stamp=not args.no_stamp,
        record=args.record,
        record_sent=args.record_sent,
        connect_timeout_s=args.connect_timeout,
        measure_pacing=args.measure_pacing,
        extra_headers=parse_pairs(args.http_header, "--http-header", separator=":"),
        ca_file=args.ca_file,
        insecure=args.insecure,
        carrier=args.carrier,
        encoding=args.encoding,
        reorder_every=args.reorder_every,
        twilio_auth_token=args.twilio_auth_token,
        telnyx_token=args.telnyx_token,
        turns=turns,
        impair=impair if impair.active else None,
        metrics_url=args.metrics_url,
        envelope=args.report is not None,
    )


def _print(report: CallReport | LoadReport, as_json: bool) -> None:
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.text())


async def _call(opts: CallOptions, call: SimulatedCall) -> CallReport:
    if opts.metrics_url is None:
        return await call.run()
    watch = BridgeWatch(opts.metrics_url)
    await watch.start()
    report = await call.run()
    return replace(report, bridge=await watch.report(1))


async def _load(
    opts: CallOptions, calls: int, ramp_s: float | None, procs: int
) -> tuple[LoadReport, LoadPart]:
    if opts.metrics_url is None:
        return await run_load_part(opts, calls, ramp_s, procs)
    watch = BridgeWatch(opts.metrics_url)
    await watch.start()
    report, part = await run_load_part(opts, calls, ramp_s, procs)
    return replace(report, bridge=await watch.report(calls)), part


def _cli_call(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    call = SimulatedCall(opts, MonotonicClock())
    report = run(_call(opts, call))
    if args.report is not None:
        write_report(Path(args.report), report, call.timeline)
    _print(report, args.json)
    return 0 if report.completed else 1


def _cli_load(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.calls < 1:
        raise ConfigError(f"--calls must be >= 1, got {args.calls}")
    if args.procs < 1:
        raise ConfigError(f"--procs must be >= 1, got {args.procs}")
    freeze_startup_heap()
    try:
        report, part = run(_load(opts, args.calls, args.ramp, args.procs))
    except LoadProcessError as exc:
        sys.stderr.write(f"bridge: load failed: {exc}\n")
        return 1
    if args.report is not None:
        write_report(Path(args.report), report, part.timeline)
    _print(report, args.json)
    return 0 if report.calls_failed == 0 else 1


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``call URL``, ``load URL --calls N`` and ``agent``; each sets
    ``func(args) -> int``."""
    call = subparsers.add_parser(
        "call",
        help="play one Vonage (or --carrier) call against a bridge and report",
        description="Connect like Vonage, send paced 20 ms frames, measure what comes back; "
        "with --turns, talk to a voice agent and measure its turn latency and barge-in.",
    )
    _add_call_arguments(call)
    call.set_defaults(func=_cli_call)
    load = subparsers.add_parser(
        "load",
        help="play N concurrent Vonage (or --carrier) calls and report aggregates",
        description=(
            "N simulated calls started evenly over --ramp, in one process or spread over "
            "--procs processes (one event loop and one sender each)."
        ),
    )
    _add_call_arguments(load)
    load.add_argument("--calls", type=int, required=True, metavar="N")
    load.add_argument(
        "--ramp",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start the calls evenly over this long (default min(1, N*0.02))",
    )
    load.add_argument(
        "--procs",
        type=int,
        default=1,
        metavar="P",
        help="spread the calls over P processes (default 1); use one per spare core",
    )
    load.set_defaults(func=_cli_load)
    add_agent_subcommand(subparsers)
