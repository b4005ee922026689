"""Control, bidirectional and invisible characters from captions, tokens and names are
shown as visible escapes (``\\u202e``) on the terminal, in HTML pages and in Markdown, so
text from a model or a file cannot drive the terminal or reorder itself on a page."""

from __future__ import annotations

import pytest

from capshap.metrics.markdown import cell
from capshap.text import printable, visible
from capshap.viz.report import text as html_text

HOSTILE = {
    "ESC": "\x1b", "NUL": "\x00", "BEL": "\x07", "CSI": "\x9b", "RLO": "\u202e", "LRO": "\u202d", "RLE": "\u202b",
    "LRI": "\u2066", "RLI": "\u2067", "FSI": "\u2068", "PDI": "\u2069", "LRM": "\u200e", "RLM": "\u200f",
    "ALM": "\u061c", "ZWSP": "\u200b", "WJ": "\u2060", "BOM": "\ufeff", "LS": "\u2028",
}


@pytest.mark.parametrize("name, ch", list(HOSTILE.items()))
def test_each_hostile_character_is_shown_not_obeyed_everywhere(name, ch):
    caption = f"a cat{ch}tac a"
    shown = ch.encode("unicode_escape").decode("ascii")
    assert shown.startswith("\\") and len(shown) >= 4
    for render in (printable, visible, html_text, cell):
        out = render(caption)
        assert ch not in out and shown.replace("\\", "") in out.replace("\\", ""), (render.__name__, out)


def test_ordinary_text_is_unchanged():
    for s in ("a cat on a mat", "ünïcødé ✓ 猫", "שלום עולם", "emoji 👩‍👩‍👧"):
        assert visible(s) == s and printable(s) == s


def test_summary_page_shows_bidi_in_words_visibly():
    from capshap.summary import summary_html

    word = {"word": "evil\u202eword\x1b", "images": 1, "mean_credit": 0.5, "mean_share_inside": 0.25,
            "mostly_outside": ["x\u2066y.png"], "images_with_regions": 1}  # region columns shown
    page = summary_html({"images": 1, "words": [word]})
    assert "\u202e" not in page and "\x1b" not in page and "\u2066" not in page
    assert "evil\\u202eword\\x1b" in page and "x\\u2066y.png" in page
