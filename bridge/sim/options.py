"""What a simulated call does: :class:`CallOptions`, with its turn-taking script
(:class:`TurnOptions`) and its network impairments (:class:`Impairments`).

Each is a frozen dataclass that checks itself on construction and raises ``ConfigError``
with a one-line message (the CLI prints it and exits 2).

Import rule: standard library, ``bridge.errors``, ``bridge.protocol``, ``bridge.units``,
``bridge.sim.carrier_peer`` and ``bridge.sim.level``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.errors import ConfigError
from bridge.protocol.vonage import DTMF_DIGITS
from bridge.sim.carrier_peer import PeerOptions
from bridge.sim.level import threshold_of
from bridge.units import FRAME_MS, SECOND, SUPPORTED_RATES

#: ``bridge call --carrier``'s default rate: the one every carrier supports.
CARRIER_RATE = 8000
#: Drift beyond this (1 %) is a broken clock, not drift.
MAX_DRIFT_PPM = 10_000


def scale_ns(seconds: float) -> int:
    """Seconds from the CLI or config to integer ns, once, at the boundary."""
    return round(seconds * SECOND)


@dataclass(frozen=True)
class TurnOptions:
    """A conversation: the utterance ``turns`` times, each after the agent has answered.

    The next utterance starts ``pause_ms`` after the agent's audio (as the caller hears it)
    has fallen silent; or, with ``barge_in_after_ms``, that long into the agent's answer,
    over it. Speech is any sample whose level reaches ``threshold_dbfs``; silences shorter
    than ``gap_ms`` inside speech do not end it. An agent silent for ``answer_timeout_ms``
    after the caller stopped has not answered (the next turn starts).
    """

    turns: int
    pause_ms: int = 2000
    barge_in_after_ms: int | None = None
    threshold_dbfs: float = -40.0
    gap_ms: int = 300
    answer_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if self.turns < 1:
            raise ConfigError(f"turns must be >= 1, got {self.turns}")
        if self.pause_ms < 0:
            raise ConfigError(f"pause-ms must be >= 0, got {self.pause_ms}")
        if self.barge_in_after_ms is not None and self.barge_in_after_ms < 0:
            raise ConfigError(f"barge-in-after-ms must be >= 0, got {self.barge_in_after_ms}")
        if not -90 <= self.threshold_dbfs < 0:
            raise ConfigError(
                f"speech threshold must be between -90 and 0 dBFS, got {self.threshold_dbfs:g}"
            )
        if not 2 * FRAME_MS <= self.gap_ms <= 5000:
            raise ConfigError(f"gap-ms must be between 40 and 5000, got {self.gap_ms}")
        if self.answer_timeout_ms < self.gap_ms:
            raise ConfigError(
                f"answer-timeout-ms must be >= gap-ms ({self.gap_ms}), got {self.answer_timeout_ms}"
            )

    @property
    def threshold(self) -> int:
        """The threshold as a 16-bit sample magnitude."""
        return threshold_of(self.threshold_dbfs)


@dataclass(frozen=True)
class Impairments:
    """Network impairments, applied on the send and/or the receive path, reproducible.

    ``jitter_ms``: each message is held an extra random delay, exponentially distributed with
    this mean (capped at ten times it), never overtaking the one before (a TCP stream keeps
    order). ``burst_ms`` every ``burst_every_s``: the path delivers nothing for that long,
    then everything at once, as TCP does after a loss. ``stall_ms`` once, at ``stall_at_s``:
    the same, a single time. ``drift_ppm``: the carrier's clock runs that much fast (positive)
    or slow relative to bridge's: it sends frames every 20 ms / (1 + ppm) and plays what it
    receives at that rate. The same ``seed`` gives the same delays.
    """

    jitter_ms: float = 0.0
    burst_ms: int = 0
    burst_every_s: float = 0.0
    drift_ppm: float = 0.0
    stall_ms: int = 0
    stall_at_s: float = 1.0
    paths: Literal["both", "send", "receive"] = "both"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.jitter_ms <= 1000 or not math.isfinite(self.jitter_ms):
            raise ConfigError(f"jitter-ms must be between 0 and 1000, got {self.jitter_ms:g}")
        if self.burst_ms < 0 or self.stall_ms < 0:
            raise ConfigError("burst-ms and stall-ms must be >= 0")
        if self.burst_ms and not self.burst_ms / 1000 < self.burst_every_s < math.inf:
            raise ConfigError("--burst-ms needs --burst-every-s, longer than the burst")
        if self.burst_every_s and not self.burst_ms:
            raise ConfigError("--burst-every-s needs --burst-ms")
        if not abs(self.drift_ppm) <= MAX_DRIFT_PPM:
            raise ConfigError(f"drift-ppm must be within +-{MAX_DRIFT_PPM}, got {self.drift_ppm:g}")
        if not 0 <= self.stall_at_s < math.inf:
            raise ConfigError(f"stall-at-s must be >= 0, got {self.stall_at_s:g}")
        if self.paths not in ("both", "send", "receive"):
            raise ConfigError(f"impair paths must be both, send or receive, got {self.paths!r}")

    @property
    def active(self) -> bool:
        return bool(self.jitter_ms or self.burst_ms or self.drift_ppm or self.stall_ms)

    @property
    def on_send(self) -> bool:
        return self.paths in ("both", "send")

    @property
    def on_receive(self) -> bool:
        return self.paths in ("both", "receive")

    def frame_ns(self, frame_ns: int) -> int:
        """One frame on the carrier's clock, in bridge's ns (shorter when the clock is fast)."""
        return round(frame_ns * 1_000_000 / (1_000_000 + self.drift_ppm))


@dataclass(frozen=True)
class CallOptions:
    """One simulated call. Invalid values raise ``ConfigError`` on construction."""

    url: str
    rate: int = 16000
    seconds: float = 5.0
    headers: Mapping[str, Any] = field(default_factory=dict)
    wav: Path | str | None = None
    tone_hz: float | None = None
    dtmf: str = ""
    dtmf_at_s: float = 1.0
    linger_s: float = 0.5
    stamp: bool = True
    record: Path | str | None = None
    record_sent: Path | str | None = None
    connect_timeout_s: float = 5.0
    #: Measure how evenly the far end's audio arrives (for servers that play, not echo).
    measure_pacing: bool = False
    #: HTTP headers on the upgrade request (e.g. ``Authorization``), unlike ``headers``.
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    #: For ``wss://``: trust this CA bundle (PEM) instead of the system's; or verify nothing.
    ca_file: Path | str | None = None
    insecure: bool = False
    #: Play this carrier's side instead of Vonage's (``bridge.sim.carrier_peer``): its
    #: messages, encoding and answers; ``headers`` become its custom parameters.
    carrier: str = "vonage"
    #: The carrier's wire encoding (default: its own; see ``bridge.sim.carrier_peer.ENCODINGS``).
    encoding: str | None = None
    #: Telnyx: every N-th media message is sent after the next one (0: in order).
    reorder_every: int = 0
    #: Twilio: sign the upgrade (``X-Twilio-Signature``) with this account auth token.
    twilio_auth_token: str | None = None
    #: Telnyx: send this stream auth token (``x-telnyx-streaming-auth-token``).
    telnyx_token: str | None = None
    #: No frames from ``pause_at_s`` for ``pause_s`` seconds: a held or muted leg, a stalled
    #: network (the schedule goes on; the frames of the pause are never sent).
    pause_at_s: float = 0.0
    pause_s: float = 0.0
    #: A conversation instead of a stream: ``wav`` is the utterance (``bridge.sim.turns``).
    turns: TurnOptions | None = None
    #: Network impairments (``bridge.sim.impair``); ``None`` or inactive: a clean network.
    impair: Impairments | None = None
    #: bridge's ``/metrics``, read before and after to report what bridge did.
    metrics_url: str | None = None
    #: Keep the level of each frame sent and heard, for the HTML report's timeline.
    envelope: bool = False

    def __post_init__(self) -> None:
        if self.rate not in SUPPORTED_RATES:
            rates = ", ".join(map(str, SUPPORTED_RATES))
            raise ConfigError(f"rate must be one of {rates}, got {self.rate}")
        if not self.seconds > 0 or not math.isfinite(self.seconds):
            raise ConfigError(f"seconds must be positive, got {self.seconds}")
        bad = [d for d in self.dtmf if d not in DTMF_DIGITS]
        if bad:
            raise ConfigError(f"DTMF digits must be 0-9, * or #, got {bad[0]!r}")
        if self.dtmf_at_s < 0 or self.linger_s < 0:
            raise ConfigError("dtmf-at and linger must be >= 0")
        if not (0 <= self.pause_at_s < math.inf and 0 <= self.pause_s < math.inf):
            raise ConfigError("pause-at and pause must be >= 0")
        if not self.connect_timeout_s > 0:
            raise ConfigError("connect timeout must be positive")
        if self.wav is not None and self.tone_hz is not None:
            raise ConfigError("give either a WAV file or a tone, not both")
        if self.tone_hz is not None and not 0 < self.tone_hz < self.rate / 2:
            raise ConfigError(f"tone must be between 0 and {self.rate // 2} Hz")
        if self.wav is not None and not Path(self.wav).is_file():
            raise ConfigError(f"WAV file not found: {self.wav}")
        for path in (self.record, self.record_sent):
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise ConfigError(f"no directory for the recording: {path}")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"CA file not found: {self.ca_file}")
        if self.carrier != "vonage":
            self.peer_options()  # checks the carrier, its encoding and rate
        elif self.encoding or self.reorder_every or self.twilio_auth_token or self.telnyx_token:
            raise ConfigError("--encoding, --reorder-every and the carrier tokens need --carrier")
        if self.turns is not None:
            if self.wav is None:
                raise ConfigError("--turns needs --wav UTTERANCE.wav: what the caller says")
            if self.dtmf or self.pause_s:
                raise ConfigError("--turns plays a conversation: no --dtmf or --pause with it")
        if self.metrics_url is not None and not self.metrics_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(f"metrics URL must be http:// or https://, got {self.metrics_url!r}")

    def peer_options(self, call_id: str = "CA0000") -> PeerOptions:
        return PeerOptions(
            self.carrier,
            self.rate,
            self.encoding,
            {str(k): str(v) for k, v in self.headers.items()},
            call_id,
            self.reorder_every,
            self.telnyx_token,
        )

    @property
    def n_frames(self) -> int:
        return max(1, round(self.seconds * 1000 / FRAME_MS))

    @property
    def impaired(self) -> Impairments | None:
        """The impairments, if any is set."""
        return self.impair if self.impair is not None and self.impair.active else None
