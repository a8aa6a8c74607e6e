"""Small named helpers shared by the integration tests.

Real-time waits are expressed through :func:`wait_s`, scaled by ``BRIDGE_TEST_TIME_SCALE`` so
a slow CI machine can stretch them without editing tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import trustme

from bridge.call import Handler
from bridge.config import ServerConfig
from bridge.handlers import echo
from bridge.server import BridgeServer

TIME_SCALE = float(os.environ.get("BRIDGE_TEST_TIME_SCALE", "1.0"))
#: The websocket backend every server in the tests runs on (``--transport``): CI runs the
#: integration suite once per backend (``BRIDGE_TRANSPORT=websockets`` / ``picows``).
TRANSPORT = os.environ.get("BRIDGE_TRANSPORT", "auto")
#: This is scripts/test's second run (the integration tests again, on websockets, followed by
#: the CI soak): long real-time tests that do not depend on the backend run in the default
#: run only, so that the two lanes end together.
IN_SUITES_SECOND_RUN = os.environ.get("BRIDGE_TEST_RUN") == "websockets"
#: Why such a test is skipped here.
RUNS_IN_THE_DEFAULT_RUN = "real time, backend-independent: runs in scripts/test's default run"
ROOT = Path(__file__).resolve().parent.parent
#: Speech and other fixtures, made once and committed (tests/data/README.md says how).
DATA = ROOT / "tests" / "data"
#: The system programs tests may use, with their Debian packages (scripts/system-packages).
SYSTEM_PACKAGES = ROOT / "scripts" / "system-packages.list"


def wait_s(seconds: float) -> float:
    return seconds * TIME_SCALE


def system_packages() -> dict[str, str]:
    """Command name to Debian package, from scripts/system-packages.list."""
    packages: dict[str, str] = {}
    for line in SYSTEM_PACKAGES.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            packages[fields[0]] = fields[1]
    return packages


def require_command(name: str) -> str:
    """The path of system program ``name``, else skip the test saying how to install it.

    Under CI (``CI`` set, as ``.ci/run`` does) a missing program fails the test instead: CI
    installs every one, so missing means the install broke. ``name`` must be listed in
    scripts/system-packages.list, the one place that says what the tests need.
    """
    package = system_packages().get(name)
    if package is None:
        raise AssertionError(f"{name} is not in {SYSTEM_PACKAGES.relative_to(ROOT)}; add it there")
    # Debian installs nginx in /usr/sbin, which is not on a normal user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is not None:
        return found
    reason = f"{name} is not installed: run scripts/test as root, or sudo apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def running_server(
    handler: Handler = echo, **settings: object
) -> AsyncIterator[BridgeServer]:
    """A real bridge server on 127.0.0.1, port chosen by the OS, in this test's loop."""
    config = ServerConfig(**{"port": 0, "transport": TRANSPORT, **settings})  # type: ignore[arg-type]
    server = BridgeServer(config, handler)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def url_of(server: BridgeServer, path: str = "/socket", query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}{'?' + query if query else ''}"


@dataclass
class ServerProcess:
    """``bridge serve`` as a child process; its JSON log lines are collected."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[dict[str, object]] = field(default_factory=list)

    reader: threading.Thread | None = None

    def drain_stderr(self) -> None:
        """Read log lines as they come, so a chatty server never blocks on a full pipe."""
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` (``None``: just wait) and return the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=wait_s(timeout))
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        if self.reader is not None:
            self.reader.join(timeout=wait_s(5))
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def messages(self) -> list[str]:
        return [str(line.get("msg")) for line in self.lines]


def run_bridge(
    *args: str, timeout_s: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m bridge ARGS`` to its end, as a user runs it: text output captured, the
    exit status left to the caller, ``env`` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=wait_s(timeout_s),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def start_server_process(
    args: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
    module: str | None = None,
) -> ServerProcess:
    """Start ``python -m bridge serve --port 0`` and read the bound URL from its log;
    ``preexec_fn`` runs in the child before it starts (a resource limit). ``module``: run
    ``python -m MODULE ARGS`` instead (a test server that logs ``listening`` the same way)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "bridge", "serve", "--port", "0", "--log-format", "json"]
    if module is not None:
        argv = [sys.executable, "-m", module]
    proc = subprocess.Popen(
        [*argv, *args],
        preexec_fn=preexec_fn,  # noqa: PLW1509 - a resource limit, set before exec
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    lines: list[dict[str, object]] = []
    for raw in proc.stderr:
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            lines.append(line)
            if line.get("msg") == "listening":
                server = ServerProcess(proc, str(line["url"]), lines)
                server.reader = threading.Thread(target=server.drain_stderr, daemon=True)
                server.reader.start()
                return server
    proc.wait()
    raise RuntimeError(f"bridge serve exited with {proc.returncode} before listening")


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost: (CA file, chain, key)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, chain, key = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca_file, chain, key


def skipped_silent_rows(rows: np.ndarray, frames: np.ndarray) -> int:
    """How many all-zero ``rows`` must be skipped for ``frames`` to be their prefix, in order
    (fails if any other row is in the way or ``frames`` do not all fit).

    A recording's right channel holds bridge's frames at their slots on the send schedule;
    when the caller's audio is held back past a slot (a stalled test host), the schedule moves
    on (``bridge.pacing``) and that slot stays silent, as Vonage would play it."""
    skipped = 0
    r = 0
    for j, frame in enumerate(frames):
        while r < len(rows) and not np.array_equal(rows[r], frame):
            assert not rows[r].any(), f"row {r} is neither sent frame {j} nor silence"
            skipped += 1
            r += 1
        assert r < len(rows), f"sent frame {j} is not in the file"
        r += 1
    return skipped
