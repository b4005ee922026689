"""Text helpers: caption words, and text made safe for a terminal."""

from __future__ import annotations

import re

__all__ = ["words", "printable", "visible"]

_WORD = re.compile(r"[\w']+", re.UNICODE)
#: C0/C1 controls (ESC, NUL, ...), line/paragraph separators and every bidirectional
#: control (embeddings, overrides, isolates, the LRM/RLM/ALM marks), plus the invisible
#: characters that can hide text (zero-width space, word joiner, BOM, annotation marks).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")


def words(text: str) -> list[str]:
    """Split a caption into lower-case words, dropping punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


def printable(text: object, limit: int | None = None) -> str:
    """``text`` with control characters escaped (``\\x1b`` -> ``\\x1b`` as four visible
    characters), so captions and file names from elsewhere cannot drive the terminal
    (retitle it, clear it, move the cursor) or reorder text with bidi controls. Cut to
    ``limit`` characters (with an ellipsis) when given."""
    s = visible(text)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def visible(text: object) -> str:
    """``text`` with control, bidirectional and invisible characters shown as escapes
    (``\\u202e``), for HTML and Markdown: a caption cannot reorder or hide itself on a
    page. Unlike :func:`printable` it is never cut."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))
