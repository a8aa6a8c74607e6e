"""``bridge call --turns ... --report FILE.html`` opened in a real headless Chromium.

A short conversation with ``bridge agent`` (a separate process, in bridge's place) over a
jittered network writes the page; Chromium loads it with the network cut off (a
self-contained page needs nothing), and each plot is screenshotted as the browser drew it:
an image of the size the page sets, with something drawn on it, not a blank or broken one.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bridge.audio.wav import read_wav, write_wav
from bridge.cli import main
from bridge.sim.html import PLOT_PX
from tests.browser import chromium, chromium_path
from tests.helpers import DATA, ROOT, TRANSPORT, wait_s

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TRANSPORT == "websockets", reason="no server transport involved"),
]

PLOTS = ["latency distribution", "timeline", "each turn"]


@pytest.fixture
def agent() -> Iterator[str]:
    """``python -m bridge agent --port 0``: its URL, from the line it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "agent", "--port", "0", "--answer-after-ms", "400"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on ws://" in line, line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=wait_s(10))
        if proc.stdout is not None:
            proc.stdout.close()


def _screenshot_array(png: bytes) -> NDArray[np.float32]:
    image = pytest.importorskip("matplotlib.image")
    pixels: NDArray[np.float32] = image.imread(io.BytesIO(png), format="png")
    return pixels


async def _shoot(page_path: Path) -> tuple[list[dict[str, Any]], list[bytes], bytes]:
    async with chromium() as browser:
        context = await browser.new_context(
            viewport={"width": 1100, "height": 900}, device_scale_factor=1, offline=True
        )
        page = await context.new_page()
        await page.goto(page_path.as_uri())
        images = page.locator("img")
        sizes = await images.evaluate_all(
            "imgs => imgs.map(i => ({alt: i.alt, complete: i.complete, "
            "w: i.naturalWidth, h: i.naturalHeight, shownW: i.width, shownH: i.height}))"
        )
        shots = [await images.nth(i).screenshot() for i in range(await images.count())]
        whole = await page.screenshot(full_page=True)
        await context.close()
    return sizes, shots, whole


def test_the_html_report_shows_its_plots_in_a_browser(
    agent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    chromium_path()
    samples, rate = read_wav(DATA / "billing_slt_16k.wav")
    utterance = tmp_path / "please_connect.wav"
    write_wav(utterance, samples[: round(0.93 * rate)], rate)
    page_path = tmp_path / "report.html"
    args = ["call", agent, "--turns", "2", "--wav", str(utterance), "--pause-ms", "200"]
    args += ["--gap-ms", "100", "--jitter-ms", "5", "--seed", "7", "--report", str(page_path)]
    assert main(args) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "answered 2" in text, text

    sizes, shots, whole = asyncio.run(asyncio.wait_for(_shoot(page_path), wait_s(60)))
    assert [s["alt"] for s in sizes] == PLOTS
    for size, shot in zip(sizes, shots, strict=True):
        # Decoded by the browser at the size the page sets, and drawn at that size.
        assert size["complete"] and (size["w"], size["h"]) == PLOT_PX, size
        assert (size["shownW"], size["shownH"]) == PLOT_PX, size
        pixels = _screenshot_array(shot)
        # (An element's screenshot is its box rounded out to whole pixels: at most one more.)
        height, width = pixels.shape[:2]
        assert PLOT_PX[0] <= width <= PLOT_PX[0] + 1, (size["alt"], pixels.shape)
        assert PLOT_PX[1] <= height <= PLOT_PX[1] + 1, (size["alt"], pixels.shape)
        # Not blank: a fair share of the plot is not its background, in several colours.
        rgb = pixels[:, :, :3]
        background = (rgb > 0.97).all(axis=2)
        assert background.mean() < 0.97, (size["alt"], background.mean())
        colours = len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        assert colours > 20, (size["alt"], colours)
    # The page as a whole: its plots and tables, taller than one screen.
    assert _screenshot_array(whole).shape[0] > 3 * PLOT_PX[1]
    (tmp_path / "report.png").write_bytes(whole)
