"""scripts/system-packages.list is the one place that says which system programs the tests use.

A test names its program with ``require_command``; the skip reason then names the Debian
package, and ``scripts/system-packages`` installs exactly the listed ones. A program used but
not listed would never be installed; a line listed but used by no test installs for nothing.
"""

from __future__ import annotations

import re

from tests.helpers import ROOT, system_packages

USE = re.compile(r"""require_command\(["']([^"']+)["']\)""")


def test_every_program_a_test_requires_is_listed_and_every_listed_one_is_used() -> None:
    used = {
        name for path in (ROOT / "tests").rglob("*.py") for name in USE.findall(path.read_text())
    }
    listed = set(system_packages())
    assert used, "no test calls require_command: the pattern above is stale"
    assert used - listed == set(), "add these to scripts/system-packages.list"
    assert listed - used == set(), "no test uses these; remove them from the list"


def test_no_test_runs_a_text_to_speech_program() -> None:
    """Speech comes from tests/data (made once, committed); a fresh machine has no flite."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if re.search(r"""["'](flite|espeak|espeak-ng|pico2wave|say)["']""", path.read_text())
    ]
    assert offenders == []
