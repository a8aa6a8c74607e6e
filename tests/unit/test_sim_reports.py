"""The simulator's reports: one table of fields per report type, and what is derived from it
(values, text, JSON, the HTML page), bridge's /metrics differences, the Vonage peer."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.metrics import Metrics
from bridge.sim.bridge_view import difference, parse
from bridge.sim.fields import Count, Max, OverCalls, Pct, Sum, build, declared, rows, text_lines
from bridge.sim.html import PLOT_PX, render
from bridge.sim.load import LoadPart
from bridge.sim.reports import (
    BridgeReport,
    CallReport,
    ImpairmentReport,
    LoadReport,
    TurnReport,
)
from bridge.sim.timeline import Timeline
from bridge.sim.turns import TurnRow, TurnStats
from bridge.sim.vonage_peer import VonagePeer
from bridge.stats import Histogram
from bridge.units import FRAME_NS, MS
from tests.helpers import ROOT

REPORTS = (CallReport, LoadReport, TurnReport, ImpairmentReport, BridgeReport)


@pytest.mark.parametrize("report_type", REPORTS, ids=lambda t: t.__name__)
def test_every_field_is_declared_once_with_a_meaning(report_type: type[Any]) -> None:
    names = [f.name for f in dataclasses.fields(report_type)]
    declared_names = [name for name, _ in declared(report_type)]
    assert declared_names == names  # every field of a report is a declared figure
    for name, meta in declared(report_type):
        assert meta.help, f"{report_type.__name__}.{name} says nothing about what it means"


def test_load_figures_come_from_call_figures_by_name() -> None:
    """A load total or a spread over calls names a call figure: adding a call figure and its
    load total is one declaration each, and the load part adds it up by itself."""
    call_fields = {f.name for f in dataclasses.fields(CallReport)}
    for name, meta in declared(LoadReport):
        if isinstance(meta.source, Sum | OverCalls):
            assert meta.source.field in call_fields, name
    part = LoadPart()
    report = CallReport(
        url="u", rate=16000, connected=True, completed=True, frames_sent=7, frames_lost=2
    )
    call = type(
        "FakeCall",
        (),
        {
            "hist": type("H", (), {"jitter": Histogram()})(),
            "turns": None,
            "timeline": None,
            "impair_stats": lambda self: None,
        },
    )()
    part.add(report, call)
    part.add(report, call)
    assert part.sums["frames_sent"] == 14 and part.sums["frames_lost"] == 4
    assert part.sums["completed"] == 2


class Measured:
    """A call's measures, made up: counters by name and one histogram."""

    def __init__(self) -> None:
        self.hist = Histogram()
        for v in (1, 2, 3, 4, 100):
            self.hist.record(v * MS)

    def counter(self, name: str) -> Any:
        return {"turns_done": 3, "answered": 2, "unanswered": 1}.get(name, 0)

    def histogram(self, name: str) -> Histogram:
        return self.hist if name == "latency" else Histogram()


def test_build_takes_each_value_from_its_source() -> None:
    report = build(TurnReport, Measured(), turns=3, pause_ms=500)
    assert (report.turns, report.turns_done, report.answered, report.unanswered) == (3, 3, 2, 1)
    assert report.latency_p50_ms == pytest.approx(3, rel=0.01)
    assert report.latency_max_ms == 100.0
    assert report.barge_in_p50_ms is None  # nothing recorded: not measured
    text = "\n".join(text_lines(report))
    assert "latency    p50 3.0" in text and "max 100.00 ms" in text
    assert "reaction" not in text  # a line with no value at all is left out
    assert json.loads(json.dumps(report.to_dict()))["latency_max_ms"] == 100.0
    labels = [label for label, _, _ in rows(report)]
    assert "latency p95" in labels and "settings pause" in labels
    sources = {type(m.source) for _, m in declared(TurnReport)}
    assert {Count, Pct, Max} <= sources


def _turn_report() -> TurnReport:
    rows_ = tuple(
        TurnRow(
            turn=i,
            speech_start_ms=1000.0 + 2000 * i,
            speech_end_ms=1600.0 + 2000 * i,
            answered=True,
            answer_start_ms=1900.0 + 2000 * i + i,
            latency_ms=300.0 + i,
            reply_end_ms=2500.0 + 2000 * i,
            barge_in=i > 0,
            barge_in_ms=250.0 + i if i else None,
            stopped_by="clear" if i else None,
        )
        for i in range(6)
    )
    stats = TurnStats(turns=6)
    for r in rows_:
        stats.latency.record(round((r.latency_ms or 0) * MS))
    return build(TurnReport, stats, turns=6, rows=rows_, pause_ms=300)


def _timeline() -> Timeline:
    timeline = Timeline()
    timeline.begin(0)
    loud, quiet = struct.pack("<320h", *([8000] * 320)), bytes(640)
    for k in range(700):
        t = k * FRAME_NS
        in_turn = (k * 20) % 2000
        timeline.sent.add(t, loud if 1000 <= (k * 20) % 2000 + 1000 < 1600 else quiet)
        timeline.heard.add(t, loud if 1900 <= in_turn + 1000 < 2500 else quiet)
    return timeline


def _png_size(uri: str) -> tuple[int, int]:
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_html_page_is_self_contained_with_plots_of_the_set_size() -> None:
    pytest.importorskip("matplotlib")
    report = CallReport(
        url="ws://127.0.0.1:1/socket",
        rate=16000,
        connected=True,
        completed=True,
        turns=_turn_report(),
        impairments=ImpairmentReport(burst_ms=200, burst_every_s=2.0, sent_gaps=3),
    )
    page = render(report, _timeline())
    images = re.findall(r"<img alt='([^']+)' src='([^']+)'>", page)
    assert [alt for alt, _ in images] == ["latency distribution", "timeline", "each turn"]
    for _, src in images:
        assert src.startswith("data:image/png;base64,")
        assert _png_size(src) == PLOT_PX
    # Nothing is fetched from anywhere: no URL but the call's own, in text.
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    assert "<link" not in page and "<script" not in page
    # The same figures as --json: every turn, and each figure with its meaning.
    assert page.count("<tr><td class='v'>") == 6
    assert "turn latency: the caller&#x27;s last speech sample" in page
    assert "burst" in page and "200 ms" in page


def test_report_without_matplotlib_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """matplotlib made unimportable (as where the bench extra is not installed)."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.figure'] = None\n"
        "from bridge.cli import main\n"
        f"raise SystemExit(main(['call', 'ws://127.0.0.1:9/', '--report', {str(tmp_path / 'r.html')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--report needs matplotlib" in result.stderr and "bridge[report]" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_bridge_counters_are_differences_of_its_own_metrics() -> None:
    metrics = Metrics()
    metrics.gaps.observe(0.3)  # before the run: not counted
    before = parse(metrics.exposition().decode())
    for gap_s in (0.22, 0.221, 0.219):
        metrics.gaps.observe(gap_s)
    for late_s in [0.0003] * 99 + [0.004]:
        metrics.pacing.observe(late_s)
    metrics.frames_in.inc(300)
    metrics.calls.labels("completed").inc()
    after = parse(metrics.exposition().decode())
    view = difference("http://x/metrics", before, after)
    assert (view.calls, view.frames_in, view.inbound_gaps) == (1, 300, 3)
    assert view.inbound_gap_max_le_ms == 300.0  # the (200, 300] ms bucket
    assert view.inbound_gap_total_ms == pytest.approx(660, abs=0.1)
    assert view.pacing_wakeups == 100
    assert view.pacing_error_p99_le_ms == 0.5  # 99 of 100 within the 0.5 ms bucket
    assert view.underrun_frames == 0


def test_the_vonage_peer_answers_notify_with_its_payload_and_clear() -> None:
    peer = VonagePeer(16000, {"caller": "4477"})
    opening = json.loads(peer.opening()[0])
    assert opening["event"] == "websocket:connected"
    assert opening["content-type"] == "audio/l16;rate=16000" and opening["caller"] == "4477"
    mark = peer.read('{"action":"notify","payload":{"n":[1,2]}}')
    assert mark.kind == "mark"
    assert json.loads(peer.mark_done(mark.name)) == {
        "event": "websocket:notify",
        "payload": {"n": [1, 2]},
    }
    assert peer.read('{"action":"clear"}').kind == "clear"
    assert json.loads(peer.cleared() or "") == {"event": "websocket:cleared"}
    with pytest.raises(ValueError, match="not a Vonage websocket command"):
        peer.read('{"action":"dance"}')
    assert peer.stop() is None and peer.finish() == []
    assert json.loads(peer.dtmf("5"))["digit"] == "5"
