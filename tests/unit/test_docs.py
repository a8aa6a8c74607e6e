"""The repository explains itself: every document the code cites exists, with that section.

Code cites the docs by file and section (``docs/protocol.md s.4``). A citation of a file that
is not in the repository, or of a section that is not in the file, is an explanation a reader
cannot follow; these tests find every one in the code, the scripts and the Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: A Markdown file named in prose: ``docs/protocol.md``, ``README.md``, ``tests/data/README.md``
#: (a quoted name is a path being built in code, like ``ROOT / "docs" / "benchmarks.md"``).
_DOC = re.compile(r"(?<![\w./\"'-])((?:[\w-]+/)*[\w-]+\.md)\b")
#: A cited section: ``docs/protocol.md s.4``, ``s.1-5``, ``(s.2)``, ``s.3 and s.7``.
_CITED = re.compile(r"(docs/[\w-]+\.md)((?:[ ,(]+(?:and )?s\.\d+(?:-\d+)?\)?)+)")
_SECTION = re.compile(r"s\.(\d+)(?:-(\d+))?")
_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)


def _sources() -> list[Path]:
    """Python, shell and Markdown files of the repository (not the virtual environment)."""
    found = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    found += sorted((ROOT / "docs").glob("*.md"))
    for folder in ("bridge", "tests", "benchmarks"):
        found += sorted((ROOT / folder).rglob("*.py"))
        found += sorted((ROOT / folder).rglob("*.md"))
    found += sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file())
    found += sorted(p for p in (ROOT / ".ci").iterdir() if p.is_file())
    return [p for p in found if p.exists() and p != Path(__file__).resolve()]


def _sections(doc: Path) -> set[int]:
    return {int(n) for n in _HEADING.findall(doc.read_text())}


def test_the_docs_the_code_relies_on_exist_with_numbered_sections() -> None:
    for name in ("protocol", "architecture", "lessons"):
        doc = ROOT / "docs" / f"{name}.md"
        assert doc.exists(), doc
        numbers = sorted(_sections(doc))
        assert numbers == list(range(1, len(numbers) + 1)), (doc, numbers)


def test_the_checks_find_citations() -> None:
    text = "see docs/protocol.md s.4, docs/lessons.md (s.2) and docs/architecture.md s.3 and s.7"
    cited = [(m.group(1), _SECTION.findall(m.group(2))) for m in _CITED.finditer(text)]
    assert cited == [
        ("docs/protocol.md", [("4", "")]),
        ("docs/lessons.md", [("2", "")]),
        ("docs/architecture.md", [("3", ""), ("7", "")]),
    ]
    assert _DOC.findall("protocol.md s.4; docs/x.md; see README.md; '/a.md'") == [
        "protocol.md",
        "docs/x.md",
        "README.md",
    ]


@pytest.mark.parametrize("source", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_document_exists(source: Path) -> None:
    text = source.read_text()
    base = source.parent if source.parent.name == "docs" else ROOT
    missing = [name for name in _DOC.findall(text) if not (base / name).exists()]
    # Inside docs/, a link may also name a file from the root ("docs/benchmarks.md").
    missing = [name for name in missing if not (ROOT / name).exists()]
    assert not missing, f"{source.relative_to(ROOT)} cites {missing}, not in the repository"


@pytest.mark.parametrize("source", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_section_exists(source: Path) -> None:
    for match in _CITED.finditer(source.read_text()):
        doc = ROOT / match.group(1)
        sections = _sections(doc)
        for first, last in _SECTION.findall(match.group(2)):
            for number in range(int(first), int(last or first) + 1):
                assert number in sections, (
                    f"{source.relative_to(ROOT)} cites {match.group(1)} s.{number}, "
                    f"which has sections {sorted(sections)}"
                )


def test_the_layout_names_every_module() -> None:
    """docs/architecture.md s.1 is the map of the package: a new module goes on it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text.split("## 1. ", 1)[1].split("\n## ", 1)[0]
    words = set(re.findall(r"[\w]+", layout))
    unnamed = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "bridge").rglob("*.py"))
        if path.stem not in ("__init__", "__main__") and path.stem not in words
    ]
    assert not unnamed, f"docs/architecture.md s.1 does not name {unnamed}"


_README_CITED = re.compile(r'README[:,]? *\(?("[^"]+"(?: and "[^"]+")*)')


@pytest.mark.parametrize("source", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_readme_section_exists(source: Path) -> None:
    """``(README: "Bad input")`` names a heading of the README (or the start of one)."""
    headings = re.findall(r"^#{2,3} (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    for match in _README_CITED.finditer(source.read_text()):
        for title in re.findall(r'"([^"]+)"', match.group(1)):
            assert any(h.startswith(title) for h in headings), (source.name, title)
