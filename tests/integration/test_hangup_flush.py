"""What is pending when a call ends is flushed: forward mode's upstream and call log, and the
recording, with a caller whose speech (and a last key press) runs up to the hang-up.

The caller hangs up right after its last frame (no linger), the way a caller who puts the
phone down mid-sentence does; the speech is the committed fixture in ``tests/data``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from bridge.audio.wav import read_wav
from bridge.config import ServerConfig
from bridge.handlers import build_handler
from bridge.sim import CallOptions, run_call
from tests.helpers import ROOT, running_server, skipped_silent_rows, url_of

SPEECH = ROOT / "tests" / "data" / "billing_slt_16k.wav"
SECONDS = 2.5  # the whole fixture, in whole frames
#: The upstream answers each frame with this many messages (a chatty recogniser).
ANSWERS_PER_FRAME = 20


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_forward_delivers_and_logs_everything_up_to_the_hang_up(tmp_path: Path) -> None:
    """An ASR-like upstream answers every message at once; the caller's last frame, a key
    pressed on it, and the upstream's answers to both are all in the call log."""
    received = bytearray()
    texts: list[dict[str, Any]] = []

    async def recogniser(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                received.extend(message)
                for _ in range(ANSWERS_PER_FRAME):
                    await ws.send(json.dumps({"heard_bytes": len(received)}))
            else:
                texts.append(json.loads(message))
                await ws.send(json.dumps({"heard_event": texts[-1]["event"]}))

    upstream = await serve(recogniser, "127.0.0.1", 0, compression=None)
    port = next(iter(upstream.sockets)).getsockname()[1]
    logs = tmp_path / "logs"
    sent = tmp_path / "sent.wav"
    config = ServerConfig(
        port=0, mode="forward", upstream=f"ws://127.0.0.1:{port}/", transcripts=str(logs)
    )
    try:
        async with running_server(
            build_handler(config), mode="forward", upstream=config.upstream
        ) as server:
            report = await run_call(
                CallOptions(
                    url=url_of(server, query="call=fwd-end"),
                    rate=16000,
                    seconds=SECONDS,
                    wav=SPEECH,
                    stamp=False,
                    record_sent=sent,
                    dtmf="9",
                    dtmf_at_s=SECONDS - 0.02,  # with the last frame
                    linger_s=0,
                )
            )
    finally:
        upstream.close()
        await upstream.wait_closed()
    assert report.completed
    caller, _ = read_wav(sent)
    # The upstream got every sample, the last frame included.
    assert np.array_equal(np.frombuffer(bytes(received), dtype="<i2"), caller)
    assert {"event": "websocket:dtmf", "digit": "9"} in [
        {k: t[k] for k in ("event", "digit") if k in t} for t in texts
    ]
    lines = _lines(logs / "fwd-end.jsonl")
    upstream_said = [line["message"] for line in lines if line["type"] == "upstream"]
    # Its answers to every frame, the very last one too, and to the key press are logged.
    answers = [m["heard_bytes"] for m in upstream_said if "heard_bytes" in m]
    assert len(answers) == ANSWERS_PER_FRAME * len(caller) // 320
    assert answers[-1] == 2 * len(caller)
    assert {"heard_event": "websocket:dtmf"} in upstream_said
    assert any(line["type"] == "call" and line["message"].get("digit") == "9" for line in lines)


async def test_recording_holds_every_frame_up_to_the_hang_up(tmp_path: Path) -> None:
    records = tmp_path / "rec"
    sent = tmp_path / "sent.wav"
    handler = build_handler(ServerConfig(record_dir=str(records)))
    async with running_server(handler) as server:
        report = await run_call(
            CallOptions(
                url=url_of(server, query="call=rec-end"),
                rate=16000,
                seconds=SECONDS,
                wav=SPEECH,
                stamp=False,
                record_sent=sent,
                linger_s=0,
            )
        )
    assert report.exact
    # The file is complete once the server has closed: header and all.
    blob = (records / "rec-end.wav").read_bytes()
    data_size = int.from_bytes(blob[40:44], "little")
    assert len(blob) == 44 + data_size
    stereo = np.frombuffer(blob[44:], dtype="<i2").reshape(-1, 2)
    caller, _ = read_wav(sent)
    assert len(caller) == round(SECONDS * 16000)
    # Left: every sample the caller sent, the last frame too; right: the echo, every frame.
    assert np.array_equal(stereo[: len(caller), 0], caller)
    right = stereo[:, 1]
    first = int(np.flatnonzero(right)[0]) // 320 * 320
    skipped = skipped_silent_rows(right[first:].reshape(-1, 320), caller.reshape(-1, 320))
    assert skipped <= 10, skipped
    await asyncio.sleep(0)
