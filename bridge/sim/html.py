"""``--report FILE.html``: one self-contained page a person would rather look at.

The latency distribution, the per-turn timeline (what the caller said and heard, and when),
the impairment settings and every figure of the report, with what each means. The figures
are the same as ``--json``'s: both come from the report's one table of fields
(``bridge.sim.fields``). The plots are drawn here with matplotlib (the ``report`` extra) and
embedded as ``data:`` URIs: the page loads nothing from anywhere.

matplotlib is imported by name (as ``benchmarks/report.py`` does), so the type check is the
same with or without the extra; without it ``--report`` stops before the call with one line
saying how to install it.

Import rule: standard library, numpy, ``bridge.errors``, ``bridge.sim.fields``,
``bridge.sim.level``, ``bridge.sim.reports``, ``bridge.sim.timeline`` and ``bridge.units``.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConfigError
from bridge.sim.fields import rows, show
from bridge.sim.level import dbfs
from bridge.sim.reports import ECHO_LINES, CallReport, LoadReport, TurnReport
from bridge.sim.timeline import Envelope, Timeline
from bridge.units import FRAME_MS

#: Every plot's size in pixels (width, height): the page lays them out at this size.
PLOT_PX = (960, 360)
_DPI = 96
#: Levels below this are drawn as silence on the timeline.
_FLOOR_DB = -70.0
INSTALL = "pip install 'bridge[report]'"


def _figure_class() -> Any:
    """matplotlib's ``Figure`` (drawn without pyplot: no GUI backend, no global state)."""
    try:
        module = importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise ConfigError(f"--report needs matplotlib, which is not installed: {INSTALL}") from exc
    return module.Figure


def check_report_path(path: Path | str) -> None:
    """Before the call: the file can be written and matplotlib is there (else one line)."""
    _figure_class()
    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"no directory for the report: {path}")


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _new_figure(rows_: int = 1) -> tuple[Any, list[Any]]:
    figure = _figure_class()
    fig = figure(figsize=(PLOT_PX[0] / _DPI, PLOT_PX[1] / _DPI), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, rows_, squeeze=False)[0]
    return fig, list(axes)


def _distribution(report: CallReport | LoadReport) -> str:
    """Turn latency and barge-in reaction histograms; without turns, the round trip's
    percentiles."""
    turns = report.turns
    if turns is not None and turns.rows:
        fig, (left, right) = _new_figure(2)
        latency = [r.latency_ms for r in turns.rows if r.latency_ms is not None]
        barge = [r.barge_in_ms for r in turns.rows if r.barge_in_ms is not None]
        for ax, values, title, colour in (
            (left, latency, "turn latency", "tab:blue"),
            (right, barge, "barge-in reaction", "tab:red"),
        ):
            if values:
                ax.hist(values, bins=min(30, max(5, len(values))), color=colour, alpha=0.8)
                for q, style in ((50, "-"), (95, "--")):
                    value = float(np.percentile(values, q))
                    ax.axvline(value, color="black", linestyle=style, linewidth=1)
                    ax.annotate(
                        f"p{q} {value:.0f} ms",
                        (value, 0.95),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        ha="right",
                        va="top",
                        fontsize=8,
                    )
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{title} ({len(values)} turns)")
            ax.set_xlabel("ms (on the caller's playout clock)")
            ax.set_ylabel("turns")
        return _png(fig)
    fig, (ax,) = _new_figure()
    names = ["p50", "p99", "max"]
    values = [report.rtt_p50_ms, report.rtt_p99_ms, report.rtt_max_ms]
    ax.bar(names, [v or 0.0 for v in values], color="tab:blue")
    ax.set_title("echo round trip")
    ax.set_ylabel("ms")
    return _png(fig)


def _steps(env: Envelope) -> tuple[Any, Any]:
    """Seconds and dBFS of each frame as steps: a frame lasts 20 ms, and where none came
    (an agent that sends nothing between answers) the step drops to silence."""
    t = np.frombuffer(env.times_ms, dtype=np.float32).astype(np.float64)
    level = np.maximum(np.array([dbfs(int(v)) for v in env.levels], dtype=np.float64), _FLOOR_DB)
    ends = t + FRAME_MS
    silent_after = np.append(t[1:] > ends[:-1] + 0.5, True)
    times = np.concatenate([t, ends[silent_after]])
    levels = np.concatenate([level, np.full(int(silent_after.sum()), _FLOOR_DB)])
    order = np.argsort(times, kind="stable")
    return times[order] / 1000, levels[order]


def _timeline(report: CallReport | LoadReport, timeline: Timeline | None) -> str | None:
    """What the caller sent and heard (level per frame), each turn's speech, answer and
    latency marked."""
    if timeline is None or not len(timeline.sent.times_ms):
        return None
    fig, (ax,) = _new_figure()
    for env, colour, label in (
        (timeline.sent, "tab:green", "caller (sent)"),
        (timeline.heard, "tab:blue", "agent (heard)"),
    ):
        if len(env.times_ms):
            t, level = _steps(env)
            offset = 0.0 if label.startswith("caller") else -1.0
            ax.fill_between(
                t,
                offset,
                offset + (level - _FLOOR_DB) / -_FLOOR_DB * 0.9,
                step="post",
                color=colour,
                alpha=0.6,
                label=label,
            )
    turns = report.turns
    if turns is not None:
        for r in turns.rows:
            ax.axvspan(
                r.speech_start_ms / 1000,
                r.speech_end_ms / 1000,
                0.5,
                1,
                color="tab:green",
                alpha=0.1,
            )
            if r.answer_start_ms is not None and r.latency_ms is not None:
                ax.annotate(
                    "",
                    xy=(r.answer_start_ms / 1000, -0.05),
                    xytext=(r.speech_end_ms / 1000, -0.05),
                    arrowprops={"arrowstyle": "->", "color": "black"},
                )
                ax.text(
                    (r.speech_end_ms + r.answer_start_ms) / 2000,
                    -0.02,
                    f"{r.latency_ms:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            if r.barge_in_ms is not None:
                ax.plot(
                    [r.speech_start_ms / 1000, (r.speech_start_ms + r.barge_in_ms) / 1000],
                    [-0.5, -0.5],
                    color="tab:red",
                    linewidth=3,
                )
            ax.text(r.speech_start_ms / 1000, 0.95, f"{r.turn + 1}", fontsize=8, va="top")
    ax.set_yticks([-0.5, 0.5], ["agent\n(heard)", "caller\n(sent)"])
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("seconds since the call started (latency in ms; red: barge-in reaction)")
    ax.set_title("per-turn timeline" if turns is not None else "timeline")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def _per_turn(turns: TurnReport | None) -> str | None:
    if turns is None or not turns.rows:
        return None
    fig, (ax,) = _new_figure()
    numbers = [r.turn + 1 for r in turns.rows]
    ax.bar(
        [n - 0.2 for n in numbers],
        [r.latency_ms or 0.0 for r in turns.rows],
        width=0.4,
        color="tab:blue",
        label="turn latency",
    )
    ax.bar(
        [n + 0.2 for n in numbers],
        [r.barge_in_ms or 0.0 for r in turns.rows],
        width=0.4,
        color="tab:red",
        label="barge-in reaction",
    )
    for r in turns.rows:
        if not r.answered:
            ax.text(r.turn + 1, 0, "no answer", rotation=90, ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("turn")
    ax.set_ylabel("ms")
    ax.set_title("each turn")
    ax.legend(fontsize=8)
    return _png(fig)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
td.v { text-align: right; font-variant-numeric: tabular-nums; }
td.h { color: #666; font-size: 12px; }
img { display: block; margin: 8px 0; }
.warn { color: #a00; font-weight: bold; }
"""


def _table(report: Any, skip: tuple[str, ...] = ()) -> str:
    body = "".join(
        f"<tr><td>{html.escape(label)}</td><td class='v'>{html.escape(value)}</td>"
        f"<td class='h'>{html.escape(meaning)}</td></tr>"
        for label, value, meaning in rows(report, skip)
    )
    return f"<table>{body}</table>"


def _turn_rows(turns: TurnReport) -> str:
    head = (
        "<tr><th>turn</th><th>caller speaks</th><th>until</th><th>answer heard</th>"
        "<th>latency ms</th><th>answer ends</th><th>barge-in</th><th>reaction ms</th>"
        "<th>stopped by</th></tr>"
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='v'>{html.escape(show(v))}</td>"
            for v in (
                r.turn + 1,
                r.speech_start_ms,
                r.speech_end_ms,
                r.answer_start_ms,
                r.latency_ms,
                r.reply_end_ms,
                r.barge_in,
                r.barge_in_ms,
                r.stopped_by,
            )
        )
        + "</tr>"
        for r in turns.rows
    )
    return f"<table>{head}{body}</table><p>Times in ms since the call started.</p>"


def render(report: CallReport | LoadReport, timeline: Timeline | None) -> str:
    """The page, as a string."""
    kind = "load" if isinstance(report, LoadReport) else "call"
    title = f"bridge {kind} {report.url}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if report.client_overloaded:
        parts.append(
            "<p class='warn'>The simulator was overloaded: its latency figures are not "
            "trustworthy.</p>"
        )
    parts.append("<h2>Latency distribution</h2>")
    parts.append(f"<img alt='latency distribution' src='{_distribution(report)}'>")
    timeline_png = _timeline(report, timeline)
    if timeline_png is not None:
        label = "first call's " if kind == "load" else ""
        parts.append(f"<h2>Timeline ({label}sent and heard)</h2>")
        parts.append(f"<img alt='timeline' src='{timeline_png}'>")
    turns_png = _per_turn(report.turns)
    if turns_png is not None:
        parts.append(f"<img alt='each turn' src='{turns_png}'>")
    if report.turns is not None:
        parts += ["<h2>Conversation</h2>", _table(report.turns)]
        if report.turns.rows:
            parts.append(_turn_rows(report.turns))
    if report.impairments is not None:
        parts += ["<h2>Network impairments</h2>", _table(report.impairments)]
    if report.bridge is not None:
        parts += ["<h2>What bridge counted (/metrics)</h2>", _table(report.bridge)]
    # A conversation's far end is an agent, not an echo: its echo figures mean nothing.
    skip = ECHO_LINES if report.turns is not None else ()
    parts += [f"<h2>The {kind}</h2>", _table(report, skip), "</body></html>"]
    return "\n".join(parts)


def write_report(
    path: Path | str, report: CallReport | LoadReport, timeline: Timeline | None
) -> None:
    Path(path).write_text(render(report, timeline), encoding="utf-8")
