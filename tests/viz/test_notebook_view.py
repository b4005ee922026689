"""How an Explanation shows itself in Jupyter: _repr_html_, show(), summary(), capshap.report."""

from __future__ import annotations

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

import capshap
from capshap import Explanation, FunctionScorer, explain_image
from capshap.settings import Settings
from capshap.viz.notebook import heatmap_rgb, strongest_token
from capshap.viz.plots import POSITIVE_RGB, grey_background, value_scale


def _decode(uri: str) -> np.ndarray:
    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


@pytest.fixture(scope="module")
def exp() -> Explanation:
    """A 40 x 300 image; 'sun' follows the right half strongly, 'sky' weakly, 'nil' never."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(40, 300, 3), dtype=np.uint8)

    def f(b):
        b = b.astype(np.float64) / 255.0
        right = b[:, :, 150:].mean(axis=(1, 2, 3))
        return np.stack([0.5 * right, np.zeros(len(b)), -4.0 * right], axis=1)

    return explain_image(img, FunctionScorer(f, ["sky", "nil", "sun"], caption="sky nil sun"),
                         mask=0, max_evals=20, name="wide.jpg")


def test_strongest_token_is_largest_total(exp):
    totals = np.asarray(exp.outputs) - np.asarray(exp.base_values)
    assert strongest_token(exp) == int(np.argmax(np.abs(totals))) == 2


def test_repr_html_shows_caption_tokens_heatmap_and_parameters(exp):
    frag = exp._repr_html_()
    assert "<script" not in frag and "<style" not in frag
    for tok in exp.tokens:
        assert f">{tok}<br>" in frag
    uris = re.findall(r'<img class="capshap-(photo|heatmap)" alt="[^"]*" src="([^"]+)"', frag)
    assert [k for k, _ in uris] == ["photo", "heatmap"]
    photo, heat = (_decode(u) for _, u in uris)
    assert photo.shape == heat.shape == (34, 256, 3)  # longest side 256, aspect kept
    # the heatmap is of 'sun' (negative credit on the right): blue-ish right, untouched grey left
    assert heat[:, 200:, 2].mean() > heat[:, 200:, 0].mean() + 20
    assert abs(int(heat[:, :100, 0].mean()) - int(heat[:, :100, 2].mean())) < 3
    assert "sun</b> total" in frag
    # explain_image records the settings it ran with; without any, the params are listed
    assert "<code>max_evals</code>" in frag
    bare = Explanation(**{**exp.__dict__, "settings": None})._repr_html_()
    assert ">parameters</summary>" in bare and "<code>max_evals</code>" in bare


def test_repr_html_lists_settings_and_original_size(exp):
    exp2 = Explanation(**{**exp.__dict__, "settings": Settings(max_evals=20, mask="blur(8,8)"),
                          "params": {**exp.params, "original_size": [400, 3000]}})
    frag = exp2._repr_html_()
    assert ">settings</summary>" in frag
    for key, value in Settings(max_evals=20, mask="blur(8,8)").to_dict().items():
        assert f"<code>{key}</code></td><td style=\"text-align:left\"><code>{value}</code>" in frag
    assert "explained at 300x40 px (original 3000x400 px)" in exp2.summary()
    assert "original" not in exp.summary()
    assert exp2.summary().startswith("wide.jpg: 'sky nil sun', explained at")
    assert ">explained at 300x40 px (original 3000x400 px), 3 tokens, 20 evaluations</div>" in frag


def test_heatmap_colours_follow_the_plot_scale(exp):
    t = 2
    rgb = heatmap_rgb(exp, t)
    v = exp.pixel_values()[..., t]
    vmax = value_scale(exp.pixel_values())
    light = np.rint((0.35 * grey_background(exp.image) + 0.6) * 255)
    zero = v == 0
    assert zero.any() and np.all(np.abs(rgb[zero].astype(int) - light[zero][:, None]) <= 1)
    strong = v <= -vmax  # full-strength blue where the credit saturates the scale
    if strong.any():
        assert np.all(rgb[strong][:, 2] >= 228)
    rgb_pos = heatmap_rgb(exp, 0, vmax=1e-12)  # saturate 'sky' (positive)
    pos = exp.pixel_values()[..., 0] > 0
    np.testing.assert_allclose(rgb_pos[pos][0], np.rint(np.array(POSITIVE_RGB) * 255), atol=1)


def test_show_returns_one_token_figure_that_displays(exp):
    from matplotlib.figure import Figure

    fig = exp.show()
    assert isinstance(fig, Figure)
    assert fig.capshap_info["tokens"] == ["sun"] and fig.capshap_info["panels"] == 2
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(png))
    w, h = fig.get_size_inches() * fig.dpi
    assert abs(im.size[0] - w) <= 1 and abs(im.size[1] - h) <= 1
    assert exp.show("sky").capshap_info["tokens"] == ["sky"]
    with pytest.raises(ValueError, match="'moon' is not in the caption"):
        exp.show("moon")


def test_report_is_public_and_displays(exp, tmp_path):
    page = capshap.report([exp], tmp_path / "index.html", title="mine")
    assert "report" in capshap.__all__
    assert page.path.read_text(encoding="utf-8") == page.html
    assert "<title>mine</title>" in page.html
    assert page._repr_html_().startswith("<iframe")


def test_report_shows_original_size_where_recorded(exp):
    with_size = Explanation(**{**exp.__dict__, "params": {**exp.params, "original_size": [400, 3000]}})
    page = capshap.report([with_size, exp]).html
    metas = re.findall(r'<p class="meta">(.*?)</p>', page)
    assert len(metas) == 2
    assert "explained at 300&times;40 px (original 3000&times;400)" in metas[0]
    assert "original" not in metas[1]


def test_captions_with_dollar_signs_are_drawn_literally(exp):
    """'$...$' in a caption or token is text, not matplotlib mathtext (which could fail to parse)."""
    odd = ["$\\frac{$", "b_1^2 $x$"]
    e = Explanation(**{**exp.__dict__, "tokens": odd + ["c"], "caption": "a $\\frac{$ b_1^2 $x$"})
    for fig in (e.show(0), e.plot(), e.plot_grid(3)):
        fig.savefig(io.BytesIO(), format="png")  # mathtext would raise a ParseException here
        ours = [t for t in fig.findobj(matplotlib.text.Text) if "frac{" in t.get_text() or "b_1^2" in t.get_text()]
        assert any("$\\frac{$" in t.get_text() for t in ours)
        assert ours and all(not t.get_parse_math() for t in ours)


def test_plot_and_grid_figures_display_without_the_inline_backend(exp):
    """Figures made without pyplot carry their own PNG for Jupyter's display."""
    for fig in (exp.plot(), exp.plot_grid(4), capshap.plot_grid(exp, 2)):
        png = fig._repr_png_()
        w, h = Image.open(io.BytesIO(png)).size
        want = fig.get_size_inches() * fig.dpi
        assert abs(w - want[0]) <= 1 and abs(h - want[1]) <= 1
