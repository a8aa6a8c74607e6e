"""What a call does. Each built-in mode is a handler written with the public API.

A handler is ``async def handler(call: Call) -> None``; see ``bridge.call.Call``.
:func:`build_handler` turns the mode settings (``bridge.config.ModeSettings``) into the
handler every call runs:

* the mode (``HANDLERS``): ``echo``, ``forward`` (``--upstream``, or a speech service with
  ``--upstream-dialect``: ``bridge.handlers.speech``), ``transcribe`` (``--transcripts``),
  ``play`` (``--play`` or ``--tone``, ``--barge-in``);
* wrapped by ``transcribed`` when ``--transcribe`` is given in another mode, and by
  ``recorded`` when ``--record-dir`` is given, whatever the mode.

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.config``, ``bridge.protocol``,
``bridge.transcribe``, ``bridge.filewriter`` (started with the server) and the modes
(``bridge.handlers``); never websockets (``forward`` reaches its upstream through
``bridge.upstream``, the one client handlers may use).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from bridge.call import Call, Handler
from bridge.config import Mode, ModeSettings
from bridge.filewriter import file_writer
from bridge.handlers.echo import echo
from bridge.handlers.forward import ForwardSettings, forward
from bridge.handlers.play import PlaySettings, load_prompt, play
from bridge.handlers.record import recorded
from bridge.handlers.speech import resolve_service, speech, upstream_headers
from bridge.handlers.transcribe import transcribe, transcribed
from bridge.transcribe import AsrPool, check_available
from bridge.upstream import UpstreamOptions


class CounterSource(Protocol):
    """Process-wide totals a mode keeps (e.g. ``bridge.transcribe.AsrTotals``)."""

    def counters(self) -> Mapping[str, float]: ...


class BuiltHandler:
    """A handler plus the process-wide resources it owns (the ASR workers), for ``close``,
    and the totals it keeps for ``/metrics`` (``counters``)."""

    def __init__(
        self,
        handler: Handler,
        closers: list[Callable[[], None]] | None = None,
        sources: list[CounterSource] | None = None,
    ) -> None:
        self.handler = handler
        self._closers = closers or []
        self._sources = sources or []

    def counters(self) -> dict[str, float]:
        """Cumulative totals by name, summed over the mode's sources (see ``bridge.metrics``)."""
        out: dict[str, float] = {}
        for source in self._sources:
            for name, value in source.counters().items():
                out[name] = out.get(name, 0) + value
        return out

    async def __call__(self, call: Call) -> None:
        await self.handler(call)

    def close(self) -> None:
        """Release what the mode holds (stops ASR worker processes); idempotent."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()


class _Owned:
    """What a mode's builder may add to: resources to close, counters for ``/metrics``."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], None]] = []
        self.sources: list[CounterSource] = []

    def pool(self, option: str) -> AsrPool:
        """A recogniser pool (``option``: the setting that asked for it, for the error)."""
        check_available(option)
        pool = AsrPool()
        self.closers.append(pool.close)
        self.sources.append(pool.totals)
        return pool


def _echo(config: ModeSettings, owned: _Owned) -> Handler:
    return echo


def _forward(config: ModeSettings, owned: _Owned) -> Handler:
    if config.upstream_dialect != "raw":
        setup = resolve_service(config)
        if setup.poster is not None:
            owned.closers.append(setup.poster.cancel)
        return speech(setup)
    assert config.upstream is not None  # ModeSettings checks it for --mode forward
    headers, _ = upstream_headers(config, os.environ)
    options = UpstreamOptions(
        url=config.upstream,
        buffer_ms=config.upstream_buffer_ms,
        replay_max_ms=config.upstream_replay_max_ms,
        max_attempts=config.upstream_max_attempts,
        backoff_ms=config.upstream_backoff_ms,
        timeout_s=config.upstream_timeout_s,
        headers=headers,
        subprotocols=config.upstream_subprotocol,
    )
    return forward(
        ForwardSettings(
            upstream=options,
            upstream_rate=config.upstream_rate,
            hello=config.upstream_hello,
            log_dir=Path(config.transcripts) if config.transcripts else None,
        )
    )


def _transcribe(config: ModeSettings, owned: _Owned) -> Handler:
    assert config.transcripts is not None  # ModeSettings checks it for --mode transcribe
    return transcribe(owned.pool(config.option("mode", "transcribe")), Path(config.transcripts))


def _play(config: ModeSettings, owned: _Owned) -> Handler:
    if config.play is not None:
        settings = PlaySettings(
            prompt=load_prompt(config.play, config.option("play")),
            name=Path(config.play).name,
            barge_in=config.barge_in,
        )
    else:
        settings = PlaySettings(tone_hz=config.tone, barge_in=config.barge_in)
    return play(settings)


#: Each mode's builder: settings from the config in, the handler out.
HANDLERS: dict[Mode, Callable[[ModeSettings, _Owned], Handler]] = {
    "echo": _echo,
    "forward": _forward,
    "transcribe": _transcribe,
    "play": _play,
}


def build_handler(config: ModeSettings) -> BuiltHandler:
    """The handler for ``config.mode`` with its settings bound, recorded if asked.

    Raises ``ConfigError`` for what only shows when building (an unreadable ``--play``
    file, pocketsphinx missing). Call ``close()`` on the result when the server stops.
    """
    owned = _Owned()
    handler = HANDLERS[config.call_mode](config, owned)
    if config.transcribe and config.call_mode != "transcribe":
        assert config.transcripts is not None  # ModeSettings checks it for --transcribe
        pool = owned.pool(config.option("transcribe"))
        handler = transcribed(handler, pool, Path(config.transcripts))
    if config.record_dir:
        handler = recorded(handler, Path(config.record_dir))
    if config.record_dir or config.transcripts:
        # Its process and pipes exist before the first call, not from the middle of one.
        file_writer().start()
    return BuiltHandler(handler, owned.closers, owned.sources)


__all__ = ["HANDLERS", "BuiltHandler", "Call", "CounterSource", "Handler", "build_handler", "echo"]
