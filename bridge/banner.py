"""The "what now" banner ``bridge serve`` prints once it listens, for a person at a terminal.

A new user who has just started the server wants the next step, not a log line: where the
socket is, a command that tries it, the browser phone when it is served, and, with ``--public-url``, the two URLs the Vonage
application needs. It is printed only when text logs go to a terminal; JSON logs (the default
when stderr is not a terminal) stay one JSON object per line. :func:`banner_lines` builds the
text from the settings alone, so it is testable without a terminal.

Secrets are never shown: where a URL or command needs the token, it says ``YOUR_TOKEN``.

Import rule: standard library, ``bridge.config``, ``bridge.http`` (whether the browser phone
is served) and ``bridge.startup`` only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from bridge.config import ServerConfig
from bridge.http import PHONE_PATH, phone_page_enabled
from bridge.startup import display_address

#: Hosts that mean "every address"; a client connects to the loopback address instead.
_ANY = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def wants_banner(log_format: str, stream: TextIO) -> bool:
    """True when logs on ``stream`` are text read by a person: a terminal, format not json."""
    return log_format != "json" and stream.isatty()


def program_name() -> str:
    """How the user can run ``bridge`` again: ``bridge`` if that is this one on PATH, else
    the path of this environment's ``bridge`` (``.venv/bin/bridge`` after scripts/serve)."""
    mine = Path(sys.executable).parent / "bridge"
    found = shutil.which("bridge")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "bridge"
    if mine.exists():
        try:
            return str(mine.relative_to(Path.cwd()))
        except ValueError:
            return str(mine)
    return f"{sys.executable} -m bridge"


def banner_lines(config: ServerConfig, port: int, program: str = "bridge") -> list[str]:
    """The banner's lines for a server listening on ``port`` with ``config``."""
    scheme = "wss" if config.tls_cert else "ws"
    http = "https" if config.tls_cert else "http"
    local = display_address(_ANY.get(config.host, config.host), port)
    socket_url = f"{scheme}://{local}{config.path}"
    mode: str = config.call_mode
    if config.upstream_dialect != "raw":
        mode = f"{mode} to {config.upstream_dialect}"
    lines = [f"bridge is listening: {socket_url} (mode {mode})"]
    call = f"{program} call {socket_url} --seconds 5"
    if config.token:
        call += " --http-header 'Authorization: Bearer YOUR_TOKEN'"
    if config.tls_cert:
        call += " --ca-file CA.pem"
    if config.token or not config.vonage_signature_secret:
        lines.append(f"  try it:      {call}")
    else:
        lines.append(
            "  try it:      calls need Vonage's signed JWT; add --token to try bridge call"
        )
    if phone_page_enabled(config):
        token = "?token=YOUR_TOKEN" if config.token else ""
        lines.append(
            f"  browser:     {http}://{local}{PHONE_PATH}{token} (press Call to talk to it)"
        )
    lines.append(f"  health:      {http}://{local}/health   metrics: {http}://{local}/metrics")
    if config.public_url is None:
        lines.append(
            "  real calls:  put bridge behind TLS and start it with --public-url "
            "wss://YOUR-HOST; it then serves the application's answer and event URLs"
        )
    else:
        parts = urlsplit(config.public_url)
        web = "https" if parts.scheme == "wss" else "http"
        token = "?token=YOUR_TOKEN" if config.token and not config.vonage_signature_secret else ""
        lines += [
            "  Vonage application, Voice capability (HTTP GET for both):",
            f"    answer URL  {web}://{parts.netloc}/answer{token}",
            f"    event URL   {web}://{parts.netloc}/event{token}",
        ]
        if config.vonage_signature_secret:
            lines.append("    (turn on signed webhooks: bridge checks Vonage's JWT on both)")
    lines.append(f"  stop:        Ctrl-C (calls get up to {config.drain_seconds:g} s to finish)")
    return lines


def print_banner(config: ServerConfig, port: int, stream: TextIO | None = None) -> None:
    """Print the banner to ``stream`` (stderr) if a person reads text logs there."""
    out = sys.stderr if stream is None else stream
    if not wants_banner(config.log_format, out):
        return
    out.write("\n".join(banner_lines(config, port, program_name())) + "\n")
    out.flush()
