"""Start-up mistakes as one line: a port that cannot be bound, an output folder not writable.

A new user's first ``bridge serve`` should fail, if it fails, with a line naming what is wrong
and what to do, never a traceback: a second ``scripts/serve`` finds its port taken; a port
below 1024 needs privileges; an address may not exist on this host; ``--record-dir`` may point
somewhere unwritable, which without a check would start happily and then fail on every call.
Each becomes a :class:`ConfigError`, which ``bridge serve`` prints as one line (exit 2).

Import rule: standard library, ``bridge.config`` and ``bridge.errors`` only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from bridge.config import CoreSettings, ModeSettings
from bridge.errors import ConfigError

#: A test file written and removed in each output folder at start-up.
_PROBE = ".bridge-write-test"


def output_dirs(config: ModeSettings) -> dict[str, str]:
    """The output folders this configuration writes to, by setting name.

    ``--transcripts`` counts only where something writes there (forward and transcribe modes,
    ``--transcribe``): a mode ignores the other modes' settings.
    """
    dirs: dict[str, str] = {}
    if config.record_dir:
        dirs["record_dir"] = config.record_dir
    if config.transcripts and (config.call_mode in ("forward", "transcribe") or config.transcribe):
        dirs["transcripts"] = config.transcripts
    return dirs


def check_output_dirs(config: ModeSettings) -> None:
    """Create each output folder and write a file in it, or raise ``ConfigError`` saying why."""
    for name, raw in output_dirs(config).items():
        setting = ModeSettings.option(name, raw)
        path = Path(raw)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{setting}: cannot create the folder ({_reason(exc)}); choose a writable one"
            ) from exc
        probe = path / f"{_PROBE}-{os.getpid()}"
        try:
            probe.write_bytes(b"")
        except OSError as exc:
            raise ConfigError(
                f"{setting}: cannot write there ({_reason(exc)}); choose a writable folder"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()


def _reason(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


def display_address(host: str, port: int) -> str:
    """``host:port`` as a person would type it (IPv6 in brackets, all addresses as ``*``)."""
    shown = host or "*"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{shown}:{port}"


def bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The one line for a failed bind: the address, what went wrong, and the fix."""
    where = f"cannot listen on {display_address(host, port)}"
    host_option, port_option = CoreSettings.option("host", host), CoreSettings.option("port")
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            f"{where}: {host_option} is not a known name or address; use an address of this "
            "host, e.g. 127.0.0.1 or 0.0.0.0"
        )
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        held = f" (held by {holder})" if holder else ""
        return ConfigError(
            f"{where}: the address is already in use{held}; stop that process or choose "
            f"another {port_option}"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"{where}: permission denied (ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE); use a {port_option} of 1024 or above, behind a proxy "
            f"for port {port}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"{where}: {host} is not an address of this host; use one of its addresses, "
            "127.0.0.1 (this machine only) or 0.0.0.0 (all)"
        )
    return ConfigError(f"{where}: {_reason(exc)}")


def port_holder(port: int) -> str | None:
    """Which process listens on TCP ``port`` (``pid 123, bridge``), if cheap to tell.

    Linux only: the listening socket's inode from /proc/net/tcp{,6}, then the process whose
    file descriptors include it. Processes we may not inspect are skipped; None if unknown.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return f"pid {entry.name}, {_process_name(entry)}"
        except OSError:
            continue
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 is the inode.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def _process_name(entry: Path) -> str:
    """The program's name only: its arguments may hold a secret (``--token``)."""
    try:
        return (entry / "comm").read_text().strip() or "?"
    except OSError:
        return "?"
