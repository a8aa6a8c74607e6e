"""The recogniser worker's own functions, run in this process with real pocketsphinx.

One call's batch that raises must end that call's decoding only: the worker forgets it (its
later batches are ignored, its final one clears it) and decodes the other calls it holds.
"""

from __future__ import annotations

import pytest

from bridge import transcribe
from bridge.audio.wav import read_wav
from tests.helpers import ROOT

pytest.importorskip("pocketsphinx")

SPEECH = ROOT / "tests" / "data" / "billing_slt_16k.wav"
WORDS = ["please", "connect", "me", "to", "the", "billing", "department"]
BATCH = 6400  # 200 ms at 16 kHz, as the handler sends


def _pcm() -> bytes:
    samples, rate = read_wav(SPEECH)
    assert rate == transcribe.ASR_RATE
    return samples.tobytes()


def test_a_batch_that_raises_ends_its_call_only() -> None:
    pcm = _pcm()
    # Both calls are part-way into the sentence in the same worker.
    for key in ("bad", "good"):
        transcribe._feed(key, pcm[:BATCH], 0, False)
    with pytest.raises(ValueError, match="negative"):
        transcribe._feed("bad", pcm[BATCH : 2 * BATCH], -1, False)  # bytes(-1) raises
    assert "bad" not in transcribe._streams
    # Its later batches are ignored, not decoded from the middle of an utterance.
    assert transcribe._feed("bad", pcm[2 * BATCH :], 0, False).utterances == []
    assert transcribe._feed("bad", b"", 0, True).utterances == []
    assert "bad" not in transcribe._failed_keys
    # The other call, in the same worker, is decoded to its last word.
    transcribe._feed("good", pcm[BATCH : 2 * BATCH], 0, False)
    result = transcribe._feed("good", pcm[2 * BATCH :], 0, True)
    assert [w.word for w in result.utterances[0].words] == WORDS
    assert result.settled_bytes == len(pcm)
    assert "good" not in transcribe._streams


def test_settled_stays_behind_an_utterance_in_progress() -> None:
    pcm = _pcm()
    middle = len(pcm) // 2 // 960 * 960
    first = transcribe._feed("mid", pcm[:middle], 0, False)
    # Speech began at about 0.1 s and has not ended: nothing after its start is settled.
    assert first.utterances == []
    assert first.settled_bytes <= 0.25 * transcribe.ASR_RATE * 2
    end = transcribe._feed("mid", pcm[middle:], 0, True)
    assert end.settled_bytes == len(pcm)
    assert " ".join(u.text for u in end.utterances).split() == WORDS


@pytest.mark.parametrize("tail", [0, 2, 480])
def test_the_last_utterance_is_decoded_however_the_stream_ends(tail: int) -> None:
    """``tail`` bytes past the last whole endpointer frame (960 bytes): 0 is the boundary
    where pocketsphinx's ``end_stream(b"")`` raised IndexError and lost the utterance."""
    pcm = _pcm()
    whole = len(pcm) // 960 * 960
    cut = pcm[: whole - 960 + tail] if tail else pcm[:whole]
    result = transcribe._feed(f"tail-{tail}", cut, 0, True)
    assert " ".join(u.text for u in result.utterances).split() == WORDS
    assert result.utterances[-1].end_s == pytest.approx(len(cut) / 32000, abs=0.01)
