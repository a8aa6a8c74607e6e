"""The simulator: Vonage's side of a call (or a carrier's), the load generator, and the
voice-agent benchmark (turn latency, barge-in, network impairments, an HTML report).

One module per job (docs/architecture.md s.1):

* ``options``: what a call does (:class:`CallOptions`, :class:`TurnOptions`,
  :class:`Impairments`);
* ``source``: the caller's audio and the frame numbers stamped in it; ``level``: where
  speech is; ``timeline``: the level of each frame sent and heard, for the report;
* ``vonage_peer`` and ``carrier_peer``: the messages, sans-I/O; ``playback``: Vonage's
  playback buffer, the caller's playout clock;
* ``client``: the websocket, on bridge's connection layer; ``call``: one call;
  ``load``: many, over processes;
* ``turns``: a conversation with a voice agent; ``impair``: network impairments;
  ``agent``: a scripted agent with known timing, to check the measurements;
* ``fields``: reports from one table of fields; ``reports``: the report types;
  ``bridge_view``: what bridge counted (its ``/metrics``); ``html``: ``--report``;
  ``cli``: ``bridge call``, ``bridge load``, ``bridge agent``.

Import rule: ``bridge.sim``.
"""

from __future__ import annotations

from bridge.sim.call import BAD_FRAME_CLOSE_CODE, SimulatedCall, run_call
from bridge.sim.cli import add_subcommands, options_from_args
from bridge.sim.load import LoadProcessError, run_load
from bridge.sim.options import CallOptions, Impairments, TurnOptions
from bridge.sim.reports import (
    CallReport,
    LoadReport,
    TurnReport,
    format_call_report,
    format_load_report,
)
from bridge.sim.source import read_stamp, stamp_frame

__all__ = [
    "BAD_FRAME_CLOSE_CODE",
    "CallOptions",
    "CallReport",
    "Impairments",
    "LoadProcessError",
    "LoadReport",
    "SimulatedCall",
    "TurnOptions",
    "TurnReport",
    "add_subcommands",
    "format_call_report",
    "format_load_report",
    "options_from_args",
    "read_stamp",
    "run_call",
    "run_load",
    "stamp_frame",
]
