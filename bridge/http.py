"""The plain-HTTP routes served on the websocket port: health, readiness, metrics, webhooks.

A request for any path other than the websocket path comes here as (path, query,
credentials) and gets an :class:`HttpResponse` back; the server turns it into bytes (only the
server touches websockets). GET only: the websocket handshake parser refuses other methods
with 400, which is why the ``/answer`` NCCO sets ``eventMethod: GET``.

| path | answer |
|---|---|
| ``/health`` | 200 while the process runs (liveness) |
| ``/ready`` | 200 while accepting calls, 503 once draining (readiness) |
| ``/metrics`` | Prometheus text format (no authentication: keep it off the internet) |
| ``/answer`` | the NCCO (``--public-url`` set; same authentication as upgrades) |
| ``/event`` | 204, the event logged (``--public-url`` set; same authentication) |
| ``/phone`` | the browser phone (``--phone-page``, on by default for a loopback ``--host``; same authentication: ``?token=`` on the page is reused for its socket) |
| ``/twiml`` | Twilio's ``<Connect><Stream>`` TwiML (``--public-url`` set; same authentication, or Twilio's signature with ``--twilio-auth-token``) |

Import rule: standard library, ``bridge.auth``, ``bridge.config``, ``bridge.endpoints``,
``bridge.metrics``, ``bridge.twiml``, ``bridge.webhooks``; never websockets (the server turns
responses into bytes).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

from bridge.auth import Authenticator, Credentials, is_loopback
from bridge.config import ServerConfig
from bridge.endpoints import EndpointError
from bridge.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bridge.twiml import CONTENT_TYPE as TWIML_CONTENT_TYPE
from bridge.twiml import TwimlError, answer_twiml
from bridge.webhooks import answer_body, log_event

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
PHONE_PATH = "/phone"
#: The page runs its own inline scripts and worklet (a blob: URL) and loads nothing else; its
#: address may hold a token, which no referrer may carry away.
PHONE_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)
#: Seconds a refused caller (or load balancer) is told to wait before trying this instance.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def text(status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, body.encode(), TEXT, headers)


UNAUTHORIZED = text(401, "Unauthorized\n", (("WWW-Authenticate", 'Bearer realm="bridge"'),))
NOT_FOUND = text(404, "Not Found\n")


def unavailable(why: str) -> HttpResponse:
    return text(503, f"Service Unavailable: {why}\n", (("Retry-After", str(RETRY_AFTER_S)),))


def phone_page_enabled(config: ServerConfig) -> bool:
    """``--phone-page`` as given, else on exactly when only this machine can reach it."""
    if config.phone_page is not None:
        return config.phone_page
    return is_loopback(config.host)


def phone_url(config: ServerConfig, port: int) -> dict[str, str]:
    """``{"phone": URL}`` for the start-up log line when the page is served, else empty."""
    if not phone_page_enabled(config):
        return {}
    scheme = "https" if config.tls_cert else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return {"phone": f"{scheme}://{host}:{port}{PHONE_PATH}"}


def phone_page(socket_path: str) -> bytes:
    """The page (package data ``bridge/static/phone.html``) pointed at ``socket_path``."""
    template = resources.files("bridge").joinpath("static/phone.html").read_text("utf-8")
    return template.replace("{{SOCKET_PATH}}", html.escape(socket_path, quote=True)).encode()


class HttpRoutes:
    """Answers the plain-HTTP paths; ``is_ready`` says whether calls are being accepted."""

    def __init__(
        self,
        config: ServerConfig,
        auth: Authenticator,
        metrics_text: Callable[[], bytes],
        is_ready: Callable[[], bool],
    ) -> None:
        self.config = config
        self.auth = auth
        self.metrics_text = metrics_text
        self.is_ready = is_ready
        self.phone = (
            HttpResponse(200, phone_page(config.path), HTML, PHONE_HEADERS)
            if phone_page_enabled(config)
            else None
        )

    def handle(
        self, path: str, query: Mapping[str, str], creds: Credentials
    ) -> tuple[HttpResponse, str | None]:
        """The response, and a reason when the request was refused for its credentials."""
        if path == "/health":
            return text(200, "ok\n"), None
        if path == "/ready":
            if self.is_ready():
                return text(200, "ready\n"), None
            return unavailable("draining"), None
        if path == "/metrics":
            return HttpResponse(200, self.metrics_text(), METRICS_CONTENT_TYPE), None
        if path == PHONE_PATH and self.phone is not None:
            reason = self.auth.check(creds)
            if reason is not None:
                return UNAUTHORIZED, reason
            return self.phone, None
        if path in ("/answer", "/event", "/twiml") and self.config.public_url is not None:
            reason = self.auth.check(creds)
            if reason is not None:
                return UNAUTHORIZED, reason
            if path == "/twiml":
                try:
                    twiml = answer_twiml(self.config.public_url, self.config.path, query)
                except TwimlError as exc:
                    return text(400, f"Bad Request: {exc}\n"), None
                return HttpResponse(200, twiml.encode(), TWIML_CONTENT_TYPE), None
            if path == "/event":
                log_event(query)
                return HttpResponse(204), None
            try:
                body = answer_body(self.config, query)
            except EndpointError as exc:  # e.g. a carried value breaking a URI rule
                return text(400, f"Bad Request: {exc}\n"), None
            return HttpResponse(200, body, "application/json"), None
        return NOT_FOUND, None
