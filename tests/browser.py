"""Headless Chromium for the browser-phone tests: Debian's ``chromium``, driven by Playwright.

No browser is downloaded: Playwright launches the system binary (``executable_path``). The
microphone is Chromium's fake capture device fed from a WAV file, which it loops; the
permission prompt is answered "allow" by ``--use-fake-ui-for-media-stream`` unless a test
asks for a browser that refuses the microphone (then headless Chromium denies it, as a user
clicking "Block" would). Playwright gives each launch a fresh temporary profile
(``--user-data-dir``) and removes it on close.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from tests.helpers import require_command, wait_s

#: Quiet, offline, reproducible: nothing phones home, no GPU, no sandbox (tests may run as
#: root in a container, where Chromium's sandbox cannot start).
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
)


def chromium_path() -> str:
    """The system Chromium, else skip the test saying how to install it (fail under CI)."""
    return require_command("chromium")


@contextlib.asynccontextmanager
async def chromium(
    mic_wav: Path | None = None, *, allow_microphone: bool = True
) -> AsyncIterator[Browser]:
    """A headless Chromium whose microphone plays ``mic_wav`` in a loop (if given)."""
    args = [*FLAGS]
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    if allow_microphone and mic_wav is not None:
        args.append("--use-fake-ui-for-media-stream")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=args,
            timeout=wait_s(30) * 1000,
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Phone:
    """The phone page in a tab, with what went wrong in its console."""

    page: Page
    problems: list[str] = field(default_factory=list)

    async def state(self) -> dict[str, Any]:
        """``window.bridgePhone``'s figures (functions left out, -Infinity as None)."""
        state: dict[str, Any] = await self.page.evaluate(
            "() => JSON.parse(JSON.stringify(window.bridgePhone, "
            "(k, v) => (v === -Infinity ? null : v)))"
        )
        return state

    async def wait(self, condition: str, seconds: float = 15.0) -> None:
        """Until the JS expression ``condition`` holds (``p`` is ``window.bridgePhone``)."""
        await self.page.wait_for_function(
            f"() => {{ const p = window.bridgePhone; return {condition}; }}",
            timeout=wait_s(seconds) * 1000,
            polling=50,
        )


async def open_phone(browser: Browser, url: str) -> Phone:
    """A tab at ``url``; its console errors and uncaught exceptions are kept in ``problems``."""
    page = await browser.new_page(viewport={"width": 900, "height": 640})
    phone = Phone(page)
    page.on("pageerror", lambda exc: phone.problems.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: phone.problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.set_default_timeout(wait_s(20) * 1000)
    await page.goto(url)
    return phone
