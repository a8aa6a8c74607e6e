"""The first five minutes: start-up mistakes are one line and exit 2, and at a terminal
``bridge serve`` says what to do next.

Each mistake is made for real: a port another server holds, a port below 1024 for a user
without privileges, an address this host does not have, an output folder that cannot be
created or written. The banner is read from a real pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, running_server, start_server_process, wait_s


def serve(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bridge", "serve", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=wait_s(30),
        cwd=ROOT,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bridge: error: ")
    return lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_port_in_use_is_one_line_naming_the_address_and_the_holder(workers: str) -> None:
    async with running_server() as first:
        port = str(first.port)
        # The first server runs in this process, so the holder found is this process.
        result = await asyncio.to_thread(serve, "--port", port, "--workers", workers)
    line = one_line(result)
    assert f"127.0.0.1:{port}" in line
    assert "already in use" in line
    assert f"pid {os.getpid()}" in line
    assert "--port" in line


def test_a_second_multi_worker_server_does_not_share_the_port_of_the_first() -> None:
    """SO_REUSEPORT would let it bind beside the first one's workers and split the calls."""
    first = start_server_process(["--workers", "2"])
    try:
        port = first.url.rsplit(":", 1)[1].split("/")[0]
        line = one_line(serve("--port", port, "--workers", "2"))
    finally:
        first.stop()
    assert f"127.0.0.1:{port}" in line
    assert "already in use" in line


def test_an_address_not_on_this_host_is_one_line() -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never assigned to a host.
    line = one_line(serve("--host", "192.0.2.1", "--port", "0", "--insecure"))
    assert "192.0.2.1" in line
    assert "not an address of this host" in line


def test_an_unknown_host_name_is_one_line() -> None:
    line = one_line(serve("--host", "no-such-host.invalid", "--port", "0", "--insecure"))
    assert "no-such-host.invalid" in line


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def _without_capability(name: str) -> tuple[str, ...]:
    """A command prefix that runs a root process without capability ``name``."""
    setpriv = shutil.which("setpriv")  # util-linux, on every Debian
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed")
    return (setpriv, "--bounding-set", f"-{name}")


@pytest.mark.skipif(
    _unprivileged_port_start() <= 80, reason="this machine lets any user bind port 80"
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_privileged_port_without_privileges_is_one_line(workers: str) -> None:
    prefix = _without_capability("net_bind_service") if os.geteuid() == 0 else ()
    line = one_line(serve("--port", "80", "--workers", workers, prefix=prefix))
    assert "127.0.0.1:80" in line
    assert "permission denied" in line
    assert "--port (BRIDGE_PORT) of 1024 or above" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--record-dir", "/proc/forbidden"], "--record-dir"),
        (["--record-dir", "{file}/recordings"], "--record-dir"),
        (["--mode", "transcribe", "--transcripts", "{file}/t"], "--transcripts"),
        (
            ["--upstream", "ws://127.0.0.1:9/", "--mode", "forward", "--transcripts", "{file}/t"],
            "--transcripts",
        ),
        (["--record-dir", "/proc/forbidden", "--workers", "2"], "--record-dir"),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_one_line(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    line = one_line(serve(*(arg.format(file=a_file) for arg in args), "--port", "0"))
    assert needle in line
    assert "cannot create the folder" in line


def test_a_folder_without_write_permission_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # Root writes anywhere unless it gives up CAP_DAC_OVERRIDE.
    prefix = _without_capability("dac_override") if os.geteuid() == 0 else ()
    line = one_line(serve("--record-dir", str(locked), "--port", "0", prefix=prefix))
    assert "cannot write there" in line
    assert "permission denied" in line
    assert list(locked.iterdir()) == []


def test_output_folders_are_created_at_start_up_and_left_clean(tmp_path: Path) -> None:
    records = tmp_path / "new" / "recordings"
    server = start_server_process(["--record-dir", str(records)])
    try:
        assert records.is_dir()  # before any call
        assert list(records.iterdir()) == []  # the test write left nothing behind
    finally:
        server.stop()


# --- the "what now" banner, read from a real terminal ---------------------------------------


def _serve_on_a_terminal(args: list[str], until: str, seconds: float = 20.0) -> str:
    """Run ``bridge serve`` with stderr on a pseudo-terminal; return what it printed up to
    and including the first line containing ``until`` (plus anything already written)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        cwd=ROOT,
    )
    os.close(follower)
    out = b""
    try:
        deadline = time.monotonic() + wait_s(seconds)
        while until.encode() not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
        # Give a late banner line a moment, so "printed once" can be checked.
        end = time.monotonic() + wait_s(0.5)
        while time.monotonic() < end:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    out += os.read(leader, 4096)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=wait_s(15))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(leader)
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_at_a_terminal_serve_prints_what_to_do_next_once() -> None:
    text = _serve_on_a_terminal(
        ["--public-url", "wss://bridge.example.com", "--token", "s3cret"], "stop:"
    )
    assert text.count("bridge is listening: ws://127.0.0.1:") == 1, text
    assert " call ws://127.0.0.1:" in text
    assert "answer URL  https://bridge.example.com/answer?token=YOUR_TOKEN" in text
    assert "event URL   https://bridge.example.com/event?token=YOUR_TOKEN" in text
    assert "s3cret" not in text


def test_with_workers_the_banner_is_printed_once_by_the_supervisor() -> None:
    text = _serve_on_a_terminal(["--workers", "2"], "stop:", seconds=40)
    assert text.count("bridge is listening:") == 1, text


def test_json_logs_at_a_terminal_stay_one_json_object_per_line() -> None:
    text = _serve_on_a_terminal(["--log-format", "json"], '"listening"')
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, text
    for line in lines:
        json.loads(line)  # the banner would not parse
    assert "bridge is listening" not in text
