"""Every carrier end to end: the real server, and the real simulator playing that carrier's
side (``bridge call --carrier``): echo exact on the wire, metadata and DTMF at the handler,
recording, marks and clears with their answers, forward to a 16 kHz upstream, and all five
dialects on one server at once (docs/carriers.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.audio.pcm import tone
from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.config import ServerConfig
from bridge.handlers import build_handler, echo
from bridge.handlers.record import recorded
from bridge.protocol.vonage import Cleared, Dtmf, Notified
from bridge.sim import CallOptions, run_call
from tests.helpers import running_server, url_of
from tests.integration.test_record import read_stereo
from tests.upstreams import RecordingUpstream, read_connections

CARRIERS = ["twilio", "telnyx", "plivo", "exotel"]


def call(server: Any, carrier: str, **kw: Any) -> CallOptions:
    return CallOptions(url=url_of(server), carrier=carrier, rate=kw.pop("rate", 8000), **kw)


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_echo_metadata_dtmf_and_recording(carrier: str, tmp_path: Path) -> None:
    seen: dict[str, Any] = {"digits": []}

    async def handler(call: Call) -> None:
        seen["metadata"] = dict(call.metadata)
        seen["id"] = call.id

        async def digits() -> None:
            async for event in call.events():
                if isinstance(event, Dtmf):
                    seen["digits"].append(event.digit)

        task = asyncio.create_task(digits())
        await echo(call)
        await task

    sent = tmp_path / "sent.wav"
    async with running_server(recorded(handler, tmp_path / "rec")) as server:
        report = await run_call(
            call(
                server,
                carrier,
                seconds=1.0,  # 50 frames: whole chunks for Exotel (10 frames at 8 kHz)
                tone_hz=440,
                dtmf="1#",
                dtmf_at_s=0.3,
                headers={"lang": "en-GB", "ticket": "T-9"},
                record_sent=sent,
            )
        )
    # Echo: every frame came back as the very bytes the carrier sent (G.711 round trip).
    assert report.exact, report
    assert report.frames_sent == 50 and report.bad_frames == 0
    assert report.close_code == 1000
    meta = seen["metadata"]
    assert meta["carrier"] == carrier
    assert meta["lang"] == "en-GB" and meta["ticket"] == "T-9"
    assert meta["call_id"] == seen["id"] and meta["stream_id"]
    assert seen["digits"] == ["1", "#"]
    # The recording's left channel is the caller's audio, decoded: exactly what was sent.
    (wav,) = (tmp_path / "rec").glob("*.wav")
    stereo, rate = read_stereo(wav)
    caller, caller_rate = read_wav(sent)
    assert rate == caller_rate == 8000
    assert np.array_equal(stereo[: len(caller), 0], caller)


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("telnyx", {"encoding": "L16", "rate": 16000, "reorder_every": 7}),
    ("telnyx", {"encoding": "PCMA", "reorder_every": 3}),
    ("plivo", {"encoding": "audio/x-l16", "rate": 16000}),
    ("exotel", {"rate": 16000}),
    ("exotel", {"rate": 24000}),
]


@pytest.mark.parametrize(
    ("carrier", "extra"),
    VARIANTS,
    ids=[f"{c}-{'-'.join(map(str, e.values()))}" for c, e in VARIANTS],
)
async def test_echo_exact_in_each_encoding(carrier: str, extra: dict[str, Any]) -> None:
    async with running_server() as server:
        report = await run_call(call(server, carrier, seconds=1.2, tone_hz=300, **extra))
    assert report.exact, report
    assert report.frames_sent == 60


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_marks_are_notifies_and_clear_is_answered(carrier: str) -> None:
    events: list[object] = []

    async def handler(call: Call) -> None:
        rate = call.rate

        async def speak() -> None:
            await call.play(tone(500, rate, rate * 2 // 5))  # 400 ms
            call.notify({"part": 1})
            await call.play(tone(500, rate, rate * 3))  # longer than the call
            call.notify("end")

        speaking = asyncio.create_task(speak())
        async for event in call.events():
            events.append(event)
            if isinstance(event, Dtmf):
                speaking.cancel()
                call.clear()
        speaking.cancel()

    async with running_server(handler) as server:
        report = await run_call(call(server, carrier, seconds=1.6, dtmf="5", dtmf_at_s=1.0))
    # The mark was answered once its audio had played, and reached the handler as Notified.
    assert Notified({"part": 1}) in events
    assert report.notifies == 1 + (carrier in ("twilio", "telnyx")) and report.notifies_answered
    # The clear reached the carrier and emptied its buffer...
    assert report.clears == 1 and report.frames_cleared > 0, report
    # ...and its answer reached the handler (Exotel has none).
    assert (Cleared() in events) == (carrier != "exotel")
    assert Notified("end") not in events
    assert report.unknown_commands == 0 and report.bad_frames == 0


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_forward_to_a_16khz_upstream_keeps_the_tone(carrier: str, tmp_path: Path) -> None:
    upstream = RecordingUpstream(tmp_path / "up")
    port = await upstream.start()
    config = ServerConfig(
        port=0, mode="forward", upstream=f"ws://127.0.0.1:{port}/", upstream_rate=16000
    )
    try:
        async with running_server(
            build_handler(config), mode="forward", upstream=config.upstream
        ) as server:
            report = await run_call(call(server, carrier, seconds=1.2, tone_hz=440))
    finally:
        await upstream.close()
    assert report.completed
    (conn,) = read_connections(tmp_path / "up")
    audio = conn.audio.astype(np.float64)
    assert len(audio) >= 16000 * 11 // 10  # 16 kHz: the call's 8 kHz resampled, all of it
    steady = audio[3200:16000]
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.argmax(spectrum) * 16000 / len(steady)
    assert abs(peak_hz - 440) < 4
    rms = np.sqrt(np.mean(steady**2))
    assert abs(rms - 8000 / np.sqrt(2)) < 8000 / np.sqrt(2) * 0.05  # G.711 + resampling


async def test_one_call_of_each_dialect_at_once_on_one_server() -> None:
    async with running_server() as server:
        reports = await asyncio.gather(
            run_call(CallOptions(url=url_of(server), rate=16000, seconds=1.0, tone_hz=440)),
            *(
                run_call(call(server, carrier, seconds=1.0, tone_hz=440, dtmf="9", dtmf_at_s=0.3))
                for carrier in CARRIERS
            ),
            run_call(
                call(server, "telnyx", seconds=1.0, encoding="L16", rate=16000, reorder_every=5)
            ),
        )
    for report in reports:
        assert report.exact and report.frames_sent == 50, report
        assert report.close_code == 1000


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_the_handler_hangs_up_after_its_prompt_and_the_carrier_heard_all_of_it(
    carrier: str,
) -> None:
    async def handler(call: Call) -> None:
        await call.play(tone(700, call.rate, call.rate // 2 + 80))  # 504 ms: a partial frame
        # Returning ends the call: bridge flushes, drains, then closes with 1000.

    async with running_server(handler) as server:
        report = await run_call(call(server, carrier, seconds=3.0, stamp=False))
    assert report.close_code == 1000 and report.closed_by == "server", report
    # 26 frames (the last zero-padded); Exotel's 10-frame chunks make it 30.
    assert report.frames_received == (30 if carrier == "exotel" else 26)
    assert report.bad_frames == 0 and report.unknown_commands == 0


async def test_a_carrier_call_at_another_pipeline_rate() -> None:
    async with running_server(pipeline_rate=16000) as server:
        report = await run_call(call(server, "twilio", seconds=1.2, tone_hz=440, stamp=False))
    # Resampled both ways: every frame comes back, changed (so not exact), none lost.
    assert report.frames_received >= report.frames_sent - 2 and report.frames_lost <= 2
    assert report.bad_frames == 0 and report.close_code == 1000
