"""Debian's nginx running deploy/nginx.conf for real, for the tests that claim nginx.

The shipped file is used as it is, except for the lines a test must change (paths, port,
upstream addresses, worker count), each replaced exactly once so an edit to the file cannot
silently bypass them. The upstream ``server`` lines keep the shipped parameters (max_fails,
fail_timeout): only the addresses are the test's.

Port: nginx cannot report a port it picked, and picking one by binding port 0 and closing it
races with other processes. So the proposer tries random high ports and lets nginx bind: if
the port is taken nginx exits at once with EADDRINUSE and the next port is tried (5 tries).
nginx writes its pid file only after its listening sockets are open, so the pid file appearing
means it is ready.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import ROOT, ServerProcess, require_command, wait_s

CONF = ROOT / "deploy" / "nginx.conf"
PORT_TRIES = 5
#: One ``server ADDRESS PARAMS;`` line of the shipped upstream block.
SERVER_LINE = re.compile(r"^( +)server (\S+)((?: \S+)*);\n", re.MULTILINE)


def nginx_binary() -> str:
    """nginx's path; else the test skips saying how to install it (fails under CI)."""
    return require_command("nginx")


def address_of(server: ServerProcess) -> str:
    """``host:port`` of a bridge process, from the URL it logged."""
    return server.url.split("://", 1)[1].split("/", 1)[0]


def shipped_server_params() -> str:
    """The parameters every upstream server line of the shipped file carries (one set)."""
    params = {m.group(3).strip() for m in SERVER_LINE.finditer(CONF.read_text())}
    assert len(params) == 1, f"deploy/nginx.conf upstream lines differ: {params}"
    return params.pop()


def fail_timeout_s() -> float:
    """How long nginx leaves a failed instance alone (the shipped ``fail_timeout``)."""
    found = re.search(r"fail_timeout=(\d+)s", shipped_server_params())
    assert found, "deploy/nginx.conf upstream lines have no fail_timeout=Ns"
    return float(found.group(1))


def render_config(
    tmp: Path, port: int, upstreams: list[str], cert: Path, key: Path, workers: int = 1
) -> str:
    text = CONF.read_text()
    matches = list(SERVER_LINE.finditer(text))
    assert matches, "deploy/nginx.conf has no upstream server lines"
    indent, params = matches[0].group(1), matches[0].group(3)
    block = text[matches[0].start() : matches[-1].end()]
    assert block == "".join(m.group(0) for m in matches), "upstream server lines not together"
    servers = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    text = text.replace(block, servers)
    replacements = {
        "pid /run/nginx-bridge.pid;": f"pid {tmp}/nginx.pid;",
        "error_log /var/log/nginx/bridge-error.log warn;": f"error_log {tmp}/error.log info;",
        "    access_log /var/log/nginx/bridge-access.log;\n": (
            f"    access_log {tmp}/access.log;\n"
            f"    client_body_temp_path {tmp}/body;\n"
            f"    proxy_temp_path {tmp}/proxy;\n"
            f"    fastcgi_temp_path {tmp}/fastcgi;\n"
            f"    uwsgi_temp_path {tmp}/uwsgi;\n"
            f"    scgi_temp_path {tmp}/scgi;\n"
        ),
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/ssl/bridge/fullchain.pem": str(cert),
        "/etc/ssl/bridge/privkey.pem": str(key),
        "worker_processes auto;": f"worker_processes {workers};",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, tmp: Path) -> None:
        self.proc, self.port, self.tmp = proc, port, tmp

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: closes proxied sockets
            try:
                self.proc.wait(timeout=wait_s(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nginx(
    binary: str, tmp: Path, upstreams: list[str], cert: Path, key: Path, workers: int = 1
) -> Nginx:
    extra = ["-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")]
    for _ in range(PORT_TRIES):
        port = random.randrange(20000, 60000)
        conf = tmp / "nginx.conf"
        conf.write_text(render_config(tmp, port, upstreams, cert, key, workers))
        (tmp / "nginx.pid").unlink(missing_ok=True)
        stderr = tmp / "stderr.log"
        with stderr.open("wb") as sink:
            proc = subprocess.Popen(
                [binary, "-p", str(tmp), "-c", str(conf), *extra],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        deadline = time.monotonic() + wait_s(10)
        while time.monotonic() < deadline:
            if (tmp / "nginx.pid").exists():
                return Nginx(proc, port, tmp)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err = stderr.read_text(errors="replace")
        if "Address already in use" not in err:
            raise AssertionError(f"nginx did not start: {err.strip()}")
    raise AssertionError(f"no free port for nginx in {PORT_TRIES} tries")
