"""The upstream link's bookkeeping and the forward mode's pure parts, without a network.

(The link against real servers, killed, stalled and mute, is tests/integration/test_forward.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.call import Call
from bridge.handlers.forward import event_json, render_hello
from bridge.pacing import FakeClock, Scheduler
from bridge.protocol.vonage import Cleared, Connected, Dtmf, Notified
from bridge.upstream import UpstreamLink, UpstreamOptions


class NullIO:
    def send_binary(self, data: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


def link(**options: Any) -> UpstreamLink:
    return UpstreamLink(
        UpstreamOptions(url="ws://127.0.0.1:9/", **options),
        on_message=lambda item: None,
        on_give_up=lambda reason: None,
    )


def test_options_refuse_a_window_as_big_as_the_buffer() -> None:
    with pytest.raises(ValueError, match="replay_max_ms"):
        UpstreamOptions(url="ws://x/", buffer_ms=200, replay_max_ms=200)
    with pytest.raises(ValueError, match="positive"):
        UpstreamOptions(url="ws://x/", max_attempts=0)


async def test_a_full_buffer_drops_the_oldest_and_counts_never_sent_audio_as_lost() -> None:
    up = link(buffer_ms=100, replay_max_ms=20)
    for i in range(8):
        up.send_audio(bytes([i]) * 640)
    up.send_text('{"event":"websocket:cleared"}')
    assert up.stats.frames_lost == 4  # 9 messages, room for 5: the 4 oldest frames went
    assert up.stats.frames_unconfirmed_dropped == 0
    assert up.buffered_ms == 80
    assert up.stats.peak_buffer_frames == 5


async def test_confirming_releases_messages_up_to_the_ping() -> None:
    up = link()
    for i in range(10):
        up.send_audio(bytes([i]) * 640)
    up._sent_high = 5  # as if six had been sent on connection 0
    up._confirm(3, connection=0)
    assert up.stats.frames_confirmed == 4
    assert up.buffered_ms == 120
    up._confirm(9, connection=1)  # a pong from another connection counts for nothing
    assert up.buffered_ms == 120


@pytest.mark.parametrize(("failures", "low", "high"), [(1, 0.05, 0.1), (3, 0.2, 0.4), (12, 2.5, 5)])
def test_backoff_doubles_with_jitter_up_to_five_seconds(
    failures: int, low: float, high: float
) -> None:
    up = link(backoff_ms=100)
    delays = [up._backoff_s(failures) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert max(delays) - min(delays) > (high - low) / 4  # jittered, not constant


def make_call(query: str = "", **metadata: object) -> Call:
    from bridge.protocol.vonage import parse_query  # noqa: PLC0415

    scheduler = Scheduler(FakeClock(), lead_ms=100)
    connected = Connected(sample_rate=8000, metadata=metadata, query=parse_query(query))
    return Call(connected, NullIO(), scheduler)


def test_hello_fills_call_values_json_escaped(caplog: pytest.LogCaptureFixture) -> None:
    call = make_call("call=abc&model=nova", language="en-GB", caller='say "hi"', n=3)
    template = (
        '{"id":"$call_id","rate":$rate,"in":$call_rate,"type":"$content_type",'
        '"lang":"${language}","who":"$caller","n":$n,"model":"$model","x":"$missing"}'
    )
    hello = json.loads(render_hello(template, call, 16000))
    assert hello == {
        "id": "abc",
        "rate": 16000,
        "in": 8000,
        "type": "audio/l16;rate=16000",
        "lang": "en-GB",
        "who": 'say "hi"',
        "n": 3,
        "model": "nova",
        "x": "",
    }
    assert any("lacks" in r.getMessage() for r in caplog.records)


def test_events_go_up_as_vonage_wrote_them() -> None:
    assert json.loads(event_json(Dtmf("5", 260))) == {
        "event": "websocket:dtmf",
        "digit": "5",
        "duration": 260,
    }
    assert json.loads(event_json(Dtmf("#"))) == {"event": "websocket:dtmf", "digit": "#"}
    assert json.loads(event_json(Notified({"a": 1}))) == {
        "event": "websocket:notify",
        "payload": {"a": 1},
    }
    assert json.loads(event_json(Cleared())) == {"event": "websocket:cleared"}
