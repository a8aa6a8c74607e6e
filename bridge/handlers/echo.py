"""Echo: the caller hears themselves. At the call's own rate the bytes come back unchanged.

Written with the synchronous side of the public API (``Call.on_audio``, ``Call.play_now``):
each frame goes straight from the socket's read into the outbound schedule, with no task
waking per frame; at the call's own rate it stays the bytes object that arrived. With
``--pipeline-rate`` the frames pass through both resampling stages, which makes echo the
simplest end-to-end check of the whole pipeline.

Import rule: ``bridge.call`` only: the public handler API is enough.
"""

from __future__ import annotations

from bridge.call import Call


async def echo(call: Call) -> None:
    call.on_audio(call.play_now)
    await call.wait_ended()
