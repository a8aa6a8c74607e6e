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

MODES = ("echo",)
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

    # --- production: auth, limits, lifecycle, webhooks, metrics, workers ---

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
    """One option per field; defaults stay ``None`` so env and dataclass defaults can apply."""
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
