"""The two Vonage webhooks bridge can serve itself: ``GET /answer`` and ``GET /event``.

``/answer`` returns the NCCO that connects the call to this bridge's own websocket
(``--public-url`` + ``--path``). Vonage's answer query values ``uuid``, ``conversation_uuid``,
``from`` and ``to`` are carried into the websocket URI's query string, so they arrive as the
call's metadata (``call.query``) and ``uuid`` becomes the call id in every log line. The
connect is ``synchronous`` with ``eventUrl`` = our ``/event`` and ``eventMethod: GET``
(docs/protocol.md s.1), so everything works with GET.

How the websocket is authenticated follows the server's own settings
(:func:`bridge.endpoints.bridge_authorization`), so the NCCO always opens a socket the server
will accept. With ``--token`` that hands the token to whoever may fetch ``/answer``, which is
why the server applies the same authentication to the webhooks as to upgrades (configure the
answer URL with ``?token=``).

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

from bridge.config import ServerConfig
from bridge.endpoints import bridge_authorization, websocket_ncco

log = logging.getLogger("bridge.webhooks")

#: Answer query values carried into the websocket URI (and so into the call's metadata).
CARRIED_KEYS = ("uuid", "conversation_uuid", "from", "to")
#: An event line keeps at most this many query values, each cut to this many characters.
EVENT_MAX_KEYS = 30
EVENT_MAX_VALUE = 200


def event_url(public_url: str, token: str | None = None) -> str:
    """``wss://host:port/...`` -> ``https://host:port/event`` (``ws://`` -> ``http://``).

    ``/event`` is authenticated like an upgrade. Vonage signs its event webhooks only when the
    application has a signature secret; with a shared ``token`` alone the webhook carries no
    credential, so the token must travel in the URL or every event would get 401.
    """
    parts = urlsplit(public_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    url = f"{scheme}://{parts.netloc}/event"
    return f"{url}?{urlencode({'token': token})}" if token else url


def socket_uri(public_url: str, path: str, query: Mapping[str, str]) -> str:
    """Our websocket as Vonage reaches it, carrying the answer's call identifiers."""
    parts = urlsplit(public_url)
    carried = {key: query[key] for key in CARRIED_KEYS if query.get(key)}
    uri = f"{parts.scheme}://{parts.netloc}{path}"
    return f"{uri}?{urlencode(carried)}" if carried else uri


def answer_ncco(config: ServerConfig, query: Mapping[str, str]) -> list[dict[str, Any]]:
    """The NCCO for one call; raises ``EndpointError`` if the settings make an invalid one.

    The document is built by :func:`bridge.endpoints.websocket_ncco`, as ``bridge ncco``'s
    is; this function only turns the server's settings into that builder's arguments.
    """
    if config.public_url is None:
        raise ValueError("answer_ncco needs config.public_url")
    return websocket_ncco(
        socket_uri(config.public_url, config.path, query),
        config.answer_rate,
        config.answer_header_pairs,
        bridge_authorization(signed=bool(config.vonage_signature_secret), token=config.token),
        event_url(config.public_url, None if config.vonage_signature_secret else config.token),
        "GET",
    )


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
