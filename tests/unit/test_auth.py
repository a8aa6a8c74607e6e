"""bridge.auth without sockets: tokens, JWT rules with a fixed wall clock, secure by default."""

from __future__ import annotations

import jwt
import pytest

from bridge.auth import Authenticator, Credentials, check_exposure, is_loopback
from bridge.config import ServerConfig
from bridge.errors import ConfigError

SECRET = "s" * 40
NOW = 1_800_000_000.0


def _jwt(secret: str = SECRET, **claims: object) -> str:
    payload: dict[str, object] = {"iat": int(NOW), "api_key": "key", "application_id": "app"}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, "HS256")


def _auth(**kw: object) -> Authenticator:
    return Authenticator(wall_s=lambda: NOW, **kw)  # type: ignore[arg-type]


def _bearer(value: str) -> Credentials:
    return Credentials(f"Bearer {value}", None)


def test_nothing_configured_lets_everyone_in() -> None:
    auth = _auth()
    assert not auth.enabled
    assert auth.check(Credentials(None, None)) is None


@pytest.mark.parametrize(
    ("creds", "reason"),
    [
        (Credentials(None, "tok"), None),
        (Credentials("Bearer tok", None), None),
        (Credentials("bearer   tok  ", None), None),
        (Credentials(None, "tok2"), "bad token"),
        (Credentials(None, "to"), "bad token"),
        (Credentials(None, ""), "bad token"),
        (Credentials("Basic tok", None), "missing credentials"),
        (Credentials("Bearer", None), "missing credentials"),
        (Credentials(None, None), "missing credentials"),
    ],
)
def test_token(creds: Credentials, reason: str | None) -> None:
    assert _auth(token="tok").check(creds) == reason


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, None),
        ({"iat": int(NOW) - 299}, None),
        ({"iat": int(NOW) + 299}, None),
        ({"iat": int(NOW) - 301}, "jwt expired (iat too old)"),
        ({"iat": int(NOW) + 301}, "jwt iat in the future"),
        ({"iat": None}, "jwt has no iat"),
        ({"iat": "yesterday"}, "jwt iat is not a number"),
        ({"iat": True}, "jwt iat is not a number"),
    ],
)
def test_jwt_iat_window(claims: dict[str, object], reason: str | None) -> None:
    token = _jwt(SECRET, **claims)
    assert _auth(signature_secret=SECRET).check(_bearer(token)) == reason


def test_jwt_signature_and_claims() -> None:
    auth = _auth(signature_secret=SECRET, api_key="key", application_id="app")
    assert auth.check(_bearer(_jwt())) is None
    assert auth.check(_bearer(_jwt(secret="t" * 40))) == "jwt bad signature"
    assert auth.check(_bearer(_jwt(api_key="other"))) == "jwt wrong api_key"
    assert auth.check(_bearer(_jwt(api_key=None))) == "jwt wrong api_key"
    assert auth.check(_bearer(_jwt(application_id="x"))) == "jwt wrong application_id"
    assert auth.check(_bearer("a.b.c")).startswith("jwt invalid")  # type: ignore[union-attr]
    # A JWT is never looked for in the query string.
    assert auth.check(Credentials(None, _jwt())) == "bad credentials"


def test_token_and_jwt_together_accept_either() -> None:
    auth = _auth(token="tok", signature_secret=SECRET)
    assert auth.check(Credentials(None, "tok")) is None
    assert auth.check(_bearer("tok")) is None
    assert auth.check(_bearer(_jwt())) is None
    assert auth.check(_bearer("nope")) == "jwt invalid (DecodeError)"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("10.0.0.5", False),
        ("bridge.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_exposure() -> None:
    check_exposure(ServerConfig(host="127.0.0.1"))
    check_exposure(ServerConfig(host="0.0.0.0", token="t"))
    check_exposure(ServerConfig(host="0.0.0.0", vonage_signature_secret=SECRET))
    check_exposure(ServerConfig(host="0.0.0.0", insecure=True))
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 .* --insecure"):
        check_exposure(ServerConfig(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="all interfaces"):
        check_exposure(ServerConfig(host=""))


def test_secrets_stay_out_of_the_config_repr() -> None:
    text = repr(ServerConfig(token="tok-123", vonage_signature_secret=SECRET))
    assert "tok-123" not in text and SECRET not in text


def test_paired_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        ServerConfig(tls_cert="a.pem")
    with pytest.raises(ConfigError, match="need --vonage-signature-secret"):
        ServerConfig(vonage_api_key="k")
