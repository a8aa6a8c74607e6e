"""What a carrier's JSON dialect costs per echoed frame, beside Vonage's binary frames.

``python -m benchmarks.carrier_micro [--frames N]``: one echo call on a fake clock with no
sockets, ``N`` frames: for Vonage, a binary frame into ``Call.feed_audio`` and out of the
pacing scheduler as bytes; for each carrier, its ``media`` message (built by
``bridge.sim.carrier_peer``) through the ``CarrierSession`` (JSON, base64, the codec, Telnyx's
reordering) into the same call, and out again as the carrier's JSON. Prints microseconds of
CPU (``time.process_time``) per frame in and out, best of 5, and the ratio to Vonage measured
in the same run; writes ``benchmarks/results/carrier_micro.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import MappingProxyType

from bridge.audio.pcm import to_bytes, tone
from bridge.call import Call
from bridge.carriers import CarrierSession
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Connected
from bridge.sim.carrier_peer import CarrierPeer, PeerOptions
from bridge.units import FRAME_MS, frame_samples

RESULTS = Path(__file__).resolve().parent / "results" / "carrier_micro.json"
CASES = [
    ("vonage", None),
    ("twilio", PeerOptions("twilio")),
    ("telnyx", PeerOptions("telnyx")),
    ("telnyx L16 16k", PeerOptions("telnyx", 16000, "L16")),
    ("plivo", PeerOptions("plivo")),
    ("exotel 16k", PeerOptions("exotel", 16000)),
]


class _Discard:
    def __init__(self) -> None:
        self.sent = 0

    def send_binary(self, data: bytes) -> None:
        self.sent += 1

    def send_text(self, text: str) -> None:
        self.sent += 1

    def close(self, code: int, reason: str = "") -> None:
        pass


def _one_run(opts: PeerOptions | None, frames: int) -> float:
    clock = FakeClock(10**12)
    scheduler = Scheduler(clock, 100)
    io = _Discard()
    rate = opts.rate if opts is not None else 8000
    size = frame_samples(rate)
    pcm = [to_bytes(tone(440, rate, size, start_sample=k * size)) for k in range(frames)]
    if opts is None:
        call = Call(Connected(rate, MappingProxyType({})), io, scheduler)
        inputs: list[bytes | str] = list(pcm)
        session = None
    else:
        peer = CarrierPeer(opts)
        session = CarrierSession(None, io.send_text, "")
        connected = next(i for m in peer.opening() for i in session.feed(m))
        assert isinstance(connected, Connected)
        call = Call(connected, io, scheduler, wire=session)
        inputs = []
        for frame in pcm:
            inputs += peer.frame(peer.codec.encode(frame))
        inputs += peer.finish()
    call.on_audio(call.play_now)
    # Every message is built beforehand (distinct chunk numbers: Telnyx's reordering would
    # drop repeats); only bridge's side is timed. A message may hold several frames (Exotel):
    # the clock moves by what it holds.
    step_ms = FRAME_MS * max(1, frames // max(1, len(inputs)))
    begin = time.process_time()
    for message in inputs:
        clock.advance_ms(step_ms)
        now = clock.now_ns()
        if session is None:
            assert isinstance(message, bytes)
            call.feed_audio(message, now)
        else:
            assert isinstance(message, str)
            for item in session.feed(message):
                if isinstance(item, bytes):
                    call.feed_audio(item, now)
    elapsed = time.process_time() - begin
    if call.stats.frames_out < frames * 0.95:
        raise RuntimeError(f"only {call.stats.frames_out} of {frames} frames went out")
    return elapsed / call.stats.frames_in * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for name, opts in CASES:
        best = min(_one_run(opts, args.frames) for _ in range(5))
        results[name] = {"us_per_frame": round(best, 2)}
    base = results["vonage"]["us_per_frame"]
    for name, row in results.items():
        row["ratio_to_vonage"] = round(row["us_per_frame"] / base, 2)
        print(
            f"{name:16s} {row['us_per_frame']:7.2f} us per echoed frame  x{row['ratio_to_vonage']}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"frames": args.frames, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
