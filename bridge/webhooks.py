"""The two Vonage webhooks bridge can serve itself: ``GET /answer`` and ``GET /event``.

``/answer`` returns the NCCO that connects the call to this bridge's own websocket
(``--public-url`` + ``--path``). Vonage's answer query values ``uuid``, ``conversation_uuid``,
``from`` and ``to`` are carried into the websocket URI's query string, so they arrive as the
call's metadata (``call.query``) and ``uuid`` becomes the call id in every log line. The
connect is ``synchronous`` with ``eventUrl`` = our ``/event`` and ``eventMethod: GET``
(protocol.md s.1), so everything works with GET.

How the websocket is authenticated follows the server's own settings, so the NCCO always opens
a socket the server will accept:

- ``--vonage-signature-secret``: ``authorization: {"type": "vonage"}`` (Vonage signs the
  upgrade with the same secret);
- ``--token`` only: ``authorization: {"type": "custom", "value": "Bearer TOKEN"}``, a header
  rather than the query string (query strings end up in proxy logs). This hands the token to
  whoever may fetch ``/answer``, which is why the server applies the same authentication to
  the webhooks as to upgrades (configure the answer URL with ``?token=``).

``/event`` logs each call event as one line (``call event``) carrying the call's id, and
answers 204 (no NCCO: nothing more to run when the websocket leg ends).

Import rule: standard library, ``bridge.config``, ``bridge.endpoints``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from bridge.config import ServerConfig, parse_pairs
from bridge.endpoints import Authorization, Connect, WebsocketEndpoint, ncco
from bridge.units import content_type

log = logging.getLogger("bridge.webhooks")

#: Answer query values carried into the websocket URI (and so into the call's metadata).
CARRIED_KEYS = ("uuid", "conversation_uuid", "from", "to")
#: An event line keeps at most this many query values, each cut to this many characters.
EVENT_MAX_KEYS = 30
EVENT_MAX_VALUE = 200


def event_url(public_url: str) -> str:
    """``wss://host:port/...`` -> ``https://host:port/event`` (``ws://`` -> ``http://``)."""
    parts = urlsplit(public_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/event"


def answer_ncco(config: ServerConfig, query: Mapping[str, str]) -> list[dict[str, Any]]:
    """The NCCO for one call; raises ``EndpointError`` if the settings make an invalid one."""
    if config.public_url is None:
        raise ValueError("answer_ncco needs config.public_url")
    parts = urlsplit(config.public_url)
    carried = {key: query[key] for key in CARRIED_KEYS if query.get(key)}
    uri = f"{parts.scheme}://{parts.netloc}{config.path}"
    if carried:
        uri += "?" + urlencode(carried)
    authorization: Authorization | None = None
    if config.vonage_signature_secret:
        authorization = Authorization("vonage")
    elif config.token:
        authorization = Authorization("custom", f"Bearer {config.token}")
    headers = parse_pairs(config.answer_headers, "--answer-headers")
    endpoint = WebsocketEndpoint(
        uri,
        content_type=content_type(config.answer_rate),
        headers=headers or None,
        authorization=authorization,
    )
    connect = Connect(
        endpoint,
        event_type="synchronous",
        event_url=(event_url(config.public_url),),
        event_method="GET",
    )
    return ncco(connect)


def answer_body(config: ServerConfig, query: Mapping[str, str]) -> bytes:
    return json.dumps(answer_ncco(config, query), separators=(",", ":")).encode()


def log_event(query: Mapping[str, str]) -> None:
    """One ``call event`` line: the call's id plus the event's (bounded) query values."""
    fields: dict[str, str] = {}
    for key, value in query.items():
        if len(fields) >= EVENT_MAX_KEYS:
            break
        if key == "token":
            continue  # a credential, never logged
        fields[key] = value[:EVENT_MAX_VALUE]
    call_id = fields.get("uuid") or fields.get("conversation_uuid")
    log.info(
        "call event",
        extra={"call_id": call_id, "status": fields.get("status"), "event": fields},
    )
