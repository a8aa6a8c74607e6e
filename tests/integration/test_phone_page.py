"""GET /phone as plain HTTP: who gets the page, what it is pointed at, what protects it.

The page's behaviour in a browser is tested in test_phone_browser.py (real Chromium).
"""

from __future__ import annotations

import re

import pytest

from bridge.config import ServerConfig
from bridge.errors import ConfigError
from bridge.http import phone_page_enabled
from tests.helpers import running_server, start_server_process
from tests.integration._http import get

TOKEN = "phone-token-7d2e"


async def test_served_on_a_loopback_bind_by_default_pointed_at_the_socket_path() -> None:
    async with running_server(path="/voice/ws") as server:
        reply = await get(server.port, "/phone")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert '<meta name="bridge-socket-path" content="/voice/ws">' in reply.text
    assert "{{" not in reply.text
    # Offline and self-contained: nothing is fetched from anywhere else.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", reply.text)
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert reply.headers["cache-control"] == "no-store"


async def test_the_socket_path_is_escaped_into_the_page() -> None:
    async with running_server(path='/s"><script>x</script>') as server:
        reply = await get(server.port, "/phone")
    assert 'content="/s&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in reply.text
    assert "<script>x</script>" not in reply.text


async def test_no_phone_page_means_404() -> None:
    async with running_server(phone_page=False) as server:
        assert (await get(server.port, "/phone")).status == 404
        assert (await get(server.port, "/health")).status == 200


def test_default_is_on_for_loopback_hosts_only() -> None:
    assert phone_page_enabled(ServerConfig(host="127.0.0.1"))
    assert phone_page_enabled(ServerConfig(host="::1"))
    assert phone_page_enabled(ServerConfig(host="localhost"))
    assert not phone_page_enabled(ServerConfig(host="0.0.0.0"))
    assert not phone_page_enabled(ServerConfig(host="10.1.2.3"))
    assert phone_page_enabled(ServerConfig(host="0.0.0.0", phone_page=True))
    assert not phone_page_enabled(ServerConfig(host="127.0.0.1", phone_page=False))


async def test_behind_the_same_token_as_the_socket() -> None:
    async with running_server(token=TOKEN) as server:
        missing = await get(server.port, "/phone")
        wrong = await get(server.port, "/phone?token=nope")
        in_query = await get(server.port, f"/phone?token={TOKEN}&call=1")
        in_header = await get(server.port, "/phone", {"Authorization": f"Bearer {TOKEN}"})
    assert (missing.status, wrong.status) == (401, 401)
    assert "bridge-socket-path" not in missing.text
    assert (in_query.status, in_header.status) == (200, 200)


def test_the_path_cannot_be_the_socket_path() -> None:
    with pytest.raises(ConfigError, match="/phone"):
        ServerConfig(path="/phone")


async def test_bridge_serve_logs_the_page_address_only_when_serving_it() -> None:
    on = start_server_process()
    off = start_server_process(["--no-phone-page"])
    try:
        listening = {"on": on.lines[-1], "off": off.lines[-1]}
        reply = await get(int(on.url.split(":")[2].split("/")[0]), "/phone")
    finally:
        on.stop()
        off.stop()
    assert listening["on"]["msg"] == "listening"
    assert listening["on"]["phone"] == on.url.replace("ws://", "http://").replace(
        "/socket", "/phone"
    )
    assert "phone" not in listening["off"]
    assert reply.status == 200
