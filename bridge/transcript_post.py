"""``--transcript-url``: POST each final transcript to the user's application, off the call path.

One poster per process. A call hands it a transcript line (:meth:`TranscriptPoster.post`,
synchronous, never waits); a bounded queue holds lines until one worker task POSTs them as
JSON, in order. A failed POST (refused, timed out, a 5xx or 429 answer) is retried with
exponential backoff up to ``max_attempts``; a 4xx other than 429 is the application refusing
that line and is not retried. When the queue is full the *oldest* waiting line is dropped:
the application then gets the newest results, and every drop is counted (``stats``, read by
``/metrics``) and logged once per burst. So a slow or absent application costs a call
nothing: no await on the call's path, bounded memory, bounded retries.

HTTP/1.1 over asyncio streams (``http://`` or ``https://``), one request per connection: a
transcript a few seconds apart does not need connection reuse, and the standard library has
no asynchronous client.

Import rule: asyncio and the standard library only (and ``bridge.__version__``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridge import __version__

log = logging.getLogger("bridge.transcripts")

QUEUE_MAX = 1000
MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
REQUEST_TIMEOUT_S = 5.0


@dataclass
class PostStats:
    queued: int = 0
    sent: int = 0
    #: Given up after ``max_attempts`` (or refused with a 4xx).
    failed: int = 0
    #: Dropped from a full queue without being tried.
    dropped: int = 0
    retries: int = 0


#: Every poster's counts in this process, for ``/metrics``.
POST_STATS = PostStats()


class PostError(Exception):
    """One POST did not succeed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class TranscriptPoster:
    """The process's queue of transcripts to POST (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        queue_max: int = QUEUE_MAX,
        max_attempts: int = MAX_ATTEMPTS,
        first_backoff_s: float = FIRST_BACKOFF_S,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = parts.scheme == "https"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host_header = parts.netloc.rpartition("@")[2]
        self._queue: deque[dict[str, Any]] = deque()
        self._queue_max = queue_max
        self._max_attempts = max_attempts
        self._first_backoff_s = first_backoff_s
        self._timeout_s = timeout_s
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropping = False
        self._idle: asyncio.Event | None = None  # set when the queue empties (close waits)
        self.stats = PostStats()

    def post(self, line: dict[str, Any]) -> None:
        """Queue one transcript line; never waits (drops the oldest when full)."""
        if len(self._queue) >= self._queue_max:
            self._queue.popleft()
            self.stats.dropped += 1
            POST_STATS.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "transcript queue full: dropping the oldest transcripts",
                    extra={"url": self.url, "queue_max": self._queue_max},
                )
        self._queue.append(line)
        self.stats.queued += 1
        POST_STATS.queued += 1
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Let queued lines go out for up to ``timeout_s``, then stop."""
        task = self._task
        if task is None:
            return
        self._idle = asyncio.Event()
        if self._queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue:
                self._dropping = False
                if self._idle is not None:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            line = self._queue[0]
            await self._deliver(line)
            if self._queue and self._queue[0] is line:
                self._queue.popleft()

    async def _deliver(self, line: dict[str, Any]) -> None:
        try:
            body = json.dumps(line, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate from the service: ASCII escapes, valid JSON
            body = json.dumps(line).encode()
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._post_once(body)
            except PostError as exc:
                if not exc.retry or attempt == self._max_attempts:
                    self.stats.failed += 1
                    POST_STATS.failed += 1
                    log.warning(
                        "transcript POST failed",
                        extra={"url": self.url, "attempts": attempt, "error": str(exc)},
                    )
                    return
                self.stats.retries += 1
                POST_STATS.retries += 1
                delay = min(MAX_BACKOFF_S, self._first_backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            else:
                self.stats.sent += 1
                POST_STATS.sent += 1
                return

    async def _post_once(self, body: bytes) -> None:
        head = (
            f"POST {self._target} HTTP/1.1\r\n"
            f"Host: {self._host_header}\r\n"
            f"User-Agent: bridge/{__version__}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                context = ssl.create_default_context() if self._tls else None
                reader, writer = await asyncio.open_connection(self._host, self._port, ssl=context)
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readline()
        except (OSError, TimeoutError) as exc:
            raise PostError(f"{type(exc).__name__}: {exc}".strip(": "), retry=True) from exc
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise PostError(f"not an HTTP answer: {status_line[:40]!r}", retry=True)
        status = int(parts[1])
        if 200 <= status < 300:
            return
        raise PostError(f"HTTP {status}", retry=status >= 500 or status == 429)
