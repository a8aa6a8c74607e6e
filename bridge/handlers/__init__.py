"""What a call does. Each built-in mode is a handler written with the public API.

A handler is ``async def handler(call: Call) -> None``; see ``bridge.call.Call``.

Import rule: ``bridge.call`` and ``bridge.audio``; never websockets.
"""

from bridge.call import Call, Handler
from bridge.handlers.echo import echo

HANDLERS: dict[str, Handler] = {"echo": echo}

__all__ = ["HANDLERS", "Call", "Handler", "echo"]
