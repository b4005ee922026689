"""explain_image end to end on a cheap scorer; Explanation save/load and to_shap."""

from pathlib import Path

import numpy as np
import pytest

from capshap import Explanation, FunctionScorer, explain_image


@pytest.fixture(scope="module")
def photo():
    from PIL import Image

    return np.asarray(Image.open(Path(__file__).resolve().parents[1] / "examples" / "2.jpg").convert("RGB").resize((48, 40))).copy()


def _scorer():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 3))

    def f(batch):
        m = batch.reshape(len(batch), -1, 3).mean(1) / 255.0
        return np.tanh(m @ W)

    return FunctionScorer(f, ["a", "bird", "wire"], caption="a bird wire")


@pytest.mark.parametrize("mask", ["inpaint_ns", "blur(8,8)", 0])
def test_efficiency_and_shapes(photo, mask):
    exp = explain_image(photo, _scorer(), mask=mask, max_evals=120, batch_size=16)
    assert exp.values.shape == (40, 48, 3) and exp.values.dtype == np.float32
    gap = exp.outputs - exp.base_values
    np.testing.assert_allclose(exp.node_values.sum(0), gap, atol=1e-9)
    np.testing.assert_allclose(exp.values.astype(np.float64).sum((0, 1)), gap, atol=1e-4)
    assert exp.n_evals <= 121 and len(exp.scores) == exp.n_evals
    assert exp.captions is None
    assert exp.coalitions[:2] == [(), (exp.tree.root,)]


def test_channel_mode_values(photo):
    exp = explain_image(photo, _scorer(), mask="blur(8,8)", max_evals=60, channels=True)
    assert exp.values.shape == (40, 48, 3, 3)
    assert exp.pixel_values().shape == (40, 48, 3)


def test_save_load_round_trip(photo, tmp_path):
    exp = explain_image(photo, _scorer(), max_evals=50, batch_size=8, name="bird")
    npz, js = exp.save(tmp_path / "bird")
    assert npz.exists() and js.exists()
    back = Explanation.load(tmp_path / "bird.npz")
    for f in ("values", "base_values", "outputs", "image", "nodes", "node_values", "scores"):
        np.testing.assert_array_equal(getattr(back, f), getattr(exp, f))
    assert back.tokens == exp.tokens and back.caption == exp.caption and back.name == "bird"
    assert back.coalitions == exp.coalitions
    assert back.params == exp.params
    np.testing.assert_array_equal(back.tree.linkage, exp.tree.linkage)
    np.testing.assert_array_equal(back.tree.leaf_index, exp.tree.leaf_index)
    # no pickle anywhere: numpy refuses object arrays when allow_pickle=False
    with np.load(npz, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_load_missing_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        Explanation.load(tmp_path / "nothing")


def test_to_shap(photo):
    shap = pytest.importorskip("shap")
    exp = explain_image(photo, _scorer(), max_evals=30)
    s = exp.to_shap()
    assert isinstance(s, shap.Explanation)
    assert s.values.shape == (1, 40, 48, 3, 3)
    np.testing.assert_allclose(s.values.sum((1, 2, 3))[0], exp.values.astype(np.float64).sum((0, 1)), rtol=1e-9)
    import matplotlib

    matplotlib.use("Agg")
    shap.image_plot(s, show=False)  # shap's own plot accepts it


def test_scorer_with_wrong_token_count(photo):
    bad = FunctionScorer(lambda b: np.zeros((len(b), 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 tokens"):
        explain_image(photo, bad, max_evals=10)
