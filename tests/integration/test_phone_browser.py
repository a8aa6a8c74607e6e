"""The browser phone (GET /phone) in a real headless Chromium, against a real bridge.

Chromium's fake microphone plays tests/data/fox_slt_16k.wav in a loop; the page converts it
in its AudioWorklet (Chromium runs audio at 44.1 or 48 kHz here) to the call's rate and
streams it. What is checked is what a person would notice: bridge hears the speech, the
echo comes back with a round trip, a key press reaches the handler, a ``clear`` silences the
page at once, a ``notify`` is answered only once the audio before it has played, and a
failure shows up on the page's error line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bridge.audio.pcm import tone
from bridge.audio.resample import resample_whole
from bridge.audio.wav import read_wav
from bridge.call import Call
from bridge.protocol.vonage import Cleared, Dtmf, Notified
from tests.browser import chromium, chromium_path, open_phone
from tests.helpers import ROOT, running_server, start_server_process, wait_s

pytestmark = pytest.mark.slow

SPEECH = ROOT / "tests" / "data" / "fox_slt_16k.wav"
ARTEFACTS = ROOT / "build" / "test-artefacts"
#: Long enough for two whole copies of the 2.97 s sentence whatever point of the loop the
#: call starts at.
CALL_SECONDS = 10
#: The sentence is matched in pieces this long (see the test).
PIECE_S = 1.0


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    """Skip before any server starts when there is no browser to run."""
    chromium_path()


def _left_channel(path: Path) -> tuple[NDArray[np.float64], int]:
    with wave.open(str(path)) as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.reshape(-1, channels)[:, 0].astype(np.float64), rate


def best_correlation(recording: NDArray[np.float64], source: NDArray[np.float64]) -> float:
    """Peak of the normalised cross-correlation of ``source`` against every window of
    ``recording`` of its length (1.0: an exact, scaled copy somewhere in the recording)."""
    n = len(recording) + len(source)
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(source, size))
    dots = np.fft.irfft(spectrum, size)[: len(recording) - len(source) + 1]
    energy = np.concatenate([[0.0], np.cumsum(recording * recording)])
    window = energy[len(source) :] - energy[: -len(source)]
    norms = np.sqrt(np.maximum(window, 1e-9)) * np.linalg.norm(source)
    return float(np.max(dots / norms))


async def _wait_for_log(lines: list[dict[str, object]], msg: str, seconds: float) -> dict[str, Any]:
    async with asyncio.timeout(wait_s(seconds)):
        while True:
            for line in lines:
                if line.get("msg") == msg:
                    return line
            await asyncio.sleep(0.05)


async def test_a_call_from_the_browser_reaches_bridge_and_the_echo_comes_back(
    tmp_path: Path,
) -> None:
    """bridge serve (echo, recording) hears the browser's microphone; the page hears the echo
    and measures its round trip from the frame numbers stamped in the audio."""
    records = tmp_path / "records"
    server = start_server_process(["--record-dir", str(records)])
    port = server.url.split(":")[2].split("/")[0]
    rate = 8000  # the 16 kHz sentence converted twice: 44.1/48 kHz in Chromium, 8 kHz here
    try:
        assert str(server.lines[-1].get("phone")) == f"http://127.0.0.1:{port}/phone"
        async with chromium(SPEECH) as browser:
            # aec=0: the browser's echo canceller reshapes the microphone's audio (as it
            # should with loudspeakers); this measures the page's own conversion.
            phone = await open_phone(
                browser,
                f"http://127.0.0.1:{port}/phone?call=1&seconds={CALL_SECONDS}&rate={rate}&aec=0",
            )
            await phone.wait("p.state === 'in-call' && p.rttCount > 50", 10)
            await phone.page.click("#keypad button[data-digit='1']")  # seen in the screenshot
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTEFACTS / "phone-in-call.png"
            await phone.page.screenshot(path=str(shot))
            print(f"screenshot of the phone page in a call: {shot}")
            await phone.wait("p.state === 'ended'", CALL_SECONDS + 5)
            state = await phone.state()
        ended = await _wait_for_log(server.lines, "call ended", 5)
        await _wait_for_log(server.lines, "recording closed", 5)
    finally:
        server.stop(signal.SIGTERM)

    assert phone.problems == []
    assert state["error"] is None
    assert state["closeCode"] == 1000
    # 50 frames a second for the whole call, every one of them received by bridge.
    assert 0.9 * 50 * CALL_SECONDS <= state["framesSent"] <= 50 * CALL_SECONDS + 5
    assert ended["frames_in"] == state["framesSent"]
    assert ended["rate"] == rate
    assert 0 <= ended["frames_out"] - state["framesReceived"] <= 10
    # The echo is exact at the call's rate: (almost) every frame back is matched to its send.
    assert state["rttCount"] >= state["framesReceived"] - 10
    assert 0 < state["rttMinMs"] <= state["rttMedianMs"] <= state["rttMaxMs"] < wait_s(1000)
    assert state["jitterMs"] is not None
    assert state["inputDb"] is None  # meters fall back to silence once the call is over

    recording = next(records.glob("*.wav"))
    assert recording.name == f"{state['callId']}.wav"
    heard, recorded_rate = _left_channel(recording)
    assert recorded_rate == rate
    source, source_rate = read_wav(SPEECH)
    expected = resample_whole(source, source_rate, rate).astype(np.float64)
    # Each second of the sentence must be found in the recording. Matched whole, one slip
    # anywhere would hide it: on a starved CPU (the full suite on two busy cores) Chromium's
    # capture now and then loses a 10 ms block, shifting everything after it; a page that
    # garbled, dropped or mis-rated audio fails every piece.
    step = int(PIECE_S * rate)
    pieces = [expected[i : i + step] for i in range(0, len(expected) - step // 2, step)]
    correlations = [best_correlation(heard, piece) for piece in pieces]
    whole = best_correlation(heard, expected)
    print(
        f"speech correlation at {rate} Hz: whole sentence {whole:.4f}, "
        f"per second {', '.join(f'{c:.4f}' for c in correlations)}"
    )
    assert min(correlations) >= 0.8


class Scripted:
    """A handler that plays a tone with a notify marker after its first second, and on the
    caller's first DTMF digit stops and clears; it keeps every event it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[float, object]] = []
        self.started = 0.0
        self.cleared_at: float | None = None
        self.call: Call | None = None

    async def __call__(self, call: Call) -> None:
        self.call = call
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        player = loop.create_task(self._play(call))
        try:
            async for event in call.events():
                self.events.append((loop.time() - self.started, event))
                if isinstance(event, Dtmf) and not player.done():
                    player.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await player
                    call.clear()
                    self.cleared_at = loop.time() - self.started
        finally:
            player.cancel()

    async def _play(self, call: Call) -> None:
        chunk = call.pipeline_rate // 10
        position = 0
        while not call.ended:
            await call.play(tone(440.0, call.pipeline_rate, chunk, start_sample=position))
            position += chunk
            if position == call.pipeline_rate:
                call.notify({"after_ms": 1000})


async def test_keypad_clear_and_notify_behave_as_vonage_does(tmp_path: Path) -> None:
    handler = Scripted()
    async with running_server(handler) as server, chromium(SPEECH) as browser:
        phone = await open_phone(
            browser, f"http://127.0.0.1:{server.port}/phone?call=1&seconds=20&rate=24000"
        )
        # The notify marker sits behind 1 s of tone: the page answers once it has played it.
        await phone.wait("p.notifies === 1", 10)
        notified = [(t, e) for t, e in handler.events if isinstance(e, Notified)]
        assert [e.payload for _, e in notified] == [{"after_ms": 1000}]
        assert notified[0][0] >= 0.98  # answered on receipt it would come at ~0.9 s (the lead)
        await phone.wait("p.outputDb > -20 && p.bufferedMs > 40", 5)  # the tone is playing
        await phone.page.click("#keypad button[data-digit='5']")
        await phone.wait("p.clears === 1 && p.bufferedMs === 0", 5)
        await phone.wait("p.outputDb === -Infinity", 2)  # silent at once: nothing was left
        state = await phone.state()
        await phone.page.click("#hangup")
        await phone.wait("p.state === 'ended'", 5)
        assert handler.call is not None
        cleared_ms = handler.call.stats.last_clear_to_cleared_ms

    assert phone.problems == []
    digits = [e for _, e in handler.events if isinstance(e, Dtmf)]
    assert digits == [Dtmf("5", 260)]
    assert any(isinstance(e, Cleared) for _, e in handler.events)
    assert cleared_ms is not None and cleared_ms < wait_s(500)
    # What the clear dropped was audio the page had queued and not yet played.
    assert state["clearedMs"] > 20
    assert state["dtmfSent"] == 1
    kinds = [e["kind"] for e in state["events"]]
    assert "dtmf" in kinds and "clear" in kinds and "notify" in kinds


async def test_a_refused_microphone_is_reported_on_the_page() -> None:
    async with running_server() as server, chromium(SPEECH, allow_microphone=False) as browser:
        phone = await open_phone(browser, f"http://127.0.0.1:{server.port}/phone?call=1")
        await phone.wait("p.state === 'failed'", 10)
        error = await phone.page.text_content("#error")
        calls = server.calls_total
    assert error is not None and error.startswith("microphone refused: NotAllowedError")
    assert calls == 0


async def test_a_refused_socket_shows_its_http_status_and_a_close_shows_its_code() -> None:
    async with (
        running_server(token="s3cret", max_call_s=1.0) as server,
        chromium(SPEECH) as browser,
    ):
        base = f"http://127.0.0.1:{server.port}/phone"
        # The page's ?token= opens the page and, reused, the socket: the call goes through,
        # until bridge ends it at --max-call-s with 1008 and its reason.
        phone = await open_phone(browser, f"{base}?token=s3cret&call=1")
        await phone.wait("p.state === 'failed'", 10)
        closed = await phone.page.text_content("#error")
        assert (await phone.state())["framesSent"] > 0
        # A wrong token typed into the socket URL: the upgrade is refused with HTTP 401.
        await phone.page.fill("#socket", f"ws://127.0.0.1:{server.port}/socket?token=wrong")
        await phone.page.click("#call")
        await phone.wait("p.state === 'failed' && p.error.startsWith('socket')", 10)
        refused = await phone.page.text_content("#error")
    assert closed == "bridge closed the call: 1008 maximum call duration 1 s"
    assert refused == "socket refused: HTTP 401 Unauthorized"
    assert not [p for p in phone.problems if p.startswith("uncaught")]


#: Runs the page's own worklets in an OfflineAudioContext (the browser's audio engine, no
#: device, faster than real time): a sine through the capture worklet (frames out), or
#: frames through the playout worklet (samples out). Rendering pauses just after it starts so
#: the messages posted to the worklet arrive before the audio they concern.
WORKLET_PROBE = """
async ([kind, ctxRate, rate, freq]) => {
  const code = document.getElementById('worklet-source').textContent;
  const url = URL.createObjectURL(new Blob([code], {type: 'text/javascript'}));
  const ctx = new OfflineAudioContext(1, ctxRate, ctxRate);
  await ctx.audioWorklet.addModule(url);
  const frames = [];
  let node;
  if (kind === 'capture') {
    node = new AudioWorkletNode(ctx, 'bridge-capture', {numberOfInputs: 1, numberOfOutputs: 1,
      outputChannelCount: [1], processorOptions: {rate}});
    node.port.onmessage = (e) => frames.push(Array.from(new Int16Array(e.data.pcm)));
    const tone = new OscillatorNode(ctx, {frequency: freq});
    tone.connect(new GainNode(ctx, {gain: 0.5})).connect(node);
    tone.start();
  } else {
    node = new AudioWorkletNode(ctx, 'bridge-playout', {numberOfInputs: 0, numberOfOutputs: 1,
      outputChannelCount: [1], processorOptions: {rate, targetMs: 60, maxMs: 60000}});
  }
  node.connect(ctx.destination);
  ctx.suspend(256 / ctxRate).then(() => {
    if (kind === 'capture') {
      node.port.postMessage({type: 'start'});
    } else {
      const n = rate / 50;
      for (let k = 0; k < 40; k++) {
        const pcm = new Int16Array(n);
        for (let i = 0; i < n; i++) pcm[i] = Math.round(16384 * Math.sin(2 * Math.PI * freq * (k * n + i) / rate));
        node.port.postMessage({type: 'frame', pcm: pcm.buffer}, [pcm.buffer]);
      }
    }
    setTimeout(() => ctx.resume(), 50);
  });
  const rendered = await ctx.startRendering();
  await new Promise((resolve) => setTimeout(resolve, 200));
  return kind === 'capture' ? frames : Array.from(rendered.getChannelData(0));
}
"""


def _sine_snr_db(samples: NDArray[np.float64], freq: float, rate: int) -> tuple[float, float]:
    """(SNR of the best-fitting sine at ``freq``, that sine's amplitude)."""
    n = np.arange(len(samples))
    basis = np.stack(
        [np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate), np.ones(len(n))],
        axis=1,
    )
    coef, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    fit = basis @ coef
    residual = samples - fit
    snr = 10 * np.log10(np.sum((fit - coef[2]) ** 2) / np.sum(residual**2))
    return float(snr), float(np.hypot(coef[0], coef[1]))


async def test_the_pages_worklets_convert_rates_cleanly_in_exact_frames() -> None:
    """The capture worklet's frames are exact, numbered and clean (a 1 kHz tone comes out at
    60 dB SNR and more; a 6 kHz tone, above 8 kHz's Nyquist frequency, is stopped instead of
    folding back to 2 kHz); the playout worklet's upsampling leaves no images."""
    async with running_server() as server, chromium(SPEECH) as browser:
        phone = await open_phone(browser, f"http://127.0.0.1:{server.port}/phone")
        probe = phone.page.evaluate
        kept = await probe(WORKLET_PROBE, ["capture", 44100, 8000, 1000])
        aliased = await probe(WORKLET_PROBE, ["capture", 48000, 8000, 6000])
        wide = await probe(WORKLET_PROBE, ["capture", 48000, 24000, 5000])
        played = await probe(WORKLET_PROBE, ["playout", 44100, 8000, 3000])
        played_wide = await probe(WORKLET_PROBE, ["playout", 48000, 24000, 10000])
    assert phone.problems == []

    assert len(kept) >= 45  # a second of audio: 50 frames, less the start
    assert {len(frame) for frame in kept + aliased} == {160}
    assert {len(frame) for frame in wide} == {480}
    for k, frame in enumerate(kept):  # frame k carries k in its first 16 LSBs
        assert sum((frame[b] & 1) << b for b in range(16)) == k
    tone_in = np.concatenate([np.asarray(f, dtype=np.float64) for f in kept[5:]])
    snr, amplitude = _sine_snr_db(tone_in, 1000, 8000)
    assert snr > 60
    assert abs(amplitude - 16384) < 16384 * 0.01  # unity gain: 0.5 of full scale stays 0.5
    wide_snr, _ = _sine_snr_db(
        np.concatenate([np.asarray(f, float) for f in wide[5:]]), 5000, 24000
    )
    assert wide_snr > 60
    alias = np.concatenate([np.asarray(f, dtype=np.float64) for f in aliased[5:]])
    alias_db = 20 * np.log10(np.sqrt(np.mean(alias**2)) / (16384 / np.sqrt(2)))
    print(
        f"capture SNR: 1 kHz at 8 kHz {snr:.1f} dB, 5 kHz at 24 kHz {wide_snr:.1f} dB; "
        f"6 kHz into 8 kHz leaks at {alias_db:.1f} dB"
    )
    assert alias_db < -60

    for out, freq, rate in ((played, 3000, 44100), (played_wide, 10000, 48000)):
        samples = np.asarray(out, dtype=np.float64)
        sounding = np.flatnonzero(np.abs(samples) > 0.01)
        middle = samples[sounding[0] + rate // 20 : sounding[-1] - rate // 20]
        assert len(middle) > rate * 0.6  # 0.8 s of frames were queued
        snr, amplitude = _sine_snr_db(middle, freq, rate)
        print(f"playout SNR: {freq} Hz up to {rate} Hz {snr:.1f} dB")
        assert snr > 60, (freq, snr)
        assert abs(amplitude - 0.5) < 0.01
