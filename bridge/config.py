"""Every setting of ``bridge serve``, declared once, in three sections.

- :class:`CoreSettings`: where bridge listens, each call's audio path, logging;
- :class:`ModeSettings`: what each call does (``--mode`` and the modes' own settings);
- :class:`ProductionSettings`: authentication, limits, lifecycle, webhooks, workers.

Each section is a typed, frozen dataclass that validates itself; :class:`ServerConfig` is all
three (it inherits them), so code reads ``config.port`` or ``config.upstream`` and a function
that needs one section only says so in its signature (``build_handler(settings:
ModeSettings)``). Flags, ``BRIDGE_*`` variables, types, choices, help and error messages are
derived from the declarations by :mod:`bridge.settings`; docs/architecture.md ("Settings")
says how to add a setting or a section.

Import rule: standard library, ``bridge.errors``, ``bridge.settings``, ``bridge.units``,
``bridge.protocol`` and ``bridge.services`` (facts only: no asyncio, no websockets).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bridge.errors import ConfigError
from bridge.protocol.dialects import CarrierChoice
from bridge.protocol.vonage import MAX_LEG_S
from bridge.services.base import DialectName, TurnDetection
from bridge.settings import (
    Settings,
    add_arguments,
    all_options,
    at_least,
    between,
    env_name,
    load,
    non_negative_seconds,
    not_empty,
    pair_list,
    parse_pair_list,
    positive_seconds,
    rule,
    setting,
    url,
)
from bridge.units import Rate

__all__ = [
    "HTTP_PATHS",
    "CoreSettings",
    "LogFormat",
    "LogLevel",
    "Mode",
    "ModeSettings",
    "ProductionSettings",
    "ServerConfig",
    "Transport",
    "add_config_arguments",
    "config_from",
    "env_name",
]

Mode = Literal["echo", "forward", "transcribe", "play"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "text", "json"]
Transport = Literal["auto", "picows", "websockets"]

#: Paths served as plain HTTP by the server (bridge/http.py); the websocket path cannot be one.
HTTP_PATHS = ("/health", "/ready", "/metrics", "/answer", "/event", "/phone", "/twiml")


@dataclass(frozen=True, kw_only=True)
class CoreSettings(Settings):
    """Where bridge listens, how every call's audio path behaves, and how it logs."""

    TITLE = "core"

    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8080, "TCP port (0 picks a free one)", check=between(0, 65535))
    path: str = setting(
        "/socket",
        "websocket path; others get 404",
        check=(
            rule(lambda path: path.startswith("/"), "must start with '/'"),
            rule(lambda path: path not in HTTP_PATHS, "is taken by a plain HTTP endpoint"),
        ),
    )
    pipeline_rate: Rate | None = setting(
        None,
        "rate the handler works at; audio is resampled both ways (default: call's rate)",
        metavar="HZ",
    )
    lead_ms: int = setting(
        100,
        "how far ahead of real time outbound frames may be sent",
        metavar="MS",
        check=between(0, 1000),
    )
    playout_max_ms: int = setting(
        2000, "bound of each call's outbound queue in ms", metavar="MS", check=at_least(20)
    )
    max_message_bytes: int = setting(
        65536,
        "largest websocket message accepted (close 1009 above)",
        metavar="BYTES",
        check=at_least(1024),
    )
    first_message_timeout_s: float = setting(
        5.0,
        "seconds allowed for websocket:connected after the upgrade",
        metavar="S",
        check=positive_seconds,
    )
    carrier: CarrierChoice = setting(
        "auto",
        "dialect of every call: auto (from each call's first messages), or one carrier; "
        "PATH/<carrier> forces one per call whatever this says",
    )
    lenient: bool = setting(
        False, "buffer binary frames that arrive before the metadata instead of closing"
    )
    transport: Transport = setting(
        "auto",
        "websocket library under the connection layer: picows (C framing, fastest), "
        "websockets (pure Python), or auto (picows when installed)",
    )
    log_level: LogLevel = setting("info", "log level")
    log_format: LogFormat = setting("auto", "text, json, or auto (text on a terminal)")


@dataclass(frozen=True, kw_only=True)
class ModeSettings(Settings):
    """What each call does; a mode ignores the other modes' settings (see bridge/handlers)."""

    TITLE = "call modes"

    mode: Mode = setting(
        "echo", "what each call does (a named --upstream-dialect makes the default forward)"
    )
    upstream: str | None = setting(
        None,
        "--mode forward: websocket URL (ws:// or wss://) each call is streamed to; for a named "
        "--upstream-dialect the service's documented endpoint by default, its query merged in",
        metavar="URL",
        check=url("ws", "wss"),
    )
    upstream_dialect: DialectName = setting(
        "raw",
        "what the upstream speaks: raw (bridge's own protocol: PCM frames, Vonage's events as "
        'JSON) or a speech service (README: "Speech services")',
    )
    upstream_key_env: str | None = setting(
        None,
        "environment variable holding the service's API key (default: the service's own, "
        "e.g. DEEPGRAM_API_KEY); bridge refuses to start without it",
        metavar="NAME",
        check=rule(lambda name: name.isidentifier(), "must be a variable name"),
    )
    upstream_header: tuple[str, ...] = setting(
        (),
        "'Name: value' header on the upstream's upgrade request; ${NAME} in the value is "
        "read from the environment (keep secrets off the command line)",
        metavar="'NAME: VALUE'",
        check=rule(
            lambda item: ":" in item and bool(item.partition(":")[0].strip()),
            "must be 'Name: value'",
        ),
        secret=True,
    )
    upstream_subprotocol: tuple[str, ...] = setting(
        (),
        "subprotocol offered on the upstream's upgrade (Sec-WebSocket-Protocol), in order",
        metavar="NAME",
        check=not_empty,
    )
    upstream_model: str | None = setting(
        None,
        "the service's model (default: each dialect's documented choice, README)",
        metavar="NAME",
        check=not_empty,
    )
    upstream_language: str | None = setting(
        None,
        "language of the caller for the service (e.g. en, en-GB)",
        metavar="CODE",
        check=not_empty,
    )
    upstream_end_timeout_s: float = setting(
        3.0,
        "at the end of a call, how long a service may take to send its last results after "
        "bridge ends its stream (CloseStream, Terminate, EndOfStream, commit)",
        metavar="S",
        check=positive_seconds,
    )
    instructions: str | None = setting(
        None,
        "openai-realtime: the agent's instructions, or @FILE to read them from a file",
        metavar="TEXT|@FILE",
        check=not_empty,
    )
    voice: str | None = setting(
        None, "openai-realtime: the agent's voice (default alloy)", metavar="NAME", check=not_empty
    )
    turn_detection: TurnDetection = setting(
        "server_vad", "openai-realtime: how the service decides the caller finished speaking"
    )
    transcript_url: str | None = setting(
        None,
        "POST each final transcript as JSON to this http(s) URL (bounded queue, retries with "
        "backoff; never delays the call)",
        metavar="URL",
        check=url("http", "https"),
    )
    upstream_rate: Rate | None = setting(
        None, "rate of the audio to and from the upstream (default: the call's rate)", metavar="HZ"
    )
    upstream_hello: str | None = setting(
        None,
        "first text message on every upstream connection; $call_id, $rate, $call_rate, "
        "$content_type and the call's metadata and query keys are filled in, JSON-escaped",
        metavar="TEMPLATE",
    )
    upstream_buffer_ms: int = setting(
        10000,
        "caller audio kept while the upstream is away; beyond it the oldest is dropped, "
        "counted and logged",
        metavar="MS",
        check=rule(lambda ms: ms <= 3_600_000, "must be at most 3600000"),
    )
    upstream_replay_max_ms: int = setting(
        200,
        "most audio the upstream may leave unconfirmed (pong), hence the most a reconnect can "
        "repeat; must exceed the round trip to the upstream",
        metavar="MS",
        check=between(20, 10_000),
    )
    upstream_max_attempts: int = setting(
        10,
        "consecutive failed upstream connections before the call is ended (1011)",
        metavar="N",
        check=at_least(1),
    )
    upstream_backoff_ms: int = setting(
        100,
        "first reconnect delay; doubles per failed attempt up to 5 s, with jitter",
        metavar="MS",
        check=between(1, 60_000),
    )
    upstream_timeout_s: float = setting(
        5.0,
        "seconds for the upstream's handshake, and for it to confirm audio before the link "
        "counts as stalled and is reconnected",
        metavar="S",
        check=positive_seconds,
    )
    transcripts: str | None = setting(
        None,
        "directory for DIR/<call id>.jsonl: utterances (--mode transcribe), upstream messages "
        "and call events (--mode forward)",
        metavar="DIR",
        check=not_empty,
    )
    transcribe: bool = setting(
        False,
        "also transcribe the caller with the built-in recogniser in any mode, to "
        "DIR/<call id>.asr.jsonl under --transcripts",
    )
    record_dir: str | None = setting(
        None,
        "record each call (any mode) to DIR/<call id>.wav: stereo, left the caller, right what "
        "bridge sent",
        metavar="DIR",
        check=not_empty,
    )
    play: str | None = setting(
        None, "--mode play: WAV file played into each call", metavar="FILE", check=not_empty
    )
    tone: float | None = setting(
        None,
        "--mode play: a sine tone (below 4000 Hz) instead of a file",
        metavar="HZ",
        check=rule(lambda hz: 0 < hz < 4000, "must be above 0 and below 4000 Hz"),
    )
    barge_in: bool = setting(False, "--mode play: stop playback at the caller's first DTMF digit")

    @property
    def call_mode(self) -> Mode:
        """The mode calls run: a named ``--upstream-dialect`` turns the default into forward."""
        if self.upstream_dialect != "raw" and self.mode == "echo":
            return "forward"
        return self.mode

    def rules(self) -> None:
        option = self.option
        named = self.upstream_dialect != "raw"
        if self.mode == "forward" and not self.upstream and not named:
            raise ConfigError(f"{option('mode', 'forward')} needs {option('upstream', 'URL')}")
        if named and self.mode not in ("echo", "forward"):
            raise ConfigError(
                f"{option('upstream_dialect', self.upstream_dialect)} streams calls to a "
                f"service: it needs {option('mode', 'forward')}, not {option('mode', self.mode)}"
            )
        if self.transcribe and not self.transcripts:
            raise ConfigError(f"{option('transcribe')} needs {option('transcripts', 'DIR')}")
        if self.mode == "transcribe" and not self.transcripts:
            raise ConfigError(
                f"{option('mode', 'transcribe')} needs {option('transcripts', 'DIR')}"
            )
        if self.mode == "play" and (self.play is None) == (self.tone is None):
            raise ConfigError(
                f"{option('mode', 'play')} needs exactly one of {option('play', 'FILE')} "
                f"or {option('tone', 'HZ')}"
            )
        if not self.upstream_replay_max_ms < self.upstream_buffer_ms:
            raise ConfigError(
                f"{option('upstream_buffer_ms')} must be above {option('upstream_replay_max_ms')}, "
                f"got {self.upstream_buffer_ms}"
            )


@dataclass(frozen=True, kw_only=True)
class ProductionSettings(Settings):
    """Authentication, limits, lifecycle, webhooks, metrics and worker processes."""

    TITLE = "production"

    token: str | None = setting(
        None,
        "shared secret a caller must present as ?token= or Authorization: Bearer",
        metavar="TOKEN",
        check=not_empty,
        secret=True,
    )
    vonage_signature_secret: str | None = setting(
        None,
        "verify Vonage's signed JWT (HS256) on upgrades and webhooks with this secret",
        metavar="SECRET",
        check=not_empty,
        secret=True,
    )
    vonage_api_key: str | None = setting(
        None, "also require this api_key claim in Vonage's JWT", metavar="KEY", check=not_empty
    )
    vonage_application_id: str | None = setting(
        None,
        "also require this application_id claim in Vonage's JWT",
        metavar="ID",
        check=not_empty,
    )
    jwt_max_age_s: float = setting(
        300.0,
        "a Vonage JWT's iat must be within this many seconds of our clock",
        metavar="S",
        check=positive_seconds,
    )
    twilio_auth_token: str | None = setting(
        None,
        "verify Twilio's X-Twilio-Signature (HMAC-SHA1 of the URL) on upgrades and /twiml "
        "with this account auth token",
        metavar="TOKEN",
        check=not_empty,
        secret=True,
    )
    telnyx_stream_token: str | None = setting(
        None,
        "require Telnyx's x-telnyx-streaming-auth-token header (the stream_auth_token of "
        "streaming_start) to be this",
        metavar="TOKEN",
        check=not_empty,
        secret=True,
    )
    insecure: bool = setting(
        False, "allow a non-loopback --host with no authentication (token, secret, carrier)"
    )
    tls_cert: str | None = setting(
        None, "PEM certificate chain: serve wss:// and https:// directly", metavar="PEM"
    )
    tls_key: str | None = setting(None, "PEM private key for --tls-cert", metavar="PEM")
    max_calls: int = setting(
        500,
        "websockets open at once per process; more get HTTP 503 + Retry-After",
        metavar="N",
        check=at_least(1),
    )
    idle_timeout_s: float = setting(
        10.0,
        "close a call (1008) after this long without inbound audio",
        metavar="S",
        check=positive_seconds,
    )
    max_call_s: float = setting(
        float(MAX_LEG_S),
        f"close a call (1008) after this long (Vonage's own limit: {MAX_LEG_S})",
        metavar="S",
        check=positive_seconds,
    )
    drain_seconds: float = setting(
        30.0,
        "on SIGTERM, let active calls run this long before closing them with 1001",
        metavar="S",
        check=non_negative_seconds,
    )
    public_url: str | None = setting(
        None,
        "wss://host[:port] Vonage reaches us at; enables GET /answer and /event",
        metavar="URL",
        check=url("ws", "wss"),
    )
    phone_page: bool | None = setting(
        None,
        "serve the browser phone at GET /phone; unset: served when --host is a loopback address",
    )
    answer_rate: Rate = setting(16000, "audio rate the /answer NCCO asks Vonage for", metavar="HZ")
    answer_headers: str = setting(
        "",
        "k=v,k=v: headers the /answer NCCO puts in the first message",
        metavar="K=V,...",
        check=pair_list,
    )
    workers: int = setting(
        1,
        "processes sharing the port (SO_REUSEPORT), supervised and restarted",
        metavar="N",
        check=between(1, 256),
    )

    def rules(self) -> None:
        if (self.vonage_api_key or self.vonage_application_id) and not self.vonage_signature_secret:
            claims = self.options_together("vonage_api_key", "vonage_application_id")
            raise ConfigError(f"{claims} need {self.option('vonage_signature_secret')}")
        if (self.tls_cert is None) != (self.tls_key is None):
            pair = self.options_together("tls_cert", "tls_key")
            raise ConfigError(f"{pair} must be given together")

    @property
    def answer_header_pairs(self) -> dict[str, str]:
        """``answer_headers`` as the mapping the NCCO carries."""
        return parse_pair_list(self.answer_headers, self.option("answer_headers"))


@dataclass(frozen=True, kw_only=True)
class ServerConfig(CoreSettings, ModeSettings, ProductionSettings):
    """Every setting of ``bridge serve``: the three sections as one flat, frozen object."""


# Resolve every declaration now: a setting of an unsupported type, or two sections declaring
# one name, fails at import rather than at the first command line that reaches it.
all_options(ServerConfig)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``bridge serve``'s options, one group per section."""
    add_arguments(parser, ServerConfig)


def config_from(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The settings: command line over ``BRIDGE_*`` environment (default: the process's)
    over the declared defaults."""
    return load(ServerConfig, args, environ)
