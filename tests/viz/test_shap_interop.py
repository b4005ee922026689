"""Explanation.to_shap(): shap's own image plots show the original image, names index."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from capshap import FunctionScorer, explain_image

shap = pytest.importorskip("shap")


@pytest.fixture(scope="module")
def dark_exp():
    """A dark gradient (values 20..120): float 0-255 data would be clipped to white."""
    H, W = 30, 40
    ramp = np.linspace(20, 120, W)
    img = np.repeat(np.repeat(ramp[None, :, None], H, axis=0), 3, axis=2).astype(np.uint8)

    def f(batch):
        b = batch.astype(np.float64) / 255.0
        return np.stack([b[:, :, : W // 2].mean(axis=(1, 2, 3)), b[:, :, W // 2 :].mean(axis=(1, 2, 3))], axis=1)

    return explain_image(img, FunctionScorer(f, ["a bird", "sky"], caption="a bird sky"), mask=0, max_evals=24)


def _panel_pixels(fig, ax) -> np.ndarray:
    """(h, w, 3) float in [0, 1]: what Agg drew inside ``ax`` (a 3-pixel border trimmed)."""
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64) / 255.0
    x0, y0, x1, y1 = ax.get_window_extent().extents
    Hf = buf.shape[0]
    r0, r1 = int(np.ceil(Hf - y1)) + 3, int(np.floor(Hf - y0)) - 3
    c0, c1 = int(np.ceil(x0)) + 3, int(np.floor(x1)) - 3
    return buf[r0:r1, c0:c1]


@pytest.mark.parametrize("plotter", ["image_plot", "plots.image"])
def test_shap_draws_the_original_image(dark_exp, plotter):
    import matplotlib.pyplot as plt

    s = dark_exp.to_shap()
    assert s.data.min() >= 0 and s.data.max() <= 1
    np.testing.assert_allclose(s.data[0] * 255.0, dark_exp.image, atol=1e-9)
    fn = shap.image_plot if plotter == "image_plot" else shap.plots.image
    plt.close("all")
    fn(s, show=False)
    fig = plt.gcf()
    try:
        first = fig.axes[0]
        px = _panel_pixels(fig, first)
        grey = px.mean(axis=2)
        # not blank: the panel has the image's brightness and its left-to-right ramp
        expected = dark_exp.image.astype(np.float64).mean() / 255.0
        assert abs(grey.mean() - expected) < 0.06, (grey.mean(), expected)
        cols = grey.mean(axis=0)
        assert cols[-1] - cols[0] > 0.25
        assert np.corrcoef(np.arange(cols.size), cols)[0, 1] > 0.95
    finally:
        plt.close(fig)


def test_output_names_index_tokens(dark_exp):
    s = dark_exp.to_shap()
    assert list(s.output_names) == dark_exp.tokens
    for k, name in enumerate(dark_exp.tokens):
        want = s.values[..., k]
        np.testing.assert_array_equal(s[..., name].values, want)
        np.testing.assert_array_equal(s[0, ..., name].values, want[0])
        np.testing.assert_array_equal(s[:, :, :, :, name].values, want)
    # sums are kept through the channel split
    np.testing.assert_allclose(s[0, ..., "sky"].values.sum(), dark_exp.values[..., 1].astype(np.float64).sum(), rtol=1e-9)
    with pytest.raises(IndexError):
        s[..., 0, 0, 0, 0, 0, 0]
