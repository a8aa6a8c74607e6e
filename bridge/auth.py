"""Who may open a call or fetch a webhook: a shared token, Vonage's signed JWT, a carrier's
signature or token, or anyone.

``Authenticator.check`` looks at one HTTP request (its headers and query) and returns
``None`` (let in) or a short reason for the 401 and the log (never the credential itself).
Both methods may be configured at once; a request passing either is let in.

- ``--token``: ``?token=TOKEN`` in the URI or ``Authorization: Bearer TOKEN``, compared with
  ``hmac.compare_digest`` (constant time). The ``token`` query value is removed from the call's
  metadata by the server, so it never reaches a handler or a log line.
- ``--vonage-signature-secret``: ``Authorization: Bearer <JWT>`` as Vonage sends it on the
  upgrade (``authorization: {"type": "vonage"}``, docs/protocol.md s.2) and on signed webhooks:
  HS256 only (no ``alg`` switching), a valid signature, an ``iat`` within ``jwt_max_age_s`` of
  our clock either way, and ``api_key`` / ``application_id`` claims when configured. PyJWT does
  the cryptography.
- ``--twilio-auth-token``: ``X-Twilio-Signature`` as Twilio sends it on the websocket upgrade
  and on webhooks (docs/carriers.md s.6): base64 of HMAC-SHA1, keyed with the account's auth
  token, over the URL Twilio requested followed by each POST parameter's name and value
  sorted by name (a GET has none). The URL is the one Twilio was given (``wss://`` for a
  stream), which bridge rebuilds from ``--public-url`` or the request's ``Host``; it is tried
  with and without its default port, as Twilio's own validators do, and a query string is
  tried both in the URL and as sorted parameters (Twilio's Python agent library signs
  websocket query values that way).
- ``--telnyx-stream-token``: the ``x-telnyx-streaming-auth-token`` header Telnyx sends when a
  stream is started with a ``stream_auth_token``, compared in constant time.

:func:`check_exposure` is "secure by default": listening beyond loopback needs authentication
or an explicit ``--insecure``.

Wall clock: a JWT's ``iat`` is wall-clock time by definition, so this module reads the wall
clock through ``_wall_s`` (injectable for tests); nothing here paces audio.

Import rule: standard library, ``jwt`` (PyJWT), ``bridge.config``, ``bridge.errors``,
``bridge.protocol``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import jwt

from bridge.config import ProductionSettings, ServerConfig
from bridge.errors import ConfigError
from bridge.protocol.twilio import twilio_signature

log = logging.getLogger("bridge.auth")

JWT_ALGORITHMS = ["HS256"]
#: RFC 7518 s.3.2: an HS256 key should have at least 256 bits.
MIN_SECRET_BYTES = 32


def _wall_s() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


@dataclass(frozen=True)
class Credentials:
    """What a request presented: the ``Authorization`` header and the ``token`` query value."""

    authorization: str | None
    query_token: str | None
    #: ``X-Twilio-Signature``, and the URLs (with their query) it may have been made for.
    twilio_signature: str | None = None
    twilio_urls: tuple[str, ...] = field(default=())
    #: ``x-telnyx-streaming-auth-token``.
    telnyx_token: str | None = None

    @property
    def bearer(self) -> str | None:
        value = self.authorization
        if value is None:
            return None
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not rest.strip():
            return None
        return rest.strip()


class Authenticator:
    """Checks requests against the configured token and/or Vonage signature secret."""

    def __init__(
        self,
        *,
        token: str | None = None,
        signature_secret: str | None = None,
        api_key: str | None = None,
        application_id: str | None = None,
        max_age_s: float = 300.0,
        wall_s: Callable[[], float] = _wall_s,
        twilio_auth_token: str | None = None,
        telnyx_stream_token: str | None = None,
    ) -> None:
        self._token = token.encode() if token else None
        self._twilio = twilio_auth_token
        self._telnyx = telnyx_stream_token.encode() if telnyx_stream_token else None
        self._secret = signature_secret
        self._api_key = api_key
        self._application_id = application_id
        self._max_age_s = max_age_s
        self._wall_s = wall_s
        if signature_secret and len(signature_secret.encode()) < MIN_SECRET_BYTES:
            log.warning(
                "the Vonage signature secret is shorter than %d bytes (RFC 7518 s.3.2)",
                MIN_SECRET_BYTES,
            )

    @classmethod
    def from_config(cls, config: ProductionSettings) -> Authenticator:
        return cls(
            token=config.token,
            signature_secret=config.vonage_signature_secret,
            api_key=config.vonage_api_key,
            application_id=config.vonage_application_id,
            max_age_s=config.jwt_max_age_s,
            twilio_auth_token=config.twilio_auth_token,
            telnyx_stream_token=config.telnyx_stream_token,
        )

    @property
    def enabled(self) -> bool:
        return any(
            method is not None for method in (self._token, self._secret, self._twilio, self._telnyx)
        )

    def check(self, creds: Credentials) -> str | None:
        """``None`` if let in, else a short reason (safe to log: holds no credential)."""
        if not self.enabled:
            return None
        carrier = self._check_carriers(creds)
        if carrier is None:
            return None
        if self._token is None and self._secret is None:
            return carrier
        reason = self._check_vonage(creds)
        if reason == "missing credentials" and carrier != "missing credentials":
            return carrier
        return reason

    def _check_carriers(self, creds: Credentials) -> str | None:
        """``None`` when a carrier's credential is good, else why not."""
        reasons = []
        if self._twilio is not None and creds.twilio_signature is not None:
            if twilio_signature_valid(self._twilio, creds.twilio_signature, creds.twilio_urls):
                return None
            reasons.append("bad twilio signature")
        if self._telnyx is not None and creds.telnyx_token is not None:
            if hmac.compare_digest(creds.telnyx_token.encode(), self._telnyx):
                return None
            reasons.append("bad telnyx token")
        return reasons[0] if reasons else "missing credentials"

    def _check_vonage(self, creds: Credentials) -> str | None:
        bearer = creds.bearer
        if self._token is not None:
            for candidate in (creds.query_token, bearer):
                if candidate is not None and hmac.compare_digest(candidate.encode(), self._token):
                    return None
        if self._secret is not None and bearer is not None:
            reason = self._check_jwt(bearer)
            if reason is None:
                return None
            return reason
        if creds.query_token is None and bearer is None:
            return "missing credentials"
        return "bad token" if self._token is not None else "bad credentials"

    def _check_jwt(self, token: str) -> str | None:
        assert self._secret is not None
        try:
            with warnings.catch_warnings():
                # PyJWT warns on every decode with a short key; start() already said so once.
                warnings.simplefilter("ignore")
                claims = jwt.decode(
                    token,
                    self._secret,
                    algorithms=JWT_ALGORITHMS,
                    # iat is checked below against our own window, both ways; exp if present.
                    options={"require": ["iat"], "verify_iat": False},
                )
        except jwt.MissingRequiredClaimError:
            return "jwt has no iat"
        except jwt.ExpiredSignatureError:
            return "jwt expired"
        except jwt.InvalidSignatureError:
            return "jwt bad signature"
        except jwt.InvalidTokenError as exc:
            return f"jwt invalid ({type(exc).__name__})"
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return "jwt iat is not a number"
        skew = self._wall_s() - float(iat)
        if skew > self._max_age_s:
            return "jwt expired (iat too old)"
        if skew < -self._max_age_s:
            return "jwt iat in the future"
        if self._api_key is not None and not _same(claims.get("api_key"), self._api_key):
            return "jwt wrong api_key"
        if self._application_id is not None and not _same(
            claims.get("application_id"), self._application_id
        ):
            return "jwt wrong application_id"
        return None


_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _port_variants(url: str) -> list[str]:
    """``url`` as given, without its default port, and with it (Twilio signs either)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    out = [url]
    if default is not None and parts.port in (None, default):
        for netloc in (host, f"{host}:{default}"):
            variant = urlunsplit(parts._replace(netloc=netloc))
            if variant not in out:
                out.append(variant)
    return out


def twilio_signature_valid(auth_token: str, signature: str, urls: Sequence[str]) -> bool:
    """Whether ``signature`` signs one of ``urls`` (each as requested, query included)."""
    expected = signature.strip().encode()
    for url in urls:
        base, _, query = url.partition("?")
        params = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p]
        for variant in _port_variants(url):
            if hmac.compare_digest(twilio_signature(auth_token, variant).encode(), expected):
                return True
        if params:
            decoded = [(unquote_plus(k), unquote_plus(v)) for k, v in params]
            for variant in _port_variants(base):
                signed = twilio_signature(auth_token, variant, decoded)
                if hmac.compare_digest(signed.encode(), expected):
                    return True
    return False


def _same(claim: object, expected: str) -> bool:
    return isinstance(claim, str) and hmac.compare_digest(claim.encode(), expected.encode())


def credentials(headers: Mapping[str, str], query: Mapping[str, str]) -> Credentials:
    return Credentials(headers.get("Authorization"), query.get("token"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServerConfig) -> None:
    """Secure by default: refuse a non-loopback bind without authentication or --insecure."""
    if config.insecure or is_loopback(config.host):
        return
    if (
        config.token
        or config.vonage_signature_secret
        or config.twilio_auth_token
        or config.telnyx_stream_token
    ):
        return
    either = (
        f"{config.option('token')}, {config.option('vonage_signature_secret')}, "
        f"{config.option('twilio_auth_token')} or {config.option('telnyx_stream_token')}"
    )
    raise ConfigError(
        f"refusing to listen on {config.host or 'all interfaces'} with no authentication: "
        f"set {either} (or {config.option('insecure')} to accept anyone)"
    )
