"""The rules of docs/architecture.md, checked on the source with ``ast``.

Dependencies point inward: the sans-I/O core (units, protocol, audio, pacing, errors, config,
logs) imports neither asyncio nor websockets, not even through another bridge module; only the
server, the simulator and the upstream link (and a future ``bridge/transport``) speak
websockets; soxr lives in one module; and nobody reads the wall clock with ``time.time()``.

One place for each fact: the supported rates, the content type, the frame length and the
event-loop runner are each defined in one module, and every other module imports them.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "bridge"

# The sans-I/O core: no event loop, no sockets, directly or through other bridge modules.
CORE_PREFIXES = (
    "bridge.units",
    "bridge.protocol",
    "bridge.services",
    "bridge.audio",
    "bridge.pacing",
    "bridge.errors",
    "bridge.settings",
    "bridge.config",
    "bridge.logs",
)
WEBSOCKETS_ALLOWED = ("bridge.server", "bridge.sim", "bridge.transport", "bridge.upstream")
#: The one client a handler may reach: forward mode's reconnecting upstream link, and the
#: connection layer it is built on.
HANDLER_NETWORK = ("bridge.upstream", "bridge.transport")
SOXR_ALLOWED = ("bridge.audio.resample",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module named by an import anywhere in ``source`` (function bodies included).

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a submodule); relative
    imports are resolved against ``module``.
    """
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@cache
def _direct_imports(module: str) -> frozenset[str]:
    path = _modules()[module]
    return frozenset(imports_of(path.read_text(), module, path.name == "__init__.py"))


def _top_level(names: frozenset[str] | set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def _with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _reachable(module: str) -> set[str]:
    """``module`` and every bridge module importing it runs, transitively."""
    known = _modules()
    seen: set[str] = set()
    todo = _with_parents(module)
    while todo:
        current = todo.pop()
        if current in seen or current not in known:
            continue
        seen.add(current)
        for name in _direct_imports(current):
            todo.extend(_with_parents(name))
    return seen


# --- the collector itself ---------------------------------------------------------------


def test_import_collector_sees_every_form() -> None:
    source = """
import asyncio.tasks
from websockets.server import ServerProtocol
from . import pcm
from ..errors import PeerError

def later():
    import soxr
"""
    found = imports_of(source, "bridge.audio.framing")
    assert {"asyncio", "websockets", "soxr"} <= _top_level(found)
    assert "bridge.audio.pcm" in found
    assert "bridge.errors" in found
    assert "bridge.errors" in imports_of("from .errors import X", "bridge", is_package=True)
    assert _with_parents("bridge.audio.pcm") == ["bridge", "bridge.audio", "bridge.audio.pcm"]


def test_the_package_is_where_we_think() -> None:
    modules = _modules()
    for expected in (
        "bridge.protocol.vonage",
        "bridge.audio.framing",
        "bridge.pacing",
        "bridge.config",
        "bridge.server",
        "bridge.call",
    ):
        assert expected in modules


# --- the rules ---------------------------------------------------------------------------


def _core_modules() -> list[str]:
    return [m for m in _modules() if _matches(m, CORE_PREFIXES)]


@pytest.mark.parametrize("module", _core_modules())
def test_core_imports_no_asyncio_or_websockets(module: str) -> None:
    for reached in sorted(_reachable(module)):
        forbidden = _top_level(_direct_imports(reached)) & {"asyncio", "websockets"}
        assert not forbidden, f"{module} reaches {sorted(forbidden)} through {reached}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_only_the_transports_import_websockets(module: str) -> None:
    if _matches(module, WEBSOCKETS_ALLOWED):
        return
    assert "websockets" not in _top_level(_direct_imports(module)), module


@pytest.mark.parametrize(
    "module", [m for m in _modules() if _matches(m, ("bridge.call", "bridge.handlers"))]
)
def test_call_and_handlers_never_reach_websockets(module: str) -> None:
    for reached in sorted(_reachable(module)):
        if _matches(reached, HANDLER_NETWORK):
            continue
        assert "websockets" not in _top_level(_direct_imports(reached)), (module, reached)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_soxr_is_imported_only_by_the_resampler(module: str) -> None:
    if _matches(module, SOXR_ALLOWED):
        return
    assert "soxr" not in _top_level(_direct_imports(module)), module


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_wall_clock(module: str) -> None:
    source = _modules()[module].read_text()
    assert "time.time(" not in source, f"{module} reads the wall clock; use a Clock"


# --- one place for each fact -------------------------------------------------------------

UNITS = "bridge.units"
RUNTIME = "bridge.runtime"
#: Names only ``bridge.units`` binds: binding one anywhere else is a second definition.
UNIT_NAMES = frozenset(
    {
        "Rate",
        "RATES",
        "SUPPORTED_RATES",
        "CONTENT_TYPES",
        "FRAME_MS",
        "FRAME_NS",
        "FRAME_S",
        "MS",
        "SECOND",
        "NS_PER_S",
        "FRAMES_PER_SECOND",
        "BYTES_PER_SAMPLE",
        "frame_samples",
        "frame_bytes",
    }
)
RATE_SET = {8000, 16000, 24000}


def _sources() -> dict[str, Path]:
    """Every Python module of the package and of the benchmarks, by dotted name."""
    found = dict(_modules())
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return found


def _code(module: str) -> list[ast.AST]:
    """Every node of ``module`` except docstrings (prose may quote a fact)."""
    tree = ast.parse(_sources()[module].read_text())
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [node for node in ast.walk(tree) if id(node) not in docstrings]


def _bound_names(nodes: list[ast.AST]) -> set[str]:
    """Names a module defines: assignments, functions, classes (imports are uses, not these)."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def test_fact_checks_see_what_they_look_for() -> None:
    """The checks below find the facts where they are defined, so an empty result means it."""
    units = _code(UNITS)
    assert UNIT_NAMES - {"RATES", "FRAME_S", "NS_PER_S"} <= _bound_names(units)
    assert "content_type" in _bound_names(units)
    assert any(isinstance(n, ast.Constant) and n.value == "audio/l16;rate=" for n in units)
    assert any(
        isinstance(n, ast.Tuple)
        and {e.value for e in n.elts if isinstance(e, ast.Constant)} == RATE_SET
        for n in units
    )


@pytest.mark.parametrize("module", sorted(set(_sources()) - {UNITS}))
def test_units_are_defined_only_in_bridge_units(module: str) -> None:
    nodes = _code(module)
    redefined = _bound_names(nodes) & UNIT_NAMES
    assert not redefined, f"{module} defines {sorted(redefined)}; import them from {UNITS}"
    for node in nodes:
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            assert values != RATE_SET, f"{module}:{node.lineno} lists the rates again"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert "audio/l16" not in node.value.lower(), (
                f"{module}:{node.lineno} spells the content type; use {UNITS}.content_type"
            )
        if isinstance(node, ast.Constant) and type(node.value) is int:
            assert node.value != 20_000_000, f"{module}:{node.lineno} spells the frame in ns"
            assert node.value != 1_000_000_000, f"{module}:{node.lineno} spells a second in ns"
        if isinstance(node, ast.arguments):
            named = [*node.posonlyargs, *node.args, *node.kwonlyargs]
            defaults = [*node.defaults, *node.kw_defaults]
            for arg, default in zip(reversed(named), reversed(defaults), strict=False):
                if "frame_ms" in arg.arg and isinstance(default, ast.Constant):
                    raise AssertionError(f"{module}: {arg.arg}={default.value!r}; use FRAME_MS")


@pytest.mark.parametrize("module", sorted(set(_modules()) - {RUNTIME}))
def test_only_the_runtime_picks_the_event_loop(module: str) -> None:
    """uvloop and the startup heap freeze: one helper each, used by every entry point."""
    assert "uvloop" not in _top_level(_direct_imports(module)), (module, "use bridge.runtime.run")
    for node in _code(module):
        if isinstance(node, ast.Attribute) and node.attr == "freeze":
            assert not (isinstance(node.value, ast.Name) and node.value.id == "gc"), module


# --- every module states its own import rule, and keeps it --------------------------------

#: Wording of a rule that allows any bridge module.
ANY_MODULE = "anything in the package"
_NAMED = re.compile(r"``(bridge(?:\.[a-z_]+)*)``")


def _import_rule(module: str) -> str:
    doc = ast.get_docstring(ast.parse(_modules()[module].read_text())) or ""
    _, found, rule = doc.partition("Import rule:")
    assert found, f"{module}'s docstring does not state its import rule"
    return " ".join(rule.split())


def _bridge_imports(module: str) -> set[str]:
    """The bridge modules ``module`` imports (names imported from them left out)."""
    known = _modules()
    return {name for name in _direct_imports(module) if name in known and name != "bridge"}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_each_module_imports_only_what_its_rule_names(module: str) -> None:
    rule = _import_rule(module)
    if ANY_MODULE in rule:
        return
    allowed = set(_NAMED.findall(rule))
    stray = {name for name in _bridge_imports(module) if not _matches(name, tuple(allowed))}
    assert not stray, f"{module} imports {sorted(stray)}, which its rule does not name: {rule}"
