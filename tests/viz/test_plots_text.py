"""Captions and tokens are drawn as plain text: no mathtext, no LaTeX, no raw control or
bidi characters, bounded length, and no raw warnings, whatever a model or file says."""

from __future__ import annotations

import logging
import unicodedata
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.text import Text  # noqa: E402

from capshap import FunctionScorer, explain_image  # noqa: E402
from capshap.viz.plots import plot, plot_grid, save_figure  # noqa: E402

HOSTILE = {
    "undefined mathtext command": r"$\undefinedcmd{x}$ a bird",
    "dollar amounts": "it costs $5 ... $10 today",
    "lone dollar and backslashes": r"C:\new\table $ \\ \frac",
    "tex specials": r"50% of #1 & _x_ ^y^ {z} ~w",
    "newlines and tabs": "two\nlines\r\nand\ta\vtab\fform\u2028sep",
    "very long word": "x" * 700,
    "terminal escapes and NUL": "\x1b[31mred\x1b[0m bell\x07 nul\x00 del\x7f",
    "bidi overrides": "\u202eevil\u202c \u2066iso\u2069 \u200fmark",
    "right-to-left scripts": "שלום עולם مرحبا",
    "empty": "",
}

_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


@pytest.fixture(scope="module")
def image():
    y, x = np.mgrid[0:16, 0:20]
    return np.stack([x * 12, y * 15, (x + y) * 7], axis=2).astype(np.uint8)


def _explain(image, caption, tokens, with_captions):
    T = len(tokens)
    W = np.random.default_rng(1).normal(size=(3, T))

    def f(batch):
        return np.tanh(batch.reshape(len(batch), -1, 3).mean(1) / 255.0 @ W)

    exp = explain_image(image, FunctionScorer(f, tokens, caption=caption), max_evals=12, batch_size=8)
    if with_captions:
        exp.captions = [caption] * exp.n_evals
    return exp


def _texts(fig):
    """Every non-empty text of the figure except the colour bar's own numbers."""
    ours = set()
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None:
            ours.update(id(t) for t in ax.findobj(Text))
    return [t for t in fig.findobj(Text) if t.get_text() and id(t) not in ours]


def _assert_plain(fig):
    for t in _texts(fig):
        s = t.get_text()
        assert not t.get_usetex()
        # what the renderer does with the string: (text, is_math); never math
        assert t._preprocess_math(s)[1] is False, s
        bad = [c for c in s if (unicodedata.category(c) == "Cc" and c != "\n") or c in _BIDI]
        assert not bad, (s, bad)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_caption_and_tokens_draw_as_plain_text(name, image, tmp_path):
    s = HOSTILE[name]
    exp = _explain(image, s, [s, "bird", s[:7] or "?"], with_captions=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mathtext error, no raw glyph warning
        for fig, out in ((plot(exp), "p.png"), (plot_grid(exp, 6), "g.png")):
            _assert_plain(fig)
            save_figure(fig, tmp_path / out)
            assert (tmp_path / out).stat().st_size > 1000
            _assert_plain(fig)  # after drawing too


def test_dollars_are_kept_literally(image):
    s = HOSTILE["dollar amounts"]
    fig = plot(_explain(image, s, ["$5", "$10"], with_captions=False))
    drawn = " ".join(t.get_text() for t in _texts(fig))
    assert "$5 ... $10" in drawn and "$10" in drawn


def test_control_characters_are_shown_escaped_not_dropped(image):
    s = HOSTILE["terminal escapes and NUL"]
    fig = plot(_explain(image, s, ["red", "bell"], with_captions=False))
    drawn = " ".join(t.get_text() for t in _texts(fig))
    assert "\\x1b[31mred" in drawn and "\\x07" in drawn and "\\x00" in drawn


def test_long_texts_are_bounded(image):
    long = " ".join(["word"] * 400)
    exp = _explain(image, long, [long, "x" * 300], with_captions=True)
    fig = plot(exp)
    for t in _texts(fig):
        assert t.get_text().count("\n") <= 3, t.get_text()[:80]
        assert max(len(line) for line in t.get_text().split("\n")) <= 200
    grid = plot_grid(exp, 3)
    for t in _texts(grid):
        assert t.get_text().count("\n") <= 4


def test_missing_glyphs_are_logged_not_warned(image, tmp_path, caplog):
    s = "漢字のキャプション"  # not in matplotlib's default font
    fig = plot(_explain(image, s, ["漢字"], with_captions=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="capshap.viz.plots"):
            save_figure(fig, tmp_path / "cjk.png")
    assert (tmp_path / "cjk.png").exists()
    if any("Glyph" in r.getMessage() for r in caplog.records):  # depends on the installed fonts
        assert all(str(tmp_path / "cjk.png") in r.getMessage() for r in caplog.records)
