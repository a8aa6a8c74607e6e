"""Suite-wide pytest hooks."""

from __future__ import annotations

from bridge.server import resolve_transport
from tests.helpers import TRANSPORT


def pytest_report_header() -> str:
    return f"bridge transport: {resolve_transport(TRANSPORT)} (BRIDGE_TRANSPORT={TRANSPORT})"
