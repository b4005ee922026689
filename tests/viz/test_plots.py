"""Plots, the masked-image grid, top regions, the JSON extras and the HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

import capshap
from capshap import Explanation, FunctionScorer, explain_image
from capshap.viz.plots import (
    grey_background,
    overlay_rgba,
    plot,
    plot_grid,
    save_figure,
    segment_boundaries,
    value_scale,
)
from capshap.viz.report import Report
from capshap.regions.segments import from_labels

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def wide() -> np.ndarray:
    """A non-square photo, 30 x 72 (H x W)."""
    return np.asarray(Image.open(EXAMPLES / "3.jpg").convert("RGB").resize((72, 30))).copy()


def _box_scorer(y0: int, y1: int, x0: int, x1: int) -> FunctionScorer:
    """Token 'obj' = mean brightness inside a box; 'dark' = minus the mean outside; 'the' = 0."""

    def f(batch: np.ndarray) -> np.ndarray:
        b = batch.astype(np.float64) / 255.0
        inside = b[:, y0:y1, x0:x1].mean(axis=(1, 2, 3))
        total = b.mean(axis=(1, 2, 3))
        return np.stack([np.zeros(len(b)), 5 * inside, -total], axis=1)

    return FunctionScorer(f, ["the", "obj", "dark"], caption="the obj dark")


@pytest.fixture(scope="module")
def wide_exp(wide) -> Explanation:
    return explain_image(wide, _box_scorer(5, 20, 40, 64), mask=0, max_evals=200, batch_size=32, name="wide")


def test_plot_panels_extent_and_aspect(wide_exp):
    fig = plot(wide_exp, all_words=True)  # 'the' has no credit: drawn only on request
    H, W = wide_exp.image.shape[:2]
    T = len(wide_exp.tokens)
    assert fig.capshap_info["panels"] == 1 + T
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 1 + T + 0  # image + tokens (the colorbar axes holds no AxesImage)
    fw, fh = fig.get_size_inches()
    for ax in panels:
        for im in ax.images:
            assert tuple(im.get_extent()) == (0, W, H, 0)  # the heatmap sits on the pixels
        pos = ax.get_position()
        ratio = (pos.width * fw) / (pos.height * fh)
        assert ratio == pytest.approx(W / H, rel=1e-6)  # the panel keeps the image's aspect
    # one symmetric scale shared by all tokens, from the values' 99.5th percentile
    v = value_scale(wide_exp.pixel_values())
    for ax in panels[1:]:
        assert ax.images[1].get_clim() == pytest.approx((-v, v))
    assert v == pytest.approx(np.percentile(np.abs(wide_exp.pixel_values()), 99.5))
    titles = [ax.get_title().strip() for ax in panels[1:]]
    assert titles == wide_exp.tokens


def test_plot_token_subset_and_bad_token(wide_exp):
    fig = wide_exp.plot(["obj"])
    assert fig.capshap_info["panels"] == 2 and fig.capshap_info["tokens"] == ["obj"]
    with pytest.raises(ValueError, match="'cat' is not in the caption"):
        plot(wide_exp, ["cat"])


def test_grey_background_ignores_value_range(wide):
    g8 = grey_background(wide)
    assert g8.min() == pytest.approx(0.0) and g8.max() == pytest.approx(1.0)
    np.testing.assert_allclose(grey_background(wide / 255.0), g8, atol=1e-12)
    np.testing.assert_allclose(grey_background(wide.astype(np.float64) * 257 - 1000), g8, atol=1e-12)
    assert np.all(grey_background(np.full((4, 5, 3), 7.0)) == 0.5)


def test_plot_float_image_looks_like_uint8(wide_exp):
    """shap #703: a float image (0..1) must give the same picture as its uint8 twin."""
    from dataclasses import replace

    as_float = replace(wide_exp, image=wide_exp.image / 255.0)
    a = plot(wide_exp, title=False)
    b = plot(as_float, title=False)
    for ax_a, ax_b in zip(a.axes, b.axes):
        for ia, ib in zip(ax_a.images, ax_b.images):
            np.testing.assert_allclose(np.asarray(ia.get_array(), dtype=float), np.asarray(ib.get_array(), dtype=float), atol=1e-9)


def test_overlay_colours():
    rgba = overlay_rgba(np.array([[-2.0, 0.0, 1.0, 5.0]]), vmax=2.0)
    neg, zero, half, pos = rgba[0]
    assert zero[3] == 0
    assert neg[2] > neg[0] and neg[3] == 255  # blue, opaque at -vmax
    assert pos[0] > pos[2] and pos[3] == 255  # red, clipped at +vmax
    assert 120 <= half[3] <= 135 and half[0] == pos[0]


def test_save_figure_metadata(tmp_path, wide_exp):
    path = tmp_path / "w.png"
    save_figure(plot(wide_exp, all_words=True), path)
    with Image.open(path) as im:
        assert im.text["capshap:panels"] == str(1 + len(wide_exp.tokens))
        assert json.loads(im.text["capshap:tokens"]) == wide_exp.tokens
        w, h = im.size
    assert w > h  # a wide image gives a wide figure


def test_segment_outlines(wide):
    labels = np.zeros(wide.shape[:2], dtype=np.int64)
    labels[:, 36:] = 1
    labels[15:, :20] = 2
    tree = from_labels(labels, image=wide)
    b = segment_boundaries(tree)
    assert b.shape == labels.shape
    assert b[:, 35].all() and not b[:, 36:].any()  # one line left of the column split
    assert b[14, :20].all()
    exp = explain_image(wide, _box_scorer(5, 20, 40, 64), mask=0, max_evals=20, tree=tree)
    n_layers = [len(ax.images) for ax in plot(exp).axes if ax.images]
    assert n_layers[0] == 2 and all(n == 3 for n in n_layers[1:])  # outline layer drawn
    assert [len(ax.images) for ax in plot(exp, outline=False).axes if ax.images][1] == 2
    axis = explain_image(wide, _box_scorer(5, 20, 40, 64), mask=0, max_evals=20)
    assert segment_boundaries(axis.tree) is None


def test_plot_grid_limit_and_titles(wide_exp):
    fig = plot_grid(wide_exp, 7)
    assert fig.capshap_info["panels"] == 7
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("all masked") and titles[1].startswith("full image")
    # own-head style scorer: no captions, so the varying tokens' scores are shown
    assert "obj" in titles[2] and "the " not in titles[2]
    every = capshap.plot_grid(wide_exp, limit="all")
    assert every.capshap_info["panels"] == wide_exp.n_evals
    with pytest.raises(ValueError, match="limit"):
        plot_grid(wide_exp, 0)


def test_plot_grid_shows_captions(wide):
    from capshap import PresenceFactory

    def cap(img):
        return "a bright thing" if img.mean() > 90 else "darkness"

    sc = PresenceFactory(cap).bind("a bright thing")
    exp = explain_image(wide, sc, mask=0, max_evals=12, batch_size=4)
    assert exp.captions is not None
    fig = plot_grid(exp, 4)
    for ax, c in zip(fig.axes, exp.captions[:4]):
        assert c in ax.get_title().replace("\n", " ")


def test_top_regions_find_the_object(wide_exp):
    regions = wide_exp.top_regions(3)
    assert len(regions) == 3 and regions[0] == []  # 'the' never changes
    best = regions[1][0]
    x0, y0, x1, y1 = best["box"]
    # the object's box is rows 5..20, columns 40..64: the best region overlaps it
    assert x0 < 64 and x1 > 40 and y0 < 20 and y1 > 5
    credits = [r["credit"] for r in regions[1]]
    assert credits == sorted(credits, reverse=True) and credits[0] > 0
    assert 0 < sum(r["share"] for r in regions[1]) <= 1 + 1e-9
    # greedy choice never returns overlapping regions
    spans = [wide_exp.tree.span[r["node"]] for r in regions[1]]
    for i in range(len(spans)):
        for j in range(i + 1, len(spans)):
            assert spans[i][1] <= spans[j][0] or spans[j][1] <= spans[i][0]


def test_save_has_top_regions_versions_and_rebuilds_axis_tree(tmp_path, wide_exp):
    npz, js = wide_exp.save(tmp_path / "wide")
    meta = json.loads(js.read_text())
    assert meta["versions"]["capshap"] == capshap.__version__ and "numpy" in meta["versions"]
    assert len(meta["top_regions"]) == len(wide_exp.tokens)
    assert meta["top_regions"][1][0]["node"] == wide_exp.top_regions()[1][0]["node"]
    with np.load(npz) as z:
        assert "tree_linkage" not in z.files  # the axis tree is rebuilt, not stored
    back = Explanation.load(npz)
    for f in ("linkage", "leaf_index", "rects", "span"):
        np.testing.assert_array_equal(getattr(back.tree, f), getattr(wide_exp.tree, f))
    assert back.top_regions() == wide_exp.top_regions()


def test_report_entries_and_self_contained(wide_exp, wide):
    labels = np.zeros(wide.shape[:2], dtype=np.int64)
    labels[:, 36:] = 1
    seg = explain_image(wide, _box_scorer(5, 20, 40, 64), mask=0, max_evals=20,
                        tree=from_labels(labels, image=wide), name="seg <b>")
    rep = Report("run")
    rep.add(wide_exp, links={"PNG": "wide.png"})
    rep.add(seg)
    rep.add_failure("bad.jpg", "not a readable image")
    page = rep.html()
    assert len(re.findall(r'<section class="item"', page)) == 2
    assert len(re.findall(r'<button class="tok"', page)) == len(wide_exp.tokens) + len(seg.tokens)
    # 'the' has no attribution: a button, but no overlay; the others get one each
    assert len(re.findall(r'<img class="overlay"', page)) == 2 + 2
    assert page.count('<img class="outline"') == 1
    assert 'id="opacity"' in page and 'type="range"' in page
    assert "seg &lt;b&gt;" in page and "seg <b>" not in page  # names are escaped
    assert "bad.jpg" in page and 'class="failure"' in page
    # nothing is fetched from the network
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
