"""The single source of settings: one frozen dataclass, its defaults, its help text.

The ``bridge serve`` options and the ``BRIDGE_*`` environment variables are both generated
from :class:`ServerConfig`'s fields, so a setting is spelled out exactly once. Precedence:
command line, then environment, then the default.

Import rule: standard library and ``bridge.errors`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError

MODES = ("echo", "forward", "transcribe", "play")
RATES = (8000, 16000, 24000)


@dataclass(frozen=True)
class ServerConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8080, metadata={"help": "TCP port (0 picks a free one)"})
    path: str = field(default="/socket", metadata={"help": "websocket path; others get 404"})
    mode: str = field(default="echo", metadata={"help": "what each call does", "choices": MODES})
    pipeline_rate: int | None = field(
        default=None,
        metadata={
            "help": "rate the handler works at; audio is resampled both ways (default: call's rate)",
            "choices": RATES,
            "metavar": "HZ",
        },
    )
    lead_ms: int = field(
        default=100,
        metadata={
            "help": "how far ahead of real time outbound frames may be sent",
            "metavar": "MS",
        },
    )
    playout_max_ms: int = field(
        default=2000,
        metadata={"help": "bound of each call's outbound queue in ms", "metavar": "MS"},
    )
    max_message_bytes: int = field(
        default=65536,
        metadata={
            "help": "largest websocket message accepted (close 1009 above)",
            "metavar": "BYTES",
        },
    )
    first_message_timeout_s: float = field(
        default=5.0,
        metadata={
            "help": "seconds allowed for websocket:connected after the upgrade",
            "metavar": "S",
        },
    )
    lenient: bool = field(
        default=False,
        metadata={
            "help": "buffer binary frames that arrive before the metadata instead of closing"
        },
    )
    log_level: str = field(
        default="info",
        metadata={"help": "log level", "choices": ("debug", "info", "warning", "error")},
    )
    log_format: str = field(
        default="auto",
        metadata={
            "help": "text, json, or auto (text on a terminal)",
            "choices": ("auto", "text", "json"),
        },
    )

    # --- call modes: forward, transcribe, record, play (see bridge/handlers) ---
    upstream: str | None = field(
        default=None,
        metadata={
            "help": "--mode forward: websocket URL (ws:// or wss://) each call is streamed to",
            "metavar": "URL",
        },
    )
    upstream_rate: int | None = field(
        default=None,
        metadata={
            "help": "rate of the audio to and from the upstream (default: the call's rate)",
            "choices": RATES,
            "metavar": "HZ",
        },
    )
    upstream_hello: str | None = field(
        default=None,
        metadata={
            "help": "first text message on every upstream connection; $call_id, $rate, "
            "$call_rate, $content_type and the call's metadata and query keys are filled "
            "in, JSON-escaped",
            "metavar": "TEMPLATE",
        },
    )
    upstream_buffer_ms: int = field(
        default=10000,
        metadata={
            "help": "caller audio kept while the upstream is away; beyond it the oldest is "
            "dropped, counted and logged",
            "metavar": "MS",
        },
    )
    upstream_replay_max_ms: int = field(
        default=200,
        metadata={
            "help": "most audio the upstream may leave unconfirmed (pong), hence the most a "
            "reconnect can repeat; must exceed the round trip to the upstream",
            "metavar": "MS",
        },
    )
    upstream_max_attempts: int = field(
        default=10,
        metadata={
            "help": "consecutive failed upstream connections before the call is ended (1011)",
            "metavar": "N",
        },
    )
    upstream_backoff_ms: int = field(
        default=100,
        metadata={
            "help": "first reconnect delay; doubles per failed attempt up to 5 s, with jitter",
            "metavar": "MS",
        },
    )
    upstream_timeout_s: float = field(
        default=5.0,
        metadata={
            "help": "seconds for the upstream's handshake, and for it to confirm audio before "
            "the link counts as stalled and is reconnected",
            "metavar": "S",
        },
    )
    transcripts: str | None = field(
        default=None,
        metadata={
            "help": "directory for DIR/<call id>.jsonl: utterances (--mode transcribe), "
            "upstream messages and call events (--mode forward)",
            "metavar": "DIR",
        },
    )
    transcribe: bool = field(
        default=False,
        metadata={
            "help": "also transcribe the caller with the built-in recogniser in any mode, "
            "to DIR/<call id>.asr.jsonl under --transcripts",
        },
    )
    record_dir: str | None = field(
        default=None,
        metadata={
            "help": "record each call (any mode) to DIR/<call id>.wav: stereo, left the "
            "caller, right what bridge sent",
            "metavar": "DIR",
        },
    )
    play: str | None = field(
        default=None,
        metadata={"help": "--mode play: WAV file played into each call", "metavar": "FILE"},
    )
    tone: float | None = field(
        default=None,
        metadata={
            "help": "--mode play: a sine tone (below 4000 Hz) instead of a file",
            "metavar": "HZ",
        },
    )
    barge_in: bool = field(
        default=False,
        metadata={"help": "--mode play: stop playback at the caller's first DTMF digit"},
    )

    # --- production: auth, limits, lifecycle, webhooks, metrics, workers ---
    token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "shared secret a caller must present as ?token= or Authorization: Bearer",
            "metavar": "TOKEN",
        },
    )
    vonage_signature_secret: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "verify Vonage's signed JWT (HS256) on upgrades and webhooks with this secret",
            "metavar": "SECRET",
        },
    )
    vonage_api_key: str | None = field(
        default=None,
        metadata={"help": "also require this api_key claim in Vonage's JWT", "metavar": "KEY"},
    )
    vonage_application_id: str | None = field(
        default=None,
        metadata={
            "help": "also require this application_id claim in Vonage's JWT",
            "metavar": "ID",
        },
    )
    jwt_max_age_s: float = field(
        default=300.0,
        metadata={
            "help": "a Vonage JWT's iat must be within this many seconds of our clock",
            "metavar": "S",
        },
    )
    insecure: bool = field(
        default=False,
        metadata={"help": "allow a non-loopback --host with no --token or signature secret"},
    )
    tls_cert: str | None = field(
        default=None,
        metadata={
            "help": "PEM certificate chain: serve wss:// and https:// directly",
            "metavar": "PEM",
        },
    )
    tls_key: str | None = field(
        default=None, metadata={"help": "PEM private key for --tls-cert", "metavar": "PEM"}
    )
    max_calls: int = field(
        default=500,
        metadata={
            "help": "websockets open at once per process; more get HTTP 503 + Retry-After",
            "metavar": "N",
        },
    )
    idle_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "close a call (1008) after this long without inbound audio",
            "metavar": "S",
        },
    )
    max_call_s: float = field(
        default=7200.0,
        metadata={
            "help": "close a call (1008) after this long (Vonage's own limit: 7200)",
            "metavar": "S",
        },
    )
    drain_seconds: float = field(
        default=30.0,
        metadata={
            "help": "on SIGTERM, let active calls run this long before closing them with 1001",
            "metavar": "S",
        },
    )
    public_url: str | None = field(
        default=None,
        metadata={
            "help": "wss://host[:port] Vonage reaches us at; enables GET /answer and /event",
            "metavar": "URL",
        },
    )
    answer_rate: int = field(
        default=16000,
        metadata={
            "help": "audio rate the /answer NCCO asks Vonage for",
            "choices": RATES,
            "metavar": "HZ",
        },
    )
    answer_headers: str = field(
        default="",
        metadata={
            "help": "k=v,k=v: headers the /answer NCCO puts in the first message",
            "metavar": "K=V,...",
        },
    )
    phone_page: bool | None = field(
        default=None,
        metadata={
            "help": "serve the browser phone at GET /phone (--no-phone-page: don't); "
            "default: on when --host is a loopback address",
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "processes sharing the port (SO_REUSEPORT), supervised and restarted",
            "metavar": "N",
        },
    )

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError(f"--path (BRIDGE_PATH) must start with '/', got {self.path!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port (BRIDGE_PORT) must be 0-65535, got {self.port}")
        if self.lead_ms < 0 or self.lead_ms > 1000:
            raise ConfigError(f"--lead-ms (BRIDGE_LEAD_MS) must be 0-1000, got {self.lead_ms}")
        if self.playout_max_ms < 20:
            raise ConfigError(
                "--playout-max-ms (BRIDGE_PLAYOUT_MAX_MS) must be at least 20, "
                f"got {self.playout_max_ms}"
            )
        if self.max_message_bytes < 1024:
            raise ConfigError(
                "--max-message-bytes (BRIDGE_MAX_MESSAGE_BYTES) must be at least 1024, "
                f"got {self.max_message_bytes}"
            )
        # Written as a range so NaN (float("nan") parses fine) fails it too, as does inf.
        if not 0 < self.first_message_timeout_s < math.inf:
            raise ConfigError(
                "--first-message-timeout-s (BRIDGE_FIRST_MESSAGE_TIMEOUT_S) must be a positive "
                f"number of seconds, got {self.first_message_timeout_s}"
            )
        _check_modes(self)
        _check_production(self)


def _check_modes(c: ServerConfig) -> None:
    """Validation of the call-mode settings; a mode's own settings are ignored by the others."""
    if c.mode == "forward" and not c.upstream:
        raise ConfigError("--mode forward (BRIDGE_MODE) needs --upstream URL (BRIDGE_UPSTREAM)")
    if c.upstream is not None and not c.upstream.startswith(("ws://", "wss://")):
        raise ConfigError(
            f"--upstream (BRIDGE_UPSTREAM) must start with ws:// or wss://, got {c.upstream!r}"
        )
    if c.transcribe and not c.transcripts:
        raise ConfigError(
            "--transcribe (BRIDGE_TRANSCRIBE) needs --transcripts DIR (BRIDGE_TRANSCRIPTS)"
        )
    if c.mode == "transcribe" and not c.transcripts:
        raise ConfigError(
            "--mode transcribe (BRIDGE_MODE) needs --transcripts DIR (BRIDGE_TRANSCRIPTS)"
        )
    if c.mode == "play" and (c.play is None) == (c.tone is None):
        raise ConfigError(
            "--mode play (BRIDGE_MODE) needs exactly one of --play FILE (BRIDGE_PLAY) "
            "or --tone HZ (BRIDGE_TONE)"
        )
    for name in ("transcripts", "record_dir", "play"):
        if getattr(c, name) == "":
            raise ConfigError(f"{_flag(name)} ({env_name(name)}) must not be empty")
    if c.tone is not None and not 0 < c.tone < 4000:
        raise ConfigError(f"--tone (BRIDGE_TONE) must be above 0 and below 4000 Hz, got {c.tone}")
    if not 20 <= c.upstream_replay_max_ms <= 10_000:
        raise ConfigError(
            "--upstream-replay-max-ms (BRIDGE_UPSTREAM_REPLAY_MAX_MS) must be 20-10000, "
            f"got {c.upstream_replay_max_ms}"
        )
    if not c.upstream_replay_max_ms < c.upstream_buffer_ms <= 3_600_000:
        raise ConfigError(
            "--upstream-buffer-ms (BRIDGE_UPSTREAM_BUFFER_MS) must be above "
            f"--upstream-replay-max-ms and at most 3600000, got {c.upstream_buffer_ms}"
        )
    if c.upstream_max_attempts < 1:
        raise ConfigError(
            "--upstream-max-attempts (BRIDGE_UPSTREAM_MAX_ATTEMPTS) must be at least 1, "
            f"got {c.upstream_max_attempts}"
        )
    if not 1 <= c.upstream_backoff_ms <= 60_000:
        raise ConfigError(
            "--upstream-backoff-ms (BRIDGE_UPSTREAM_BACKOFF_MS) must be 1-60000, "
            f"got {c.upstream_backoff_ms}"
        )
    if not 0 < c.upstream_timeout_s < math.inf:
        raise ConfigError(
            "--upstream-timeout-s (BRIDGE_UPSTREAM_TIMEOUT_S) must be a positive number of "
            f"seconds, got {c.upstream_timeout_s}"
        )


#: Paths served as plain HTTP by the server (bridge/http.py); the websocket path cannot be one.
HTTP_PATHS = ("/health", "/ready", "/metrics", "/answer", "/event", "/phone")


def _check_production(c: ServerConfig) -> None:
    """Validation of the production settings (auth, limits, lifecycle, webhooks, workers)."""
    for name in ("token", "vonage_signature_secret", "vonage_api_key", "vonage_application_id"):
        if getattr(c, name) == "":
            raise ConfigError(f"{_flag(name)} ({env_name(name)}) must not be empty")
    if (c.vonage_api_key or c.vonage_application_id) and not c.vonage_signature_secret:
        raise ConfigError(
            "--vonage-api-key and --vonage-application-id need --vonage-signature-secret"
        )
    positive = ("jwt_max_age_s", "idle_timeout_s", "max_call_s")
    for name in positive:
        value = getattr(c, name)
        if not 0 < value < math.inf:
            raise ConfigError(
                f"{_flag(name)} ({env_name(name)}) must be a positive number of seconds, "
                f"got {value}"
            )
    if not 0 <= c.drain_seconds < math.inf:
        raise ConfigError(
            f"--drain-seconds (BRIDGE_DRAIN_SECONDS) must be >= 0 seconds, got {c.drain_seconds}"
        )
    if c.max_calls < 1:
        raise ConfigError(f"--max-calls (BRIDGE_MAX_CALLS) must be at least 1, got {c.max_calls}")
    if not 1 <= c.workers <= 256:
        raise ConfigError(f"--workers (BRIDGE_WORKERS) must be 1-256, got {c.workers}")
    if (c.tls_cert is None) != (c.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if c.public_url is not None and not c.public_url.startswith(("ws://", "wss://")):
        raise ConfigError(
            f"--public-url (BRIDGE_PUBLIC_URL) must start with ws:// or wss://, got {c.public_url!r}"
        )
    parse_pairs(c.answer_headers, "--answer-headers (BRIDGE_ANSWER_HEADERS)")
    if c.path in HTTP_PATHS:
        raise ConfigError(f"--path (BRIDGE_PATH) {c.path!r} is taken by a plain HTTP endpoint")


def parse_pairs(text: str, source: str) -> dict[str, str]:
    """``k=v,k=v`` into a dict (empty text: empty dict); a malformed pair names ``source``."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{source}: expected KEY=VALUE pairs separated by commas, got {item!r}"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def parse_key_values(items: list[str], option: str, *, unique: bool = False) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` arguments (``--header``) into a dict; ``unique`` refuses a key
    given twice instead of keeping the last one."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} needs KEY=VALUE, got {item!r}")
        if unique and key in pairs:
            raise ConfigError(f"{option} {key!r} given twice")
        pairs[key] = value
    return pairs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return "BRIDGE_" + name.upper()


def _field_type(f: dataclasses.Field[Any]) -> type:
    text = str(f.type)
    if "bool" in text:
        return bool
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = _field_type(f)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{source}: expected true/false, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: expected {kind.__name__}, got {raw!r}") from exc
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{source}: must be one of {shown}, got {raw!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Any] = ServerConfig) -> None:
    """One option per field; defaults stay ``None`` so env and dataclass defaults can apply.

    A flag is ``--name``; a setting whose default is ``None`` (decided from others, such as
    ``--phone-page``) also gets ``--no-name``.
    """
    for f in dataclasses.fields(cls):
        help_text = f"{f.metadata.get('help', '')} [env {env_name(f.name)}; default {f.default}]"
        if _field_type(f) is bool:
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                action="store_const",
                const="true",
                default=None,
                help=help_text,
            )
            if f.default is None:
                parser.add_argument(
                    "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_const",
                    const="false",
                    help=argparse.SUPPRESS,
                )
        else:
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                default=None,
                metavar=f.metadata.get("metavar"),
                help=help_text,
            )


def config_from(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    cls: type[Any] = ServerConfig,
) -> Any:
    """Build the config: command line over ``BRIDGE_*`` environment over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name, None) if args is not None else None
        if raw is not None:
            values[f.name] = _convert(f, str(raw), _flag(f.name))
        elif env_name(f.name) in env:
            values[f.name] = _convert(f, env[env_name(f.name)], env_name(f.name))
    return cls(**values)
