"""Settings: one dataclass, CLI over BRIDGE_* environment over defaults, clear errors."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from bridge.config import ServerConfig, add_config_arguments, config_from, env_name
from bridge.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bridge serve", exit_on_error=False)
    add_config_arguments(parser)
    return parser.parse_args(argv)


def _config(argv: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    config = config_from(_parse(argv), environ=environ or {})
    assert isinstance(config, ServerConfig)
    return config


def test_defaults() -> None:
    config = _config([])
    assert config == ServerConfig()
    assert (config.host, config.port, config.path) == ("127.0.0.1", 8080, "/socket")
    assert config.mode == "echo"
    assert config.pipeline_rate is None
    assert config.lead_ms == 100
    assert config.playout_max_ms == 2000
    assert config.max_message_bytes == 65536
    assert config.first_message_timeout_s == 5.0
    assert config.lenient is False
    assert (config.log_level, config.log_format) == ("info", "auto")


def test_no_args_and_no_environment_gives_defaults() -> None:
    assert config_from(None, environ={}) == ServerConfig()


def test_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "9123")
    assert config_from(_parse([])).port == 9123


PRECEDENCE: list[tuple[list[str], dict[str, str], int]] = [
    ([], {}, 8080),
    ([], {"BRIDGE_PORT": "9000"}, 9000),
    (["--port", "9100"], {}, 9100),
    (["--port", "9100"], {"BRIDGE_PORT": "9000"}, 9100),
    (["--port", "0"], {"BRIDGE_PORT": "9000"}, 0),
]


@pytest.mark.parametrize(("argv", "environ", "port"), PRECEDENCE)
def test_cli_over_env_over_default(argv: list[str], environ: dict[str, str], port: int) -> None:
    assert _config(argv, environ).port == port


def test_every_field_can_come_from_cli_or_env() -> None:
    values = {
        "host": ("0.0.0.0", "0.0.0.0"),
        "port": ("9001", 9001),
        "path": ("/voice", "/voice"),
        "mode": ("echo", "echo"),
        "pipeline_rate": ("24000", 24000),
        "lead_ms": ("60", 60),
        "playout_max_ms": ("500", 500),
        "max_message_bytes": ("4096", 4096),
        "first_message_timeout_s": ("2.5", 2.5),
        "log_level": ("debug", "debug"),
        "log_format": ("json", "json"),
        "transport": ("websockets", "websockets"),
        "carrier": ("twilio", "twilio"),
        # call modes
        "upstream": ("wss://stt.example/v1?lang=en", "wss://stt.example/v1?lang=en"),
        "upstream_rate": ("16000", 16000),
        "upstream_hello": ('{"call":"$call_id"}', '{"call":"$call_id"}'),
        "upstream_buffer_ms": ("5000", 5000),
        "upstream_replay_max_ms": ("100", 100),
        "upstream_max_attempts": ("3", 3),
        "upstream_backoff_ms": ("50", 50),
        "upstream_timeout_s": ("1.5", 1.5),
        "upstream_dialect": ("deepgram", "deepgram"),
        "upstream_key_env": ("MY_DG_KEY", "MY_DG_KEY"),
        "upstream_header": ("X-Api-Key: ${MY_KEY}", ("X-Api-Key: ${MY_KEY}",)),
        "upstream_subprotocol": ("token", ("token",)),
        "upstream_model": ("nova-3", "nova-3"),
        "upstream_language": ("en-GB", "en-GB"),
        "upstream_end_timeout_s": ("4", 4.0),
        "instructions": ("@agent.txt", "@agent.txt"),
        "voice": ("verse", "verse"),
        "turn_detection": ("semantic_vad", "semantic_vad"),
        "transcript_url": ("https://app.example/hook", "https://app.example/hook"),
        "transcripts": ("/tmp/t", "/tmp/t"),
        "record_dir": ("/tmp/r", "/tmp/r"),
        "play": ("hello.wav", "hello.wav"),
        "tone": ("440", 440.0),
        # production
        "token": ("t0ken", "t0ken"),
        "vonage_signature_secret": ("sig-secret", "sig-secret"),
        "vonage_api_key": ("abcd1234", "abcd1234"),
        "vonage_application_id": ("app-1", "app-1"),
        "twilio_auth_token": ("tw-token", "tw-token"),
        "telnyx_stream_token": ("tx-token", "tx-token"),
        "jwt_max_age_s": ("60", 60.0),
        "tls_cert": ("/etc/cert.pem", "/etc/cert.pem"),
        "tls_key": ("/etc/key.pem", "/etc/key.pem"),
        "max_calls": ("7", 7),
        "idle_timeout_s": ("3.5", 3.5),
        "max_call_s": ("600", 600.0),
        "drain_seconds": ("0", 0.0),
        "public_url": ("wss://bridge.example:8443", "wss://bridge.example:8443"),
        "answer_rate": ("8000", 8000),
        "answer_headers": ("language=en-GB,x=1", "language=en-GB,x=1"),
        "workers": ("4", 4),
    }
    flags = (
        "lenient",
        "barge_in",
        "insecure",
        "transcribe",
        "phone_page",
    )  # boolean fields: given without a value
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    assert names == set(values) | set(flags), "a new field needs a line in this test"
    argv: list[str] = ["--" + flag.replace("_", "-") for flag in flags]
    environ = {env_name(flag): "yes" for flag in flags}
    for name, (raw, _) in values.items():
        argv += ["--" + name.replace("_", "-"), raw]
        environ[env_name(name)] = raw
    for config in (_config(argv), _config([], environ)):
        for name, (_, value) in values.items():
            assert getattr(config, name) == value, name
        for flag in flags:
            assert getattr(config, flag) is True, flag


def test_a_repeated_setting_takes_every_flag_or_one_line_each_from_the_environment() -> None:
    argv = ["--upstream-header", "A: 1", "--upstream-header", "B: ${X}"]
    assert _config(argv).upstream_header == ("A: 1", "B: ${X}")
    environ = {"BRIDGE_UPSTREAM_HEADER": "A: 1\nB: ${X}\n"}
    assert _config([], environ).upstream_header == ("A: 1", "B: ${X}")
    # The command line replaces the environment's list, it does not add to it.
    assert _config(["--upstream-header", "C: 3"], environ).upstream_header == ("C: 3",)
    assert _config([]).upstream_header == ()


def test_a_named_dialect_makes_forward_the_default_mode() -> None:
    assert ServerConfig(upstream_dialect="assemblyai").call_mode == "forward"
    assert ServerConfig(upstream_dialect="raw").call_mode == "echo"
    assert ServerConfig(mode="forward", upstream_dialect="deepgram").upstream is None


def test_header_values_stay_out_of_the_configs_repr() -> None:
    config = ServerConfig(upstream_header=("Authorization: Token s3cr3t-value",))
    assert "s3cr3t-value" not in repr(config)


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, None),
        (["--phone-page"], {}, True),
        (["--no-phone-page"], {}, False),
        ([], {"BRIDGE_PHONE_PAGE": "false"}, False),
        (["--phone-page"], {"BRIDGE_PHONE_PAGE": "false"}, True),
        (["--no-phone-page"], {"BRIDGE_PHONE_PAGE": "true"}, False),
    ],
)
def test_phone_page_is_decided_by_the_host_unless_given(
    argv: list[str], environ: dict[str, str], expected: bool | None
) -> None:
    """None: on for a loopback --host, off otherwise (bridge/http.py phone_page_enabled)."""
    assert _config(argv, environ).phone_page is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_boolean_env_values(raw: str, expected: bool) -> None:
    assert _config([], {"BRIDGE_LENIENT": raw}).lenient is expected


BAD_VALUES: list[tuple[list[str], dict[str, str], str]] = [
    ([], {"BRIDGE_PORT": "eighty"}, "BRIDGE_PORT"),
    (["--port", "eighty"], {}, "--port"),
    ([], {"BRIDGE_LEAD_MS": "1.5"}, "BRIDGE_LEAD_MS"),
    ([], {"BRIDGE_LENIENT": "maybe"}, "BRIDGE_LENIENT"),
    ([], {"BRIDGE_PIPELINE_RATE": "44100"}, "BRIDGE_PIPELINE_RATE"),
    (["--pipeline-rate", "44100"], {}, "--pipeline-rate"),
    (["--mode", "karaoke"], {}, "--mode"),
    ([], {"BRIDGE_LOG_LEVEL": "loud"}, "BRIDGE_LOG_LEVEL"),
    ([], {"BRIDGE_FIRST_MESSAGE_TIMEOUT_S": "soon"}, "BRIDGE_FIRST_MESSAGE_TIMEOUT_S"),
    # a bad env value is not reached when the CLI gives the setting
    (["--lead-ms", "x"], {"BRIDGE_LEAD_MS": "50"}, "--lead-ms"),
]


@pytest.mark.parametrize(("argv", "environ", "named"), BAD_VALUES)
def test_bad_value_names_its_source(argv: list[str], environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _config(argv, environ)


def test_cli_value_hides_a_bad_env_value() -> None:
    assert _config(["--port", "1234"], {"BRIDGE_PORT": "eighty"}).port == 1234


INVALID: list[tuple[list[str], str]] = [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--path", "socket"], "--path"),
    (["--lead-ms", "-1"], "--lead-ms"),
    (["--lead-ms", "1001"], "--lead-ms"),
    (["--playout-max-ms", "19"], "--playout-max-ms"),
    (["--max-message-bytes", "100"], "--max-message-bytes"),
    (["--first-message-timeout-s", "0"], "--first-message-timeout-s"),
    (["--first-message-timeout-s", "-3"], "--first-message-timeout-s"),
    (["--first-message-timeout-s", "nan"], "--first-message-timeout-s"),
    (["--first-message-timeout-s", "inf"], "--first-message-timeout-s"),
    # production
    (["--max-calls", "0"], "--max-calls"),
    (["--idle-timeout-s", "0"], "--idle-timeout-s"),
    (["--max-call-s", "nan"], "--max-call-s"),
    (["--drain-seconds", "-1"], "--drain-seconds"),
    (["--jwt-max-age-s", "0"], "--jwt-max-age-s"),
    (["--workers", "0"], "--workers"),
    (["--workers", "300"], "--workers"),
    (["--token", ""], "--token"),
    (["--public-url", "https://bridge.example"], "--public-url"),
    (["--answer-headers", "novalue"], "--answer-headers"),
    (["--path", "/metrics"], "--path"),
]


@pytest.mark.parametrize(("argv", "named"), INVALID)
def test_invalid_values_raise_config_error(argv: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _config(argv)


@pytest.mark.parametrize(("argv", "named"), INVALID)
def test_invalid_env_values_name_the_env_var(argv: list[str], named: str) -> None:
    flag, raw = argv
    env = "BRIDGE_" + flag.removeprefix("--").replace("-", "_").upper()
    with pytest.raises(ConfigError, match=env):
        _config([], {env: raw})


def test_invalid_values_are_refused_by_the_dataclass_itself() -> None:
    with pytest.raises(ConfigError, match="--port"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match="--path"):
        ServerConfig(path="socket")


def test_every_field_has_help_and_an_env_var() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    help_text = parser.format_help()
    for f in dataclasses.fields(ServerConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        assert env_name(f.name) == "BRIDGE_" + f.name.upper()
        assert env_name(f.name) in help_text, f.name
        assert "--" + f.name.replace("_", "-") in help_text, f.name


def test_config_is_frozen() -> None:
    config = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
