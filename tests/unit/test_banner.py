"""The "what now" banner's content, built from the settings alone (no terminal needed)."""

from __future__ import annotations

import io

from bridge.banner import banner_lines, print_banner, wants_banner
from bridge.config import ServerConfig


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_local_server_says_its_socket_and_how_to_try_it() -> None:
    lines = banner_lines(ServerConfig(port=8080), 8080, program=".venv/bin/bridge")
    assert lines[0] == "bridge is listening: ws://127.0.0.1:8080/socket (mode echo)"
    text = "\n".join(lines)
    assert ".venv/bin/bridge call ws://127.0.0.1:8080/socket --seconds 5" in text
    assert "http://127.0.0.1:8080/health" in text
    assert "browser:     http://127.0.0.1:8080/phone (press Call" in text  # loopback: served
    assert "--public-url" in text  # how to take real calls
    assert "answer URL" not in text


def test_all_addresses_are_tried_on_loopback_and_the_bound_port_is_shown() -> None:
    config = ServerConfig(host="0.0.0.0", port=0, insecure=True, path="/calls")
    assert " call ws://127.0.0.1:40123/calls " in "\n".join(banner_lines(config, 40123))
    config6 = ServerConfig(host="::", port=0, insecure=True)
    text6 = "\n".join(banner_lines(config6, 8080))
    assert " call ws://[::1]:8080/socket " in text6
    assert "/phone" not in text6  # not served on a public address unless asked


def test_public_url_gives_the_application_urls_and_never_the_token() -> None:
    config = ServerConfig(public_url="wss://bridge.example.com:8443", token="s3cret")
    text = "\n".join(banner_lines(config, 8080))
    assert "answer URL  https://bridge.example.com:8443/answer?token=YOUR_TOKEN" in text
    assert "event URL   https://bridge.example.com:8443/event?token=YOUR_TOKEN" in text
    assert "--http-header 'Authorization: Bearer YOUR_TOKEN'" in text
    assert "http://127.0.0.1:8080/phone?token=YOUR_TOKEN" in text
    assert "s3cret" not in text


def test_signed_webhooks_need_no_token_in_the_urls() -> None:
    config = ServerConfig(public_url="wss://b.example.com", vonage_signature_secret="sig-s3cret")
    text = "\n".join(banner_lines(config, 8080))
    assert "answer URL  https://b.example.com/answer\n" in text
    assert "signed webhooks" in text
    assert "sig-s3cret" not in text
    assert " call ws://" not in text  # bridge call cannot sign a JWT; the line says so


def test_tls_serves_wss_and_https() -> None:
    config = ServerConfig(tls_cert="c.pem", tls_key="k.pem")
    text = "\n".join(banner_lines(config, 8443))
    assert "wss://127.0.0.1:8443/socket" in text
    assert "https://127.0.0.1:8443/health" in text
    assert "--ca-file" in text


def test_printed_only_for_text_logs_on_a_terminal() -> None:
    assert wants_banner("auto", Terminal())
    assert wants_banner("text", Terminal())
    assert not wants_banner("json", Terminal())
    assert not wants_banner("text", io.StringIO())  # a file or a pipe
    terminal, pipe = Terminal(), io.StringIO()
    print_banner(ServerConfig(), 8080, terminal)
    print_banner(ServerConfig(), 8080, pipe)
    assert terminal.getvalue().startswith("bridge is listening: ws://127.0.0.1:8080/socket")
    assert pipe.getvalue() == ""
    json_terminal = Terminal()
    print_banner(ServerConfig(log_format="json"), 8080, json_terminal)
    assert json_terminal.getvalue() == ""
