"""The README's "Speech services" examples, run as written against the fakes.

Each service's section has a ``bridge serve`` command and an NCCO rate; this test takes the
command out of the README, adds only ``--upstream`` (pointing at the service's strict fake,
``tests/fakes``) and ``--port 0``, runs it as a real process with just the key variable the
section exports, makes a simulated call at the NCCO's rate, and checks that the service got
a clean session and the transcript file got finals. A README example that stops working fails
here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest

from bridge.sim import CallOptions, run_call
from tests.fakes import FAKES, KEY
from tests.fakes.recognizer import speech_wav
from tests.helpers import ROOT, TRANSPORT, wait_s

README = ROOT / "README.md"
#: The examples start their own ``bridge serve`` (default backend): once per CI run is enough.
pytestmark = pytest.mark.skipif(TRANSPORT == "websockets", reason="default backend run only")


def sections() -> dict[str, str]:
    """Each ``###`` section of "## Speech services" that has a ``bridge serve`` example."""
    text = README.read_text()
    part = text.split("\n## Speech services\n", 1)[1].split("\n## ", 1)[0]
    found = {}
    for chunk in part.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        if "bridge serve" in body:
            found[title.strip()] = body
    return found


def example(body: str) -> tuple[str, list[str], int]:
    """(the key variable exported, the ``bridge serve`` arguments, the NCCO's rate)."""
    block = re.search(r"```sh\n(.*?)```", body, re.DOTALL)
    assert block, body[:200]
    script = block.group(1).replace("\\\n", " ")
    key = re.search(r"export (\w+)=", script)
    command = next(line for line in script.splitlines() if line.startswith("bridge serve"))
    rate = re.search(r"audio/l16;rate=(\d+)", body)
    assert key and rate, body[:200]
    return key.group(1), shlex.split(command)[2:], int(rate.group(1))


SECTIONS = sections()


def finals_written(directory: Path) -> bool:
    return any(
        json.loads(line).get("final")
        for path in directory.glob("*.jsonl")
        for line in path.read_text().splitlines()
    )


def test_every_service_has_its_example() -> None:
    dialects = set()
    for body in SECTIONS.values():
        _, args, _ = example(body)
        dialects.add(args[args.index("--upstream-dialect") + 1])
    assert dialects == set(FAKES)


@pytest.mark.parametrize("title", sorted(SECTIONS))
async def test_the_readme_example_runs(tmp_path: Path, title: str) -> None:
    key_env, args, rate = example(SECTIONS[title])
    dialect = args[args.index("--upstream-dialect") + 1]
    (tmp_path / "agent.txt").write_text("You are a friendly receptionist. Be brief.\n")
    fake = FAKES[dialect]()
    await fake.start()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env = {k: v for k, v in env.items() if not k.startswith("BRIDGE_")}
    env |= {key_env: KEY, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "bridge", "serve", *args]
    argv += ["--upstream", fake.url, "--port", "0", "--log-format", "json"]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        url = None
        async with asyncio.timeout(wait_s(20)):
            while url is None:
                line = await proc.stderr.readline()
                assert line, "bridge serve exited before listening"
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("msg") == "listening":
                        url = str(record["url"])
        wav = tmp_path / "caller.wav"
        seconds = speech_wav(wav, [["hello", "world"], ["alpha", "bravo"]], rate)
        report = await run_call(
            CallOptions(url=url, rate=rate, seconds=int(seconds * 50) / 50, wav=wav, linger_s=0.2)
        )
        assert report.completed
        for _ in range(int(wait_s(10) / 0.05)):  # the clean ending may take a moment
            if finals_written(tmp_path / "transcripts"):
                break
            await asyncio.sleep(0.05)
        assert finals_written(tmp_path / "transcripts")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await fake.close()
    assert fake.violations == []
    assert fake.sessions and fake.sessions[0].accepted
