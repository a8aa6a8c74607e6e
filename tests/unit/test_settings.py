"""Settings declared once: sections, derived names, real types, messages that name real options.

``tests/unit/test_config.py`` checks ``bridge serve``'s settings one by one; this file checks
the machinery (``bridge.settings``) and the rules that keep a setting from being spelled twice.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Literal, get_args

import pytest

from bridge.config import (
    CoreSettings,
    Mode,
    ModeSettings,
    ProductionSettings,
    ServerConfig,
    add_config_arguments,
    config_from,
)
from bridge.errors import ConfigError, UsageError
from bridge.handlers import HANDLERS
from bridge.settings import (
    Settings,
    add_arguments,
    all_options,
    between,
    load,
    parse_pair_list,
    parse_pairs,
    setting,
    to_environ,
)

ROOT = Path(__file__).resolve().parents[2]
FLAGS = {option.flag for option in all_options(ServerConfig)}
ENVS = {option.env for option in all_options(ServerConfig)}
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")
_ENV = re.compile(r"BRIDGE_[A-Z0-9_]+")


# --- sections ------------------------------------------------------------------------------


def test_server_config_is_its_three_sections() -> None:
    assert ServerConfig.sections() == (CoreSettings, ModeSettings, ProductionSettings)
    by_section = {
        section: {option.name for option in all_options(section)}
        for section in ServerConfig.sections()
    }
    assert {"port", "path", "pipeline_rate"} <= by_section[CoreSettings]
    assert {"mode", "upstream", "record_dir"} <= by_section[ModeSettings]
    assert {"token", "max_calls", "workers"} <= by_section[ProductionSettings]
    every = [name for names in by_section.values() for name in names]
    assert len(every) == len(set(every)) == len(all_options(ServerConfig))


def test_a_section_is_usable_alone_and_validates_itself() -> None:
    assert ModeSettings(mode="play", tone=440).tone == 440
    with pytest.raises(ConfigError, match="--upstream"):
        ModeSettings(mode="forward")
    with pytest.raises(ConfigError, match="--port"):
        CoreSettings(port=-1)
    with pytest.raises(FrozenInstanceError):
        CoreSettings().port = 1  # type: ignore[misc]


def test_every_mode_has_a_handler_and_every_handler_a_mode() -> None:
    assert set(HANDLERS) == set(get_args(Mode))


def test_help_groups_options_by_section() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    titles = [group.title for group in parser._action_groups]
    assert {"core", "call modes", "production"} <= set(titles)
    help_text = parser.format_help()
    assert "--mode {echo,forward,transcribe,play}" in help_text
    assert "--pipeline-rate HZ" in help_text


def test_choices_and_types_come_from_the_annotations() -> None:
    options = {option.name: option for option in all_options(ServerConfig)}
    assert options["pipeline_rate"].choices == (8000, 16000, 24000)
    assert options["pipeline_rate"].kind is int and options["pipeline_rate"].optional
    assert options["mode"].choices == get_args(Mode)
    assert options["tone"].kind is float and options["tone"].optional
    assert options["lenient"].kind is bool and not options["lenient"].optional
    assert options["answer_rate"].kind is int and not options["answer_rate"].optional


# --- adding a section or a setting is one declaration -----------------------------------------


@dataclass(frozen=True, kw_only=True)
class _PageSettings(Settings):
    """A section as a later feature would add one."""

    TITLE = "phone page"

    page_style: Literal["points", "interval"] = setting("points", "how the page draws")
    page_port: int | None = setting(None, "port of the page", metavar="PORT", check=between(1, 9))
    page_live: bool = setting(False, "refresh the page")
    page_dark: bool | None = setting(None, "dark colours; unset: as the system's")

    def rules(self) -> None:
        if self.page_live and self.page_port is None:
            raise ConfigError(f"{self.option('page_live')} needs {self.option('page_port')}")


@dataclass(frozen=True, kw_only=True)
class _Extended(ServerConfig, _PageSettings):
    """``bridge serve`` plus the new section."""


def _parse(cls: type[Settings], argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, cls)
    return parser.parse_args(argv)


def test_a_new_section_gets_flags_variables_help_and_checks() -> None:
    from_cli = load(_Extended, _parse(_Extended, ["--page-live", "--page-port", "3"]), {})
    assert (from_cli.page_live, from_cli.page_port, from_cli.port) == (True, 3, 8080)
    env = {"BRIDGE_PAGE_STYLE": "interval", "BRIDGE_PORT": "9000"}
    from_env = load(_Extended, None, env)
    assert (from_env.page_style, from_env.port) == ("interval", 9000)
    with pytest.raises(ConfigError, match=r"--page-port \(BRIDGE_PAGE_PORT\) must be 1-9"):
        load(_Extended, None, {"BRIDGE_PAGE_PORT": "10"})
    with pytest.raises(ConfigError, match=r"--page-live \(BRIDGE_PAGE_LIVE\) needs --page-port"):
        load(_Extended, None, {"BRIDGE_PAGE_LIVE": "yes"})
    with pytest.raises(ConfigError, match="BRIDGE_PAGE_STYLE: must be one of points, interval"):
        load(_Extended, None, {"BRIDGE_PAGE_STYLE": "bars"})
    assert "phone page" in _parse_help(_Extended)


def test_a_switch_that_may_be_unset_can_be_set_either_way() -> None:
    """``bool | None``: unset (decided elsewhere), ``--name`` or ``--no-name``."""
    assert load(_Extended, _parse(_Extended, []), {}).page_dark is None
    assert load(_Extended, _parse(_Extended, ["--page-dark"]), {}).page_dark is True
    assert load(_Extended, _parse(_Extended, ["--no-page-dark"]), {}).page_dark is False
    assert load(_Extended, None, {"BRIDGE_PAGE_DARK": "off"}).page_dark is False
    assert "--no-page-live" not in _parse_help(_Extended)  # a plain switch has no opposite


def _parse_help(cls: type[Settings]) -> str:
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return parser.format_help()


def test_a_string_choice_is_never_mistaken_for_a_number() -> None:
    """The type is the annotation, not a search of its text ("points" contains "int")."""
    assert load(_PageSettings, None, {"BRIDGE_PAGE_STYLE": "points"}).page_style == "points"


def test_a_name_declared_by_two_sections_is_refused() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Clash(Settings):
        port: int = setting(1, "a second --port")

    @dataclass(frozen=True, kw_only=True)
    class Both(CoreSettings, Clash):
        pass

    with pytest.raises(TypeError, match="'port' is declared by both"):
        all_options(Both)


def test_a_setting_must_be_declared_with_setting_and_a_supported_type() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Bare(Settings):
        size: int = 3

    @dataclass(frozen=True, kw_only=True)
    class Listy(Settings):
        sizes: list[int] = setting((), "sizes")

    with pytest.raises(TypeError, match="declare it with setting"):
        all_options(Bare)
    with pytest.raises(TypeError, match="bool, int, float, str or a Literal"):
        all_options(Listy)


def test_naming_a_setting_that_does_not_exist_is_a_bug() -> None:
    assert ServerConfig.option("mode", "play") == "--mode play (BRIDGE_MODE)"
    with pytest.raises(UsageError, match="no setting 'modes'"):
        ServerConfig.option("modes")


def test_environment_export_round_trips_every_setting() -> None:
    config = ServerConfig(mode="play", tone=440.5, token="t", lenient=True, pipeline_rate=8000)
    exported = {name: value for name, value in to_environ(config).items() if value is not None}
    assert set(to_environ(config)) == ENVS
    assert config_from(None, exported) == config


# --- error messages name real options ---------------------------------------------------------

#: One invalid configuration per check and per rule, as keyword arguments.
INVALID: list[dict[str, object]] = [
    {"port": 70000},
    {"port": "80"},
    {"lenient": 1},
    {"mode": "karaoke"},
    {"pipeline_rate": 44100},
    {"path": "socket"},
    {"path": "/ready"},
    {"lead_ms": 2000},
    {"playout_max_ms": 10},
    {"max_message_bytes": 10},
    {"first_message_timeout_s": float("nan")},
    {"mode": "forward"},
    {"upstream": "http://x"},
    {"transcribe": True},
    {"mode": "transcribe"},
    {"mode": "play"},
    {"mode": "play", "play": "a.wav", "tone": 440},
    {"transcripts": ""},
    {"record_dir": ""},
    {"play": ""},
    {"tone": 5000},
    {"upstream_replay_max_ms": 5},
    {"upstream_buffer_ms": 100},
    {"upstream_buffer_ms": 4_000_000},
    {"upstream_max_attempts": 0},
    {"upstream_backoff_ms": 0},
    {"upstream_timeout_s": 0},
    {"upstream_dialect": "watson"},
    {"upstream_dialect": "deepgram", "mode": "play", "tone": 440},
    {"upstream_key_env": "1BAD NAME"},
    {"upstream_header": ("no colon here",)},
    {
        "upstream_header": ": empty name",
    },
    {"upstream_subprotocol": ("",)},
    {"upstream_model": ""},
    {"upstream_language": ""},
    {"upstream_end_timeout_s": 0},
    {"instructions": ""},
    {"voice": ""},
    {"turn_detection": "push_to_talk"},
    {"transcript_url": "ftp://app.example/hook"},
    {"token": ""},
    {"vonage_signature_secret": ""},
    {"twilio_auth_token": ""},
    {"telnyx_stream_token": ""},
    {"vonage_api_key": ""},
    {"vonage_application_id": "app"},
    {"jwt_max_age_s": -1},
    {"tls_key": "k.pem"},
    {"max_calls": 0},
    {"idle_timeout_s": 0},
    {"max_call_s": float("inf")},
    {"drain_seconds": -1},
    {"public_url": "https://x"},
    {"answer_headers": "novalue"},
    {"workers": 0},
]


def _names_in(text: str) -> tuple[set[str], set[str]]:
    return set(_FLAG.findall(text)), set(_ENV.findall(text))


@pytest.mark.parametrize("values", INVALID, ids=[",".join(map(str, v)) for v in INVALID])
def test_every_error_names_real_flags_and_variables(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(**values)  # type: ignore[arg-type]
    message = str(info.value)
    flags, envs = _names_in(message)
    assert flags <= FLAGS, message
    assert envs <= ENVS, message
    # The setting at fault is named both ways.
    offending = next(o for o in all_options(ServerConfig) if o.name == next(iter(values)))
    assert offending.flag in flags and offending.env in envs, message


def test_a_config_built_in_python_is_checked_like_one_from_the_command_line() -> None:
    assert ServerConfig(tone=440).tone == 440  # an int is a fine float
    assert ServerConfig(drain_seconds=0).drain_seconds == 0
    with pytest.raises(ConfigError, match=r"--port \(BRIDGE_PORT\) must be an integer, got True"):
        ServerConfig(port=True)
    with pytest.raises(ConfigError, match=r"--answer-rate .* must be one of 8000, 16000, 24000"):
        ServerConfig(answer_rate=44100)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--host"):
        ServerConfig(host=None)  # type: ignore[arg-type]


def test_every_check_and_rule_is_exercised_above() -> None:
    """A new check or rule needs a line in ``INVALID`` (so its message is checked too)."""
    checked = {option.name for option in all_options(ServerConfig) if option.checks}
    assert checked <= {name for values in INVALID for name in values}


def test_help_texts_mention_only_real_flags() -> None:
    for option in all_options(ServerConfig):
        flags, envs = _names_in(option.help)
        assert flags <= FLAGS, (option.name, flags - FLAGS)
        assert envs <= ENVS, option.name


def test_serve_settings_are_never_spelled_by_hand_in_an_error() -> None:
    """Messages derive ``--flag (BRIDGE_NAME)`` from the field; a literal one would drift.

    ``bridge ncco``, ``call``, ``load`` and ``agent`` have options of their own (``--token``,
    ``--tone`` there are not ``bridge serve``'s), so their modules are not searched.
    """
    other_commands = {"ncco_cli.py"}
    spelled: list[str] = []
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        if path.name in other_commands or path.parent.name == "sim":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "ConfigError"
            ):
                continue
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    flags, envs = _names_in(part.value)
                    if flags & FLAGS or envs & ENVS:
                        spelled.append(f"{path.relative_to(ROOT)}:{part.lineno}: {part.value!r}")
    assert not spelled, "\n".join(spelled)


# --- KEY=VALUE pairs: one parser for every option that takes them --------------------------


def test_pairs_are_parsed_one_way() -> None:
    assert parse_pairs(["a=1", " b = 2 "], "--header") == {"a": "1", "b": "2"}
    assert parse_pairs(["a=1", "a=2"], "--header") == {"a": "2"}
    assert parse_pairs(["Authorization: Bearer x"], "--http-header", separator=":") == {
        "Authorization": "Bearer x"
    }
    assert parse_pair_list("language=en-GB, tenant=acme,", "--answer-headers") == {
        "language": "en-GB",
        "tenant": "acme",
    }
    assert parse_pair_list("", "--answer-headers") == {}


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: parse_pairs(["novalue"], "--header"), "--header needs KEY=VALUE, got 'novalue'"),
        (lambda: parse_pairs(["=v"], "--header"), "--header needs KEY=VALUE, got ''"),
        (lambda: parse_pairs(["a=1", "a=2"], "--header", unique=True), "'a' given twice"),
        (lambda: parse_pairs(["my key=1"], "--header"), "got 'my key'"),
        (
            lambda: parse_pairs(["Authorization Bearer s3cret"], "--http-header", separator=":"),
            "--http-header needs 'NAME: VALUE', got 'Authorization'",
        ),
        (lambda: parse_pair_list("a=1,b", "--answer-headers"), "--answer-headers needs"),
    ],
)
def test_malformed_pairs_name_the_option(call: object, needle: str) -> None:
    assert callable(call)
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value)
