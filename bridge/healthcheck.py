"""``python -m bridge.healthcheck``: exit 0 if this machine's bridge answers ``GET /health``.

For container health checks (deploy/Dockerfile's HEALTHCHECK): slim images have no curl, and
a hand-written URL would miss ``BRIDGE_PORT``, ``BRIDGE_HOST`` or ``BRIDGE_TLS_CERT``. This
reads the same ``BRIDGE_*`` variables as ``bridge serve`` and asks the server it describes.
``/health`` stays 200 while bridge drains, so a draining container is never marked unhealthy.
A failure prints one line on stderr and exits 1.

Import rule: standard library, ``bridge.config`` and ``bridge.errors`` only.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from bridge.config import ServerConfig, config_from
from bridge.errors import ConfigError

TIMEOUT_S = 3.0
#: A wildcard bind is reached on loopback.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def health_url(config: ServerConfig) -> str:
    host = _WILDCARDS.get(config.host, config.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if config.tls_cert else "http"
    return f"{scheme}://{host}:{config.port}/health"


def check(environ: Mapping[str, str] | None = None) -> str | None:
    """None if healthy, else why not (one line)."""
    try:
        config: ServerConfig = config_from(None, environ)
    except ConfigError as exc:
        return f"bad settings: {exc}"
    url = health_url(config)
    # Our own certificate, on loopback: whether it verifies is not what is being checked.
    context = ssl._create_unverified_context() if config.tls_cert else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as reply:  # noqa: S310
            status = int(reply.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main() -> int:
    problem = check()
    if problem is None:
        return 0
    sys.stderr.write(f"bridge healthcheck: {problem}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
