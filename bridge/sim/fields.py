"""Reports from one table of fields: each figure is declared once, and everything else is
derived from that declaration.

A report type is a frozen dataclass whose fields are declared with :func:`metric`: the text
line the figure is printed on and its label there, its unit, one line saying what it means,
and where its value comes from (:class:`Source`). From that one declaration come

* the value: :func:`build` computes every field that has a source from whatever measured it
  (a call's counters and histograms, a load run's totals and merged histograms);
* the JSON (:func:`to_dict`), the text report (:func:`text_lines`: one line per ``line``, in
  declaration order), the HTML report's tables (:func:`rows`, with each figure's meaning).

So adding a figure to a report is one declaration (plus the counter that measures it).

Values in ms come from integer ns once, here (:func:`ms`), rounded to the microsecond.

Import rule: standard library, ``bridge.stats`` and ``bridge.units``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bridge.stats import Histogram
from bridge.units import MS

_KEY = "bridge.sim.metric"
R = TypeVar("R")


class Source:
    """Where a figure's value comes from (see the subclasses)."""


@dataclass(frozen=True)
class Count(Source):
    """A counter (or property) of what measured it, by name."""

    name: str


@dataclass(frozen=True)
class Pct(Source):
    """A percentile, in ms, of one of its histograms."""

    hist: str
    q: float


@dataclass(frozen=True)
class Max(Source):
    """The exact maximum, in ms, of one of its histograms (``None`` when empty)."""

    hist: str


@dataclass(frozen=True)
class Sum(Source):
    """A load run's total over calls of the per-call figure ``field``."""

    field: str


@dataclass(frozen=True)
class OverCalls(Source):
    """A load run's distribution over calls of the per-call figure ``field`` (in ms):
    its ``q``-th percentile, or its maximum when ``q`` is ``None``."""

    field: str
    q: float | None = None


@dataclass(frozen=True)
class Derived(Source):
    """Computed from what measured it by ``fn``."""

    fn: Callable[[Any], Any]


class Measures(Protocol):
    """What a report is built from: named counters and histograms."""

    def counter(self, name: str) -> Any: ...

    def histogram(self, name: str) -> Histogram: ...


@dataclass(frozen=True)
class Metric:
    """One figure's declaration (the metadata of its dataclass field)."""

    #: The text line it is printed on (``None``: JSON and HTML only).
    line: str | None
    label: str
    unit: str
    help: str
    source: Source | None


def metric(
    default: Any,
    line: str | None,
    label: str = "",
    *,
    unit: str = "",
    help: str = "",
    source: Source | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare one figure of a report (see the module doc); ``factory`` for a mutable
    default (``default`` is then ignored)."""
    meta = {_KEY: Metric(line, label, unit, help, source)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def ms(value_ns: float | None) -> float | None:
    return None if value_ns is None else round(value_ns / MS, 3)


def declared(report_type: type[Any]) -> Iterator[tuple[str, Metric]]:
    """Every declared figure of a report type, in order."""
    for f in dataclasses.fields(report_type):
        meta = f.metadata.get(_KEY)
        if isinstance(meta, Metric):
            yield f.name, meta


def value_of(source: Source, measured: Measures) -> Any:
    """The value ``source`` names in ``measured`` (:class:`Sum` and :class:`OverCalls` are
    looked up as counter ``sum:<field>`` and histogram ``calls:<field>``)."""
    if isinstance(source, Count):
        return measured.counter(source.name)
    if isinstance(source, Pct):
        return ms(measured.histogram(source.hist).percentile_ns(source.q))
    if isinstance(source, Max):
        hist = measured.histogram(source.hist)
        return ms(hist.max_ns) if hist.count else None
    if isinstance(source, Sum):
        return measured.counter(f"sum:{source.field}")
    if isinstance(source, OverCalls):
        hist = measured.histogram(f"calls:{source.field}")
        if not hist.count:
            return None
        return ms(hist.max_ns if source.q is None else hist.percentile_ns(source.q))
    if isinstance(source, Derived):
        return source.fn(measured)
    raise TypeError(f"unknown source {source!r}")


def build(report_type: type[R], measured: Measures, **given: Any) -> R:
    """A report whose fields are ``given`` or computed from their source in ``measured``."""
    values = dict(given)
    for name, meta in declared(report_type):
        if name not in values and meta.source is not None:
            values[name] = value_of(meta.source, measured)
    return report_type(**values)


def to_dict(report: Any) -> dict[str, Any]:
    """JSON-ready: nested reports as objects, tuples as lists, mappings as dicts."""
    return {f.name: _plain(getattr(report, f.name)) for f in dataclasses.fields(report)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def show(value: Any, unit: str = "") -> str:
    """A value as the text report prints it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def text_lines(report: Any, width: int = 10, skip: tuple[str, ...] = ()) -> list[str]:
    """One line per declared ``line`` (labels and values in order), but those in ``skip``;
    a line whose values are all ``None`` is left out (a figure that was not measured)."""
    lines: dict[str, list[tuple[str, Any, str]]] = {}
    for name, meta in declared(type(report)):
        if meta.line is not None and meta.line not in skip:
            lines.setdefault(meta.line, []).append((meta.label, getattr(report, name), meta.unit))
    out = []
    for line, items in lines.items():
        if all(value is None for _, value, _ in items):
            continue
        parts = [
            f"{label} {show(value, unit)}" if label else show(value, unit)
            for label, value, unit in items
        ]
        out.append(f"{line:<{width}} " + "  ".join(parts))
    return out


def rows(report: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """``(figure, value, meaning)`` for every declared figure that has a text line, but
    those of the lines in ``skip``."""
    out = []
    for name, meta in declared(type(report)):
        if meta.line is None or meta.line in skip:
            continue
        label = f"{meta.line} {meta.label}".strip()
        out.append((label, show(getattr(report, name), meta.unit), meta.help or name))
    return out
