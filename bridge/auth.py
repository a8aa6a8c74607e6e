"""Who may open a call or fetch a webhook: a shared token, Vonage's signed JWT, or anyone.

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

:func:`check_exposure` is "secure by default": listening beyond loopback needs authentication
or an explicit ``--insecure``.

Wall clock: a JWT's ``iat`` is wall-clock time by definition, so this module reads the wall
clock through ``_wall_s`` (injectable for tests); nothing here paces audio.

Import rule: standard library, ``jwt`` (PyJWT), ``bridge.config``, ``bridge.errors``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from bridge.config import ProductionSettings, ServerConfig
from bridge.errors import ConfigError

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
    ) -> None:
        self._token = token.encode() if token else None
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
        )

    @property
    def enabled(self) -> bool:
        return self._token is not None or self._secret is not None

    def check(self, creds: Credentials) -> str | None:
        """``None`` if let in, else a short reason (safe to log: holds no credential)."""
        if not self.enabled:
            return None
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
    if config.token or config.vonage_signature_secret:
        return
    either = f"{config.option('token')} or {config.option('vonage_signature_secret')}"
    raise ConfigError(
        f"refusing to listen on {config.host or 'all interfaces'} with no authentication: "
        f"set {either} (or {config.option('insecure')} to accept anyone)"
    )
