"""Play mode, barge-in, clear and notify, and the heard-audio position, end to end.

The prompt is real speech made by flite (an 8 kHz WAV in tests/data) and played into 16 kHz
calls, so the file is converted on the way; the simulator plays Vonage's side, with its
playback buffer, ``clear`` and ``notify``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.resample import resample_whole
from bridge.audio.wav import read_wav
from bridge.call import Call, Handler
from bridge.config import ServerConfig
from bridge.handlers import build_handler
from bridge.sim import CallOptions, run_call
from tests.helpers import DATA, ROOT, running_server, start_server_process, url_of, wait_s

FRAME = 320  # samples in 20 ms at 16 kHz


@pytest.fixture(scope="module")
def prompt() -> Path:
    """Says "Please leave your message after the tone." at 8 kHz, 2.31 s (flite's default voice)."""
    return DATA / "leave_message_kal_8k.wav"


def capturing(config: ServerConfig, calls: list[Call]) -> Handler:
    handler = build_handler(config)

    async def wrapper(call: Call) -> None:
        calls.append(call)
        await handler(call)

    return wrapper


async def test_prompt_is_played_exactly_and_its_notify_confirms_the_heard_position(
    prompt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.play")
    samples, file_rate = read_wav(prompt)
    assert file_rate == 8000  # flite's default voice: converted to the call's 16 kHz
    expected = resample_whole(samples, 8000, 16000)
    frames = -(-len(expected) // FRAME)
    calls: list[Call] = []
    config = ServerConfig(port=0, mode="play", play=str(prompt))
    back = tmp_path / "back.wav"
    async with running_server(capturing(config, calls), mode="play", play=str(prompt)) as server:
        report = await run_call(
            CallOptions(
                url=url_of(server),
                rate=16000,
                seconds=frames * 0.02 + 0.6,
                record=back,
                stamp=False,
            )
        )
    assert report.bad_frames == 0
    assert report.frames_received == frames
    heard, _ = read_wav(back)
    assert np.array_equal(heard[: len(expected)], expected)  # the whole prompt, exactly
    assert not heard[len(expected) :].any()  # then the zero padding of the last frame
    # The notify after the prompt came back once it had played; bridge logged it.
    assert report.notifies == 1 and report.notifies_answered == 1
    assert any(r.getMessage() == "prompt heard" for r in caplog.records)
    (call,) = calls
    assert call.heard.confirmed_samples == frames * FRAME
    assert call.heard_ms == frames * 20  # everything sent was heard, nothing cleared
    lag = call.heard.lag_ns
    # One notify's round trip: a few ms on loopback (80 ms leaves room for a stalled host;
    # a schedule misplaced by bridge's 100 ms lead would still show).
    assert lag is not None and -5_000_000 < lag < wait_s(0.08) * 1e9
    summary = call.summary()
    assert summary["heard_ms"] == summary["sent_ms"] == frames * 20
    print(f"prompt: {frames * 20} ms heard, playback lag {lag / 1e6:.1f} ms")


async def test_barge_in_clears_playback_on_the_first_digit(prompt: Path) -> None:
    calls: list[Call] = []
    config = ServerConfig(port=0, mode="play", play=str(prompt), barge_in=True)
    async with running_server(capturing(config, calls), mode="play", play=str(prompt)) as server:
        report = await run_call(
            CallOptions(url=url_of(server), rate=16000, seconds=2.0, dtmf="5", dtmf_at_s=1.0)
        )
    (call,) = calls
    # Vonage got the clear (and answered it), and dropped what it had buffered.
    assert report.clears == 1 and report.frames_cleared >= 1
    assert call.stats.last_clear_to_cleared_ms is not None
    # Nothing more was played after the digit: about 1 s of prompt plus the send-ahead lead.
    assert report.frames_received * 20 <= 1000 + 100 + 60
    # bridge's own account matches what the simulated caller heard, to a frame or two.
    truth_ms = (report.frames_received - report.frames_cleared) * 20
    assert abs(call.heard_ms - truth_ms) <= 40
    assert call.heard.discarded_samples > 0
    assert 900 <= call.heard_ms <= 1100
    print(
        f"barge-in: heard {call.heard_ms} ms (simulator {truth_ms} ms), cleared unheard "
        f"{call.heard.ms(call.heard.discarded_samples)} ms, clear->cleared "
        f"{call.stats.last_clear_to_cleared_ms:.1f} ms"
    )


async def test_tone_plays_until_the_caller_hangs_up(tmp_path: Path) -> None:
    back = tmp_path / "back.wav"
    async with running_server(
        build_handler(ServerConfig(mode="play", tone=440)), mode="play", tone=440
    ) as server:
        report = await run_call(
            CallOptions(url=url_of(server), rate=8000, seconds=1.5, record=back, stamp=False)
        )
    assert report.bad_frames == 0
    assert report.frames_received >= 75  # the whole call, plus the lead still in flight
    heard, _ = read_wav(back)
    x = heard[800:-800].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.argmax(spectrum) * 8000 / len(x) - 440) < 5


async def test_play_and_record_from_the_command_line(tmp_path: Path) -> None:
    records = tmp_path / "rec"
    server = start_server_process(
        ["--mode", "play", "--tone", "1000", "--record-dir", str(records)]
    )
    try:
        report = await run_call(
            CallOptions(url=server.url + "?call=cli-play", rate=16000, seconds=1.0, tone_hz=300)
        )
    finally:
        assert server.stop() == 0
    assert report.bad_frames == 0 and report.frames_received >= 50
    stereo = read_wav_channels(records / "cli-play.wav")
    # Left: the caller's 300 Hz; right: bridge's 1000 Hz, each alone on its side.
    assert abs(peak_hz(stereo[1600:16000, 0], 16000) - 300) < 5
    assert abs(peak_hz(stereo[1600:16000, 1], 16000) - 1000) < 5


def test_an_unreadable_prompt_stops_the_command_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--port",
            "0",
            "--mode",
            "play",
            "--play",
            str(tmp_path / "missing.wav"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("bridge: error: --play (BRIDGE_PLAY): cannot read")
    assert len(result.stderr.splitlines()) == 1


def peak_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def read_wav_channels(path: Path) -> np.ndarray:
    blob = path.read_bytes()
    size = int.from_bytes(blob[40:44], "little")
    return np.frombuffer(blob[44 : 44 + size], dtype="<i2").reshape(-1, 2)
