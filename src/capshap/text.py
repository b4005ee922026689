"""Text helpers: caption words, and text made safe for a terminal."""

from __future__ import annotations

import re

__all__ = ["words", "printable"]

_WORD = re.compile(r"[\w']+", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def words(text: str) -> list[str]:
    """Split a caption into lower-case words, dropping punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


def printable(text: object, limit: int | None = None) -> str:
    """``text`` with control characters escaped (``\\x1b`` -> ``\\x1b`` as four visible
    characters), so captions and file names from elsewhere cannot drive the terminal
    (retitle it, clear it, move the cursor) or reorder text with bidi controls. Cut to
    ``limit`` characters (with an ellipsis) when given."""
    s = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s
