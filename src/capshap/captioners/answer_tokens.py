"""A caption's tokens on an OpenAI-compatible server (vLLM): what the model generated, what
the server's tokenizer makes of the caption text, and the word pieces of that text.

A caption travels as text. The server teacher-forces the tokens *its* tokenizer makes of
the text, while a model in process teacher-forces the ids it generated. Where the text does
not re-tokenize into those ids (a U+FFFD standing for bytes that are not whole UTF-8
characters, whitespace or special tokens the text leaves out, a split the tokenizer would
not make) the two would score different tokens. These helpers let the own-head scorer see
that and say which tokens differ, and rebuild words from ``decoded_token`` pieces without
losing characters (vLLM decodes the tokens of a U+FFFD to ``""``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from capshap.text import printable

__all__ = ["generated_ids", "leading_extra", "token_difference", "trailing_extra", "word_pieces"]

_SHOW = 8  # tokens shown on each side of a difference


def generated_ids(choice: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The ids a chat completion generated for its text, from vLLM's ``token_ids``
    (``return_token_ids``), without the end-of-answer token; None where the server sent
    none, or where a stop string cut the text (then its ids are not known)."""
    ids = choice.get("token_ids")
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        return None
    reason, stop = choice.get("finish_reason"), choice.get("stop_reason")
    if reason == "stop" and (stop is None or type(stop) is int):
        return tuple(ids[:-1])  # the EOS or stop token id ended the answer; the text leaves it out
    if reason == "length":
        return tuple(ids)
    return None


def _blank(p: str | None) -> bool:
    return p is not None and p != "" and not p.strip()


def leading_extra(pieces: Sequence[str | None]) -> int:
    """How many tokens at the start of a teacher-forced answer are whitespace only.

    A caption is stripped, so such tokens are not its own: they are the separator the chat
    template puts between the generation prompt and the answer ("Assistant:" + " "), a
    token of its own where the caption starts with a symbol (U+FFFD, a digit, ...). In
    process that separator is part of the prompt too."""
    n = 0
    for p in pieces:
        if not _blank(p):
            break
        n += 1
    return n


def trailing_extra(pieces: Sequence[str | None]) -> int:
    """How many tokens at the end of a teacher-forced answer are whitespace only.

    A caption is stripped, so such tokens are not its own: the server appended them to the
    prompt (vLLM's PaliGemma ends every prompt with a newline)."""
    n = 0
    for p in reversed(pieces):
        if not _blank(p):
            break
        n += 1
    return n


def word_pieces(text: str, pieces: Sequence[str]) -> list[str] | None:
    """``decoded_token`` pieces of a caption's tokens, repaired so that they spell ``text``.

    vLLM decodes each token in context and sends ``""`` for a token that ends inside a
    character; the character then comes with a later token, except where it never comes
    (U+FFFD: bytes that are not a whole character). The characters of ``text`` that no
    piece carries are given to the last ``""`` token before them. Returns the pieces (same
    length), or None where they cannot be matched to ``text``.
    """
    pieces = list(pieces)
    joined = "".join(pieces)
    if joined.strip() == text.strip():
        return pieces
    lead = joined[: len(joined) - len(joined.lstrip())]
    target = lead + text.strip()
    out = list(pieces)
    pos, pending = 0, -1
    for k, piece in enumerate(pieces):
        if not piece:
            pending = k
            continue
        q = target.find(piece, pos)
        if q < 0:
            return None
        if q > pos:
            if pending >= 0:
                out[pending] = target[pos:q]
            else:
                out[k] = target[pos:q] + piece
        pending = -1
        pos = q + len(piece)
    if pos < len(target):
        if pending < 0:
            return None
        out[pending] = target[pos:]
    return out if "".join(out).strip() == text.strip() else None


def token_difference(
    caption: str, server: Sequence[int], pieces: Sequence[str | None], written: Sequence[int]
) -> str:
    """A one-line message: which of the server's tokens of ``caption`` differ from the ids
    the model ``written`` (both without prompt), and why a text cannot carry them."""
    k = 0
    while k < min(len(server), len(written)) and server[k] == written[k]:
        k += 1

    def show(ids: Sequence[int], texts: Sequence[str | None] | None) -> str:
        items = [f"{i}" + (f" {printable(texts[j], 20)!r}" if texts is not None and texts[j] is not None else "")
                 for j, i in enumerate(ids) if k <= j < k + _SHOW]
        more = len(ids) - k - _SHOW
        return "[" + ", ".join(items) + (f", ... {more} more" if more > 0 else "") + "]"

    if "\ufffd" in caption:
        why = ("the caption holds U+FFFD: the model wrote bytes that are not whole UTF-8 characters, "
               "which no text can carry")
    elif len(written) > len(server) and list(written[: len(server)]) == list(server):
        why = (f"the model's last {len(written) - len(server)} tokens are not in the text (whitespace, "
               "special tokens or an incomplete character at the end)")
    else:
        why = "the text tokenizes differently from how the model wrote it (special tokens, or another split)"
    return (
        f"caption {printable(caption, 80)!r}: the server tokenizes it into {len(server)} tokens, the model "
        f"wrote {len(written)}; from token {k} the server has {show(server, pieces)}, the model wrote "
        f"{show(written, None)}: {why}. Own-head values through the server would be for other tokens than "
        "the model wrote (and than in process); explain it in process (--captioner hf:MODEL), or explain the "
        "caption as text on both paths with --caption TEXT"
    )
