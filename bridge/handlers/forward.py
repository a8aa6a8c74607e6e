"""Forward: stream the caller to an upstream websocket and play what it sends back.

Written with the public handler API only (plus ``bridge.upstream`` for the link):

* caller audio (``call.on_audio``, synchronously from the socket's read) is resampled to the upstream's rate and sent as exact 20 ms
  binary frames of 16-bit PCM through an :class:`~bridge.upstream.UpstreamLink`, which
  survives upstream failures without losing audio;
* binary messages from the upstream, any size (odd byte counts carried over), are resampled
  to the call and queued for :meth:`Call.play`, which frames and paces them;
* text from the upstream is logged (``--transcripts DIR``: one JSON line each); a
  ``{"action":"clear"}`` drops bridge's queued audio and clears Vonage's buffer, a
  ``{"action":"notify","payload":...}`` becomes a marker behind the audio sent before it;
* Vonage's events (DTMF, notify, cleared) go up to the upstream as the same JSON text Vonage
  uses, in order with the audio.

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.protocol``, ``bridge.upstream``,
``bridge.units``, ``bridge.handlers.calllog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from bridge.audio.framing import SampleFramer
from bridge.audio.pcm import Samples, to_bytes, to_samples
from bridge.audio.resample import Resampler
from bridge.call import Call, Handler
from bridge.handlers.calllog import open_call_log
from bridge.protocol.vonage import PLAYBACK_BUFFER_FRAMES, Cleared, Dtmf, Event, Notified
from bridge.units import content_type, frame_samples
from bridge.upstream import Item, UpstreamLink, UpstreamOptions

log = logging.getLogger("bridge.forward")

#: Audio from the upstream waiting to be played (a bot may send a whole answer at once) is
#: bounded like Vonage's own buffer (docs/protocol.md s.4). Beyond it the oldest is dropped.
PLAY_QUEUE_MAX_FRAMES = PLAYBACK_BUFFER_FRAMES
#: Notify markers waiting among that audio: one per 20 ms frame of it; beyond, the oldest
#: marker is dropped (as in the call's own queue, ``bridge.audio.playout``).
PLAY_QUEUE_MAX_MARKERS = PLAY_QUEUE_MAX_FRAMES
#: Upstream text shown in a log line is cut to this many characters.
LOG_TEXT_CHARS = 300
UPSTREAM_UNAVAILABLE = 1011


@dataclass(frozen=True)
class ForwardSettings:
    upstream: UpstreamOptions
    #: Rate of the audio both ways on the link; ``None``: the call's rate.
    upstream_rate: int | None = None
    #: First text message on each connection (see :func:`render_hello`).
    hello: str | None = None
    #: Where ``<call id>.jsonl`` event logs go; ``None``: upstream text goes to the log.
    log_dir: Path | None = None


def forward(settings: ForwardSettings) -> Handler:
    """The ``--mode forward`` handler with its settings bound."""

    async def forward_call(call: Call) -> None:
        await Forwarder(call, settings).run()

    return forward_call


def render_hello(template: str, call: Call, upstream_rate: int) -> str:
    """Fill ``$name`` / ``${name}`` from the call; values are JSON-escaped (no quotes added).

    Names: ``call_id``, ``rate`` (the upstream's), ``call_rate``, ``content_type`` (of the
    upstream audio), and every metadata and query key that is an identifier (metadata wins);
    a name the call lacks becomes empty and is logged.
    """
    values: dict[str, str] = {}
    for source in (call.query, call.metadata):
        for key, value in source.items():
            if isinstance(key, str) and key.isidentifier():
                values[key] = value if isinstance(value, str) else json.dumps(value)
    values.update(
        call_id=call.id,
        rate=str(upstream_rate),
        call_rate=str(call.rate),
        content_type=content_type(upstream_rate),
    )
    escaped = {key: json.dumps(value, ensure_ascii=False)[1:-1] for key, value in values.items()}
    text = Template(template)
    missing = [name for name in text.get_identifiers() if name not in escaped]
    if missing:
        log.warning(
            "upstream hello names values this call lacks",
            extra={"call_id": call.id, "missing": missing},
        )
    return text.safe_substitute({**dict.fromkeys(missing, ""), **escaped})


def event_json(event: Event) -> str:
    """A Vonage event as Vonage wrote it (docs/protocol.md s.5), for the upstream."""
    obj: dict[str, Any]
    if isinstance(event, Dtmf):
        obj = {"event": "websocket:dtmf", "digit": event.digit}
        if event.duration_ms is not None:
            obj["duration"] = event.duration_ms
    elif isinstance(event, Notified):
        obj = {"event": "websocket:notify", "payload": event.payload}
    else:
        assert isinstance(event, Cleared)
        obj = {"event": "websocket:cleared"}
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Mark:
    payload: Any


@dataclass(frozen=True, slots=True)
class _Hook:
    run: Callable[[], None]


class Player:
    """Plays the upstream's audio into the call, in order with its notify markers.

    A queue of its own (rather than awaiting ``play`` in the link's reader) keeps the link
    reading while the call's outbound queue is full, so a ``clear`` sent after a long answer
    takes effect at once instead of after the answer. A hook (:meth:`put_hook`) runs when the
    audio before it has been handed to the call: where the audio after it starts.

    While nothing waits here and the call has room, audio goes to the call from the link's
    read itself (``Call.try_play``): the task wakes only to wait for room, or for a marker
    or a hook, not per frame.
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self._queue: deque[Samples | _Mark | _Hook] = deque()
        self._queued = 0
        self._max = PLAY_QUEUE_MAX_FRAMES * frame_samples(call.pipeline_rate)
        self._markers = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The task is inside ``call.play``: what comes now must queue behind its item.
        self._playing = False
        self.dropped_samples = 0
        self.dropped_markers = 0

    def start(self) -> None:
        self._playing = False  # (a cancelled task may have been inside play())
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A cancelled task keeps its CancelledError, whose traceback holds _run's frame,
            # which holds this player: not holding the task leaves no cycle behind.
            self._task = None

    def put_audio(self, samples: Samples) -> None:
        if not len(samples):
            return
        if not self._queue and not self._playing and self._call.try_play(samples):
            return  # straight to the call: the task wakes only when it must wait for room
        self._queue.append(samples)
        self._queued += len(samples)
        while self._queued > self._max:
            for i, item in enumerate(self._queue):
                if not isinstance(item, _Mark | _Hook):
                    del self._queue[i]
                    self._queued -= len(item)
                    self.dropped_samples += len(item)
                    break
        self._wake.set()

    def put_marker(self, payload: Any) -> None:
        if self._markers >= PLAY_QUEUE_MAX_MARKERS:
            for i, item in enumerate(self._queue):
                if isinstance(item, _Mark):
                    del self._queue[i]
                    self._markers -= 1
                    break
            if self.dropped_markers == 0:
                log.warning(
                    "upstream queued too many notify markers: dropping the oldest",
                    extra={"call_id": self._call.id, "max_markers": PLAY_QUEUE_MAX_MARKERS},
                )
            self.dropped_markers += 1
        self._queue.append(_Mark(payload))
        self._markers += 1
        self._wake.set()

    def put_hook(self, run: Callable[[], None]) -> None:
        self._queue.append(_Hook(run))
        self._wake.set()

    @property
    def queued_samples(self) -> int:
        """Audio waiting here, not yet handed to the call (at the pipeline rate)."""
        return self._queued

    def clear(self) -> None:
        """Barge-in: drop our queue and the call's, and tell Vonage to drop its buffer."""
        self.stop()  # it may be inside play(): cancelled there, it pushes nothing more
        self._queue.clear()
        self._queued = 0
        self._markers = 0
        self._call.clear()
        self.start()

    async def _run(self) -> None:
        call = self._call
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            item = self._queue.popleft()
            if isinstance(item, _Mark):
                self._markers -= 1
                call.notify(item.payload)
            elif isinstance(item, _Hook):
                item.run()
            else:
                self._queued -= len(item)
                self._playing = True
                await call.play(item)
                self._playing = False


class Forwarder:
    """One call's forwarding: the caller to the link, the link to the caller."""

    def __init__(self, call: Call, settings: ForwardSettings) -> None:
        self.call = call
        self.rate = settings.upstream_rate or call.rate
        self._to_upstream = Resampler(call.pipeline_rate, self.rate)
        self._direct = call.pipeline_rate == self.rate
        self._framer = SampleFramer(frame_samples(self.rate))
        self._from_upstream = Resampler(self.rate, call.pipeline_rate)
        self._odd_byte = b""
        self._log = open_call_log(settings.log_dir, call)
        self._player = Player(call)
        hello = settings.hello
        self.link = UpstreamLink(
            settings.upstream,
            on_message=self._on_message,
            on_give_up=self._on_give_up,
            hello=None if hello is None else render_hello(hello, call, self.rate),
            call_id=call.id,
        )
        # /metrics reads reconnects and replayed/lost audio from here while the call runs.
        call.upstream_stats = self.link.stats

    async def run(self) -> None:
        call = self.call
        self.link.start()
        self._player.start()
        events = asyncio.get_running_loop().create_task(self._pass_events())
        try:
            # Caller audio goes up from the socket's read, synchronously (no task per frame).
            call.on_audio(self._on_caller_frame)
            await call.wait_ended()
            self._send(self._to_upstream.flush())
            last = self._framer.flush()
            if last is not None:
                self.link.send_audio(to_bytes(last))
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
            await self.link.close()
            self._player.stop()
            if self._log is not None:
                await self._log.aclose()
            log.info(
                "upstream link closed",
                extra={
                    "call_id": call.id,
                    "upstream_audio_dropped_ms": self._player.dropped_samples
                    * 1000
                    // call.pipeline_rate,
                    "upstream_markers_dropped": self._player.dropped_markers
                    + call.stats.notifies_dropped,
                    **self.link.stats.summary(),
                },
            )

    def _on_caller_frame(self, frame: bytes) -> None:
        if self._direct and not self._framer.pending_samples:
            self.link.send_audio(frame)  # same rate both sides: the caller's bytes as they are
        else:
            self._send(self._to_upstream.process(to_samples(frame)))

    def _send(self, samples: Samples) -> None:
        for frame in self._framer.push(samples):
            self.link.send_audio(to_bytes(frame))

    async def _pass_events(self) -> None:
        async for event in self.call.events():
            text = event_json(event)
            self.link.send_text(text)
            if self._log is not None:
                self._log.write("call", message=json.loads(text))

    def _on_message(self, item: Item) -> None:
        if isinstance(item, str):
            self._on_text(item)
            return
        data = self._odd_byte + item if self._odd_byte else item
        if len(data) % 2:
            self._odd_byte, data = data[-1:], data[:-1]
        else:
            self._odd_byte = b""
        if data:
            self._player.put_audio(self._from_upstream.process(to_samples(data)))

    def _on_text(self, text: str) -> None:
        try:
            message: Any = json.loads(text)
        except (ValueError, RecursionError):  # nested too deep: kept as text, like non-JSON
            message = None
        if self._log is not None:
            self._log.write("upstream", message=text if message is None else message)
        else:
            log.info(
                "upstream message", extra={"call_id": self.call.id, "text": text[:LOG_TEXT_CHARS]}
            )
        if not isinstance(message, dict):
            return
        action = message.get("action")
        if action == "clear":
            self._from_upstream.reset()
            self._odd_byte = b""
            self._player.clear()
        elif action == "notify":
            self._player.put_marker(message.get("payload"))

    def _on_give_up(self, reason: str) -> None:
        self.call.hangup(UPSTREAM_UNAVAILABLE, "upstream unavailable")
