"""The call modes' settings: what each mode requires, and what build_handler makes of them."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.wav import write_wav
from bridge.config import ServerConfig, add_config_arguments, config_from
from bridge.errors import ConfigError
from bridge.handlers import BuiltHandler, build_handler
from bridge.handlers.play import load_prompt

MISSING: list[tuple[list[str], str]] = [
    (["--mode", "forward"], "needs --upstream"),
    (["--mode", "transcribe"], "needs --transcripts"),
    (["--mode", "play"], "exactly one of --play"),
    (["--mode", "play", "--play", "a.wav", "--tone", "440"], "exactly one of --play"),
    (["--upstream", "http://stt.example"], "ws:// or wss://"),
    (["--tone", "5000"], "--tone"),
    (["--tone", "0"], "--tone"),
    (["--record-dir", ""], "--record-dir"),
    (["--upstream-replay-max-ms", "10"], "--upstream-replay-max-ms"),
    (["--upstream-buffer-ms", "200"], "--upstream-buffer-ms"),  # not above the replay window
    (["--upstream-max-attempts", "0"], "--upstream-max-attempts"),
    (["--upstream-backoff-ms", "0"], "--upstream-backoff-ms"),
    (["--upstream-timeout-s", "nan"], "--upstream-timeout-s"),
    (["--upstream-rate", "44100"], "--upstream-rate"),
]


def _config(argv: list[str]) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from(parser.parse_args(argv), environ={})
    assert isinstance(config, ServerConfig)
    return config


@pytest.mark.parametrize(("argv", "message"), MISSING)
def test_invalid_mode_settings_are_refused_with_the_reason(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(argv)


def test_defaults_of_the_mode_settings() -> None:
    config = _config([])
    assert (config.upstream, config.upstream_rate, config.upstream_hello) == (None, None, None)
    assert config.upstream_buffer_ms == 10_000
    assert config.upstream_replay_max_ms == 200
    assert config.upstream_max_attempts == 10
    assert config.upstream_backoff_ms == 100
    assert config.upstream_timeout_s == 5.0
    assert (config.transcripts, config.record_dir, config.play, config.tone) == (None,) * 4
    assert config.barge_in is False


def test_settings_of_other_modes_are_ignored() -> None:
    config = _config(["--mode", "echo", "--tone", "440", "--upstream", "ws://x/", "--barge-in"])
    assert config.mode == "echo"


def test_each_mode_builds_a_handler(tmp_path: Path) -> None:
    wav = tmp_path / "p.wav"
    write_wav(wav, np.zeros(800, np.int16), 8000)
    for config in (
        ServerConfig(),
        ServerConfig(mode="forward", upstream="ws://127.0.0.1:9/"),
        ServerConfig(mode="play", play=str(wav), record_dir=str(tmp_path / "r")),
        ServerConfig(mode="play", tone=440, barge_in=True),
    ):
        handler = build_handler(config)
        assert isinstance(handler, BuiltHandler)
        handler.close()


def test_an_unreadable_prompt_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ConfigError, match="--play"):
        build_handler(ServerConfig(mode="play", play=str(tmp_path / "bad.wav")))
    with pytest.raises(ConfigError, match="cannot read"):
        load_prompt(tmp_path / "missing.wav")


def test_a_prompt_is_converted_to_every_call_rate(tmp_path: Path) -> None:
    wav = tmp_path / "p.wav"
    stereo = np.zeros((22050, 2), np.int16)  # 0.5 s of 44.1 kHz stereo
    write_wav(wav, stereo, 44100)
    prompt = load_prompt(wav)
    assert {rate: len(samples) for rate, samples in prompt.items()} == {
        8000: 4000,
        16000: 8000,
        24000: 12000,
    }
