"""Who gets a websocket: real JWTs (PyJWT), tokens, 401 before any websocket, secure by
default, and wss:// served directly (README: "Security model")."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.logs import setup_logging
from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, start_server_process, url_of
from tests.integration._http import get
from tests.integration.test_cli import run_cli

SECRET = "vonage-signature-secret-0123456789abcdef"  # >= 32 bytes, as RFC 7518 wants
TOKEN = "deployment-token-4f1c9a7e"
API_KEY = "abcd1234"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def vonage_jwt(
    secret: str = SECRET, age_s: float = 0.0, algorithm: str = "HS256", **claims: object
) -> str:
    """A JWT shaped like Vonage's (docs/protocol.md s.2): iat, jti, iss, api_key, application_id."""
    payload: dict[str, object] = {
        "iat": int(time.time() - age_s),
        "jti": "0f3b4a0e-6f55-4b3e-9b0f-6a8c8d1e2f30",
        "iss": "Vonage",
        "api_key": API_KEY,
        "application_id": APP_ID,
    }
    payload.update({k: v for k, v in claims.items() if v is not None})
    for k, v in claims.items():
        if v is None:
            payload.pop(k, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HS512 with a 40-byte key: the point of that case
        return jwt.encode(payload, secret or None, algorithm=algorithm)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status_of(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a refused upgrade (fails if a websocket was opened)."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers, compression=None):
            pass
    return info.value.response.status_code


# Made when the test runs: iat is relative to now.
JWT_CASES: list[tuple[str, Callable[[], dict[str, str] | None], int]] = [
    ("valid", lambda: bearer(vonage_jwt()), 101),
    ("valid, 4 min old", lambda: bearer(vonage_jwt(age_s=240)), 101),
    ("valid, no optional claims", lambda: bearer(vonage_jwt(api_key=None, iss=None)), 101),
    ("wrong signature", lambda: bearer(vonage_jwt(secret="x" * 40)), 401),
    ("expired (iat 10 min old)", lambda: bearer(vonage_jwt(age_s=600)), 401),
    ("iat 10 min in the future", lambda: bearer(vonage_jwt(age_s=-600)), 401),
    ("no iat", lambda: bearer(vonage_jwt(iat=None)), 401),
    ("exp in the past", lambda: bearer(vonage_jwt(exp=int(time.time()) - 60)), 401),
    ("HS512 is not accepted", lambda: bearer(vonage_jwt(algorithm="HS512")), 401),
    ("alg none", lambda: bearer(vonage_jwt(secret="", algorithm="none")), 401),
    ("not a JWT", lambda: bearer("not.a.jwt"), 401),
    ("Basic scheme", lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ("missing", lambda: None, 401),
]


@pytest.mark.parametrize(("name", "make", "status"), JWT_CASES, ids=[c[0] for c in JWT_CASES])
async def test_vonage_jwt_on_the_upgrade(
    name: str, make: Callable[[], dict[str, str] | None], status: int
) -> None:
    headers = make()
    async with running_server(vonage_signature_secret=SECRET) as server:
        if status == 101:
            report = await run_call(
                CallOptions(url=url_of(server), seconds=0.3, extra_headers=headers or {})
            )
            assert report.exact and report.close_code == 1000
        else:
            assert await _status_of(url_of(server), headers) == status
            assert server.upgraded == 0 and server.calls_total == 0


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({}, 101),
        ({"api_key": "someone-else"}, 401),
        ({"application_id": "another-app"}, 401),
        ({"api_key": None}, 401),  # required once configured
    ],
)
async def test_api_key_and_application_id_claims(claims: dict[str, object], status: int) -> None:
    token = vonage_jwt(SECRET, 0.0, "HS256", **claims)
    headers = {"Authorization": f"Bearer {token}"}
    async with running_server(
        vonage_signature_secret=SECRET, vonage_api_key=API_KEY, vonage_application_id=APP_ID
    ) as server:
        if status == 101:
            async with connect(url_of(server), additional_headers=headers, compression=None):
                pass
        else:
            assert await _status_of(url_of(server), headers) == status


async def test_token_in_query_or_header_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running_server(token=TOKEN) as server:
            by_query, by_header = await asyncio.gather(
                run_call(
                    CallOptions(url=url_of(server, query=f"token={TOKEN}&call=q1"), seconds=0.5)
                ),
                run_call(
                    CallOptions(
                        url=url_of(server, query="call=h1"),
                        seconds=0.5,
                        extra_headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                ),
            )
            wrong = await _status_of(url_of(server, query="token=nope"))
            wrong_header = await _status_of(url_of(server), {"Authorization": "Bearer nope"})
            missing = await _status_of(url_of(server))
            refused = server.metrics.refused.labels("unauthorized")._value.get()
    assert by_query.exact and by_header.exact
    assert (wrong, wrong_header, missing) == (401, 401, 401)
    assert refused == 3
    started = [r for r in caplog.records if r.getMessage() == "call started"]
    assert {r.__dict__["call_id"] for r in started} == {"q1", "h1"}
    assert all("token" not in r.__dict__["query"] for r in started)
    # The server's own lines. websockets' handshake dumps (bridge.websocket) are debug lines
    # setup_logging never lets through (test_websockets_debug_is_muted...); the simulator is
    # the client: of course it knows the token.
    ours = [
        r
        for r in caplog.records
        if r.name.startswith("bridge.")
        and r.name != "bridge.websocket"
        and not r.name.startswith("bridge.simulator")
    ]
    everything = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert TOKEN not in everything
    assert "upgrade refused: 401" in everything


async def test_401_comes_before_any_websocket_and_says_bearer() -> None:
    async with running_server(token=TOKEN) as server:
        reply = await get(
            server.port,
            "/socket",
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert "sec-websocket-accept" not in reply.headers


def test_non_loopback_without_auth_refuses_to_start() -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bridge: error: refusing to listen on 0.0.0.0")
    assert "--token" in lines[0] and "--insecure" in lines[0]


@pytest.mark.parametrize("extra", [["--insecure"], ["--token", TOKEN]])
async def test_non_loopback_starts_with_auth_or_insecure(extra: list[str]) -> None:
    server = start_server_process(["--host", "0.0.0.0", *extra])
    try:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        query = f"token={TOKEN}" if "--token" in extra else ""
        url = f"ws://127.0.0.1:{port}/socket" + (f"?{query}" if query else "")
        report = await run_call(CallOptions(url=url, seconds=0.3))
    finally:
        code = server.stop()
    assert report.exact
    assert code == 0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost, as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca_file, chain, key = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca_file, chain, key


async def test_tls_serves_wss_directly(tls_files: tuple[Path, Path, Path]) -> None:
    ca_file, chain, key = tls_files
    async with running_server(tls_cert=str(chain), tls_key=str(key)) as server:
        url = f"wss://127.0.0.1:{server.port}/socket"
        report = await run_call(CallOptions(url=url, seconds=0.5, ca_file=ca_file))
        untrusted = await run_call(CallOptions(url=url, seconds=0.2))
        health = await get(server.port, "/health", tls=ssl.create_default_context(cafile=ca_file))
    assert report.exact and report.close_code == 1000
    assert not untrusted.connected and "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")
    assert health.status == 200


def test_unreadable_tls_files_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = run_cli("serve", "--port", "0", "--tls-cert", missing, "--tls-key", missing)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--tls-cert" in result.stderr


def test_websockets_debug_is_muted_even_at_debug_level() -> None:
    """websockets logs request lines and headers (credentials) at DEBUG: never shown."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("bridge.websocket").level)
    try:
        setup_logging("debug", "json")
        assert not logging.getLogger("bridge.websocket").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("bridge.websocket").setLevel(saved[2])
