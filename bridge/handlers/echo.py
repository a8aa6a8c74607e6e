"""Echo: the caller hears themselves. At the call's own rate the bytes come back unchanged.

With ``--pipeline-rate`` the frames pass through both resampling stages, which makes echo the
simplest end-to-end check of the whole pipeline.

Import rule: ``bridge.call`` only: the public handler API is enough.
"""

from __future__ import annotations

from bridge.call import Call


async def echo(call: Call) -> None:
    async for frame in call.audio():
        await call.play(frame)
