"""One simulated caller's websocket, on bridge's connection layer (docs/transport.md).

No task, queue or future per message: each read is handled at once and its messages go
synchronously to the call, stamped with one clock reading taken when the read arrived; sends
are synchronous writes. The simulator waits longer for a closing handshake than bridge does
(:data:`CLOSE_TIMEOUT_S`), as a phone network would. permessage-deflate is never offered
(docs/lessons.md s.7) and no User-Agent is sent (docs/protocol.md s.1).

Import rule: asyncio, websockets (its URI parser), ``bridge.pacing``, ``bridge.protocol``,
``bridge.transport`` and ``bridge.sim.options``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from websockets.uri import WebSocketURI, parse_uri

from bridge.pacing import Clock
from bridge.protocol.twilio import twilio_signature
from bridge.sim.options import CallOptions
from bridge.transport.client import ClientConnection, Receiver, ssl_context

#: How long the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class SimConnection(ClientConnection):
    """The caller's side of the websocket (see the module doc)."""

    close_timeout_s = CLOSE_TIMEOUT_S

    def __init__(
        self, uri: WebSocketURI, headers: Mapping[str, str], receiver: Receiver, clock: Clock
    ) -> None:
        super().__init__(uri, headers, receiver, clock, max_size=MAX_MESSAGE_BYTES)


def handshake_headers(opts: CallOptions) -> Mapping[str, str]:
    """Extra HTTP headers for the upgrade request (and a carrier's credentials)."""
    headers = dict(opts.extra_headers)
    if opts.twilio_auth_token is not None:
        headers["X-Twilio-Signature"] = twilio_signature(opts.twilio_auth_token, opts.url)
    if opts.telnyx_token is not None:
        headers["x-telnyx-streaming-auth-token"] = opts.telnyx_token
    return headers


async def open_connection(opts: CallOptions, receiver: Receiver, clock: Clock) -> SimConnection:
    """Connect and complete the opening handshake within ``connect_timeout_s``."""
    uri = parse_uri(opts.url)
    loop = asyncio.get_running_loop()
    headers = handshake_headers(opts)
    conn: SimConnection | None = None
    try:
        async with asyncio.timeout(opts.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: SimConnection(uri, headers, receiver, clock),
                uri.host,
                uri.port,
                ssl=(
                    ssl_context(str(opts.ca_file) if opts.ca_file else None, opts.insecure)
                    if uri.secure
                    else None
                ),
            )
            await conn.opened
    except BaseException:
        if conn is not None:
            conn.abort()
        raise
    return conn
