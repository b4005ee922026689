"""Generated ids -> caption text as vLLM writes it (capshap.captioners.hf.tokens.caption_text),
checked against an independent incremental detokenizer: ``tokenizers.decoders.DecodeStream``,
the one vLLM's detokenizer steps, fed one id at a time."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
DecodeStream = pytest.importorskip("tokenizers.decoders").DecodeStream

import tiny_vlms as tv

from capshap.captioners.hf.tokens import caption_text


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tv.path("idefics3", std=0.5))


def streamed(tok, ids: list[int]) -> str:
    """What a server streams for ids: DecodeStream steps, nothing flushed at the end."""
    stream = DecodeStream(skip_special_tokens=True)
    out = ""
    for i in ids:
        piece = stream.step(tok._tokenizer, i)
        out += piece or ""
    return out


def byte_ids(tok, data: bytes) -> list[int]:
    """One id per byte (byte-level BPE: the byte's own token)."""
    # GPT-2's byte -> printable character table, which the byte-level BPE uses
    shown = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in shown:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    ids = [tok.convert_tokens_to_ids(table[b]) for b in data]
    assert tok.decode(ids) == data.decode("utf-8", "replace")
    return ids


def test_a_trailing_incomplete_character_is_dropped_as_the_server_drops_it(tok):
    cat = tok(" a cat", add_special_tokens=False)["input_ids"]
    e_acute = byte_ids(tok, "é".encode())  # 2 bytes
    assert len(e_acute) == 2 and tok.decode(cat + e_acute[:1]).endswith("\ufffd")
    assert caption_text(tok, cat + e_acute[:1]) == "a cat" == streamed(tok, cat + e_acute[:1]).strip()
    assert caption_text(tok, cat + e_acute) == "a caté"  # a finished character stays
    # an incomplete character in the middle stays U+FFFD, as in the stream
    mid = cat + e_acute[:1] + cat
    assert caption_text(tok, mid) == "a cat\ufffd a cat" == streamed(tok, mid).strip()
    # nothing but an incomplete character: kept, rather than no caption at all
    assert caption_text(tok, e_acute[:1]) == "\ufffd"


def test_random_ids_give_the_streamed_text(tok):
    rng = np.random.default_rng(0)
    special = set(tok.all_special_ids)
    ends_partial = 0
    for _ in range(300):
        ids = [int(i) for i in rng.integers(0, len(tok), size=int(rng.integers(1, 20)))]
        ids = [i for i in ids if i not in special] or [tok.convert_tokens_to_ids("a")]
        want = streamed(tok, ids).strip()
        got = caption_text(tok, ids)
        if want:
            assert got == want, ids
        ends_partial += tok.decode(ids).endswith("\ufffd")
    assert ends_partial > 20  # the case that matters was exercised
