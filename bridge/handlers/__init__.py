"""What a call does. Each built-in mode is a handler written with the public API.

A handler is ``async def handler(call: Call) -> None``; see ``bridge.call.Call``.
:func:`build_handler` turns the server's config into the handler every call runs.

Import rule: ``bridge.call``, ``bridge.audio``, ``bridge.config``; never websockets
(``forward`` reaches its upstream through ``bridge.upstream``).
"""

from bridge.call import Call, Handler
from bridge.config import ServerConfig
from bridge.handlers.echo import echo

HANDLERS: dict[str, Handler] = {"echo": echo}


def build_handler(config: ServerConfig) -> Handler:
    """The handler for ``config.mode`` with its settings bound."""
    return HANDLERS[config.mode]


__all__ = ["HANDLERS", "Call", "Handler", "build_handler", "echo"]
