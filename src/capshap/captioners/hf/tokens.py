"""Readable token texts of a caption, and their grouping into whole words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["token_pieces", "TokenLayout", "caption_text", "leading_blank"]

_REPLACEMENT = "\ufffd"


def _text(tokenizer: Any, ids: list[int]) -> str:
    """The text of ``ids`` as a server streams it: special tokens skipped, and trailing
    tokens whose bytes do not yet form a whole character (the decoded text ends in U+FFFD)
    held back. vLLM's incremental detokenizer never emits such a tail, so a caption made
    through vLLM ends before it."""
    n = len(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    while n and text.endswith(_REPLACEMENT):
        n -= 1
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
    return text


def caption_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The caption text of generated answer ids, as vLLM writes it.

    ``ids`` (T,) are the generated answer ids, cut before the end-of-answer token. The text
    is their decoding with special tokens skipped, without a trailing incomplete UTF-8
    character (the first bytes of a character the model never finished decode to U+FFFD;
    vLLM's incremental detokenizer holds them back and never emits them), stripped of
    surrounding whitespace. Where nothing but incomplete characters was written, the text
    keeps its U+FFFD (a server would answer an empty caption).
    """
    ids = [int(i) for i in ids]
    text = _text(tokenizer, ids).strip()
    return text if text else tokenizer.decode(ids, skip_special_tokens=True).strip()


def leading_blank(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many of the first ``ids`` decode to whitespace only (not to nothing: special and
    partial-byte tokens are not whitespace). A caption is stripped, so they are not part of
    it: they separate the prompt from the answer ("Assistant:" + " " before "3 cats")."""
    n = 0
    for t in ids:
        text = tokenizer.decode([int(t)], skip_special_tokens=True)
        if not text or text.strip():
            break
        n += 1
    return n


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[tuple[str, bool]]:
    """Readable text of each token and whether it starts a new word.

    ``ids`` are non-special token ids of one caption. Each token's text is what it adds to
    the decoded caption (so GPT-2's "Ġ" and WordPiece's "##" disappear), stripped; a token
    starts a word when that addition begins with whitespace (or it is the first token).
    Returns a list of (text, starts_word), one per id.
    """
    ids = [int(i) for i in ids]
    out: list[tuple[str, bool]] = []
    prev = ""
    for i, tid in enumerate(ids):
        cur = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        raw = tokenizer.convert_ids_to_tokens(tid)
        raw = raw if isinstance(raw, str) else str(raw)
        if cur.startswith(prev):
            piece = cur[len(prev):]
            starts = i == 0 or piece[:1].isspace()
        else:  # decoding is not prefix-stable here (partial UTF-8, clean-up); use the raw token
            piece = tokenizer.decode([tid], skip_special_tokens=True)
            starts = i == 0 or raw.startswith(("Ġ", "▁")) or (not raw.startswith("##") and piece[:1].isspace())
        text = piece.strip()
        if text.startswith("##") and raw.startswith("##"):  # WordPiece keeps ## on a leading piece
            text = text[2:]
        if not text:
            text = raw.lstrip("Ġ▁").removeprefix("##") or raw
        out.append((text, starts))
        prev = cur
    return out


class TokenLayout:
    """The scored tokens of one caption, and optionally their grouping into words.

    Built from the non-special token ids of the caption. ``tokens`` are the T column names a
    scorer exposes: token texts, or word texts with ``merge_words=True``. :meth:`apply` turns
    per-token scores (N, T_tokens) into per-column scores (N, T), summing a word's tokens.
    """

    def __init__(self, tokenizer: Any, ids: Sequence[int], merge_words: bool = False):
        pieces = token_pieces(tokenizer, ids)
        self.token_texts = [p[0] for p in pieces]
        self.merge_words = bool(merge_words)
        if not self.merge_words:
            self.tokens = list(self.token_texts)
            self._starts = None
            return
        starts = [i for i, (_, s) in enumerate(pieces) if s or i == 0]
        self._starts = np.asarray(starts, dtype=np.intp)
        bounds = starts + [len(pieces)]
        ids = [int(i) for i in ids]
        self.tokens = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            word = tokenizer.decode(ids[a:b], skip_special_tokens=True).strip()
            self.tokens.append(word or "".join(self.token_texts[a:b]))

    def apply(self, token_scores: np.ndarray) -> np.ndarray:
        """(N, T_tokens) float64 -> (N, T) float64 (sums over each word's tokens when merging)."""
        if self._starts is None:
            return token_scores
        if token_scores.shape[0] == 0:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        return np.add.reduceat(token_scores, self._starts, axis=1)


