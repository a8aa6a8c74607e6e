"""Per-call files: safe names from call ids, and the JSON-lines event log.

A call id comes from the query string or the first message, which the NCCO's author controls
but bridge does not: it is reduced to ``[A-Za-z0-9._-]`` before it names a file, and a name
already taken gets a ``-2``, ``-3``... suffix (two calls with one id never share a file).

The log's lines are written by the process's file writer (``bridge.filewriter``, a process
of its own), in order, one ``write`` each (so a crash loses at most the last moment's
lines); the event loop only formats them.

Import rule: standard library, ``bridge.call``, ``bridge.filewriter`` and ``bridge.units`` only.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.call import Call
from bridge.filewriter import file_writer
from bridge.units import SECOND

log = logging.getLogger("bridge.calllog")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 64


def safe_name(call_id: str) -> str:
    """A file name stem for ``call_id``: no separators, no leading dot, never empty."""
    name = _UNSAFE.sub("_", call_id)[:MAX_NAME].lstrip(".")
    return name or "call"


def reserve_path(directory: Path, call_id: str, suffix: str) -> Path:
    """Create ``directory/<safe id><suffix>`` empty (or ``-2``, ``-3``...), never overwriting."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = safe_name(call_id)
    for n in range(1, 10_000):
        path = directory / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            path.open("x").close()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free file name for call {call_id!r} in {directory}")


def json_line(obj: dict[str, Any]) -> str:
    """One JSON line, UTF-8 as it is where it can be: text from a peer may hold a lone
    surrogate (JSON's ``"\\ud800"`` decodes to one), which UTF-8 cannot encode; then the
    line is written with ASCII escapes instead, still valid JSON, never an error."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, default=str)
    return text


class CallLog:
    """``DIR/<call id>.jsonl``: one JSON object per line, each line one ``write``.

    Every line has ``call_id``, ``type``, ``at`` (UTC wall-clock time, ISO 8601) and ``t``
    (seconds since the call started, on the call's monotonic clock).
    """

    def __init__(self, directory: Path, call: Call, suffix: str = ".jsonl") -> None:
        self.path = reserve_path(directory, call.id, suffix)
        self._call = call
        self._files = file_writer()
        self._file = self._files.open(self.path, append=True, on_error=self._on_error)
        self._closed = False
        self._failed = False
        #: Lines the writer could not take (its queue was full) or could not write.
        self.lost_lines = 0

    def write(self, kind: str, **fields: Any) -> None:
        if self._closed:
            return
        call = self._call
        line = {
            "call_id": call.id,
            "type": kind,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "t": round((call.clock.now_ns() - call.start_ns) / SECOND, 3),
            **fields,
        }
        data = (json_line(line) + "\n").encode()
        if not self._files.write(self._file, data):
            self._on_error(OSError("the file writer is behind (disk too slow): queue full"))

    def close(self) -> None:
        """No more lines; the file is closed once the lines before are written."""
        if self._closed:
            return
        self._closed = True
        self._files.close(self._file)

    async def aclose(self) -> None:
        """:meth:`close`, and wait until every line is on disk."""
        self.close()
        await self._files.written()

    def _on_error(self, exc: Exception) -> None:
        """A line was not written (reported by the file writer, or refused): counted, logged
        once."""
        self.lost_lines += 1
        if not self._failed:
            self._failed = True
            log.error(
                "cannot write the call's event log; lines are lost",
                extra={"call_id": self._call.id, "path": str(self.path), "error": str(exc)},
            )


def open_call_log(directory: Path | None, call: Call, suffix: str = ".jsonl") -> CallLog | None:
    """The call's JSON-lines log in ``directory``; ``None`` (logged) if it cannot be made."""
    if directory is None:
        return None
    try:
        return CallLog(directory, call, suffix)
    except OSError as exc:
        log.error(
            "cannot write the call's event log; going on without it",
            extra={"call_id": call.id, "dir": str(directory), "error": str(exc)},
        )
        return None
