"""The Owen engine: equality with shap's PartitionExplainer, efficiency, no repeats, bad input."""

import numpy as np
import pytest
import shap  # in [test]: without it these tests fail, they do not skip

from capshap.owen import owen_values as owen
from capshap.regions.axis import axis_aligned


def _model(shape, T, seed=1):
    """A smooth nonlinear model of a masked image with T outputs and no priority ties."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(int(np.prod(shape)), T))
    V = rng.normal(size=(int(np.prod(shape)), T))

    def f(x):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return np.tanh(x @ W / 10.0) + 0.3 * np.sin(x @ V / 7.0)

    return f


def _image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape)


def _ours(tree, f, x, background, **kw):
    def evaluate(coalitions):
        batch = []
        for c in coalitions:
            vis = tree.visible(c)
            if vis.ndim < x.ndim:
                vis = vis[..., None]
            batch.append(np.where(vis, x, background))
        return f(np.stack(batch))

    return owen(tree, evaluate, **kw)


@pytest.mark.parametrize("channels", [True, False])
@pytest.mark.parametrize("fixed_context", [None, 0, 1])
@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("max_evals,batch_size", [(40, 10), (151, 7), (600, 50)])
def test_equals_shap_partition(channels, fixed_context, T, max_evals, batch_size):
    H, W = 7, 6
    shape = (H, W, 3) if channels else (H, W, 1)
    x = _image(shape)
    background = np.zeros(shape)
    f = _model(shape, T)
    masker = shap.maskers.Image(background.copy(), shape)
    explainer = shap.PartitionExplainer(f, masker)
    ref = explainer(x[None], max_evals=max_evals, batch_size=batch_size, fixed_context=fixed_context, silent=True)
    ref_vals = ref.values[0].reshape(shape + (T,)) if T > 1 else ref.values[0].reshape(shape + (1,))

    tree = axis_aligned(H, W, channels=channels)
    res = _ours(tree, f, x, background, max_evals=max_evals, batch_size=batch_size, fixed_context=fixed_context)
    dense = np.zeros((tree.n_nodes, res.node_values.shape[1]))
    dense[res.nodes] = res.node_values
    vals = tree.lower(dense)
    if not channels:
        vals = vals[:, :, None, :]
    np.testing.assert_allclose(vals, ref_vals, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.base_values, np.atleast_1d(ref.base_values[0]), atol=1e-12)
    # efficiency: credit sums to f(image) - f(all masked)
    np.testing.assert_allclose(res.node_values.sum(0), res.outputs - res.base_values, rtol=0, atol=1e-9)
    np.testing.assert_allclose(vals.sum(axis=(0, 1, 2)), res.outputs - res.base_values, rtol=0, atol=1e-9)


def test_first_call_holds_full_and_empty_and_no_repeats():
    H, W = 16, 16
    tree = axis_aligned(H, W)
    x = _image((H, W, 1))
    f = _model((H, W, 1), 3)
    calls = []

    def evaluate(coalitions):
        calls.append(list(coalitions))
        return f(np.stack([np.where(tree.visible(c)[..., None], x, 0.0) for c in coalitions]))

    res = owen(tree, evaluate, max_evals=300, batch_size=50)
    assert calls[0][:2] == [(), (tree.root,)]
    assert len(calls[0]) == 4  # the root's split rides along in the same call
    flat = [c for call in calls for c in call]
    assert len(flat) == len(set(flat)) == res.n_evals
    assert all(len(call) <= 52 for call in calls)
    # as pixel sets, too: no two evaluated coalitions give the same mask
    masks = {tree.visible(c).tobytes() for c in flat}
    assert len(masks) == len(flat)
    assert res.budget_used <= 301


def test_memory_grows_with_nodes_not_pixels():
    tree = axis_aligned(200, 200)
    res = owen(tree, lambda cs: np.array([[len(c) + 0.01 * sum(c)] for c in cs], float), max_evals=200, batch_size=20)
    # coalitions are short tuples of node ids, never pixel masks
    assert max(len(c) for c in res.coalitions) <= 2 * np.ceil(np.log2(tree.n_leaves))
    assert res.node_values.shape[0] < 3 * 200


def test_deterministic_and_seeded_ties():
    tree = axis_aligned(8, 8)
    # a model with many ties: counts visible nodes
    f = lambda cs: np.array([[float(tree.visible(c).sum())] for c in cs])  # noqa: E731
    a = owen(tree, f, max_evals=60, batch_size=8, seed=3)
    b = owen(tree, f, max_evals=60, batch_size=8, seed=3)
    assert a.coalitions == b.coalitions
    np.testing.assert_array_equal(a.node_values, b.node_values)
    state = np.random.get_state()[1].copy()
    owen(tree, f, max_evals=60, batch_size=8, seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"max_evals": 2}, "max_evals"),
        ({"max_evals": 2.5}, "max_evals"),
        ({"batch_size": 0}, "batch_size"),
        ({"fixed_context": 2}, "fixed_context"),
        ({"fixed_context": "auto"}, "fixed_context"),
    ],
)
def test_bad_parameters(kw, msg):
    tree = axis_aligned(4, 4)
    with pytest.raises(ValueError, match=msg):
        owen(tree, lambda cs: np.zeros((len(cs), 1)), **kw)


def test_wrong_shape_and_nonfinite_scores():
    tree = axis_aligned(4, 4)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        owen(tree, lambda cs: np.zeros((3, 2)), max_evals=10)
    T = {"n": 2}

    def changing(cs):
        out = np.zeros((len(cs), T["n"]))
        T["n"] = 3
        return out

    with pytest.raises(ValueError, match="shape"):
        owen(tree, changing, max_evals=20, batch_size=2)
    with pytest.raises(ValueError, match="nan"):
        owen(tree, lambda cs: np.full((len(cs), 1), np.nan), max_evals=10)
    with pytest.raises(ValueError, match="inf"):
        owen(tree, lambda cs: np.array([[np.inf] if len(c) else [0.0] for c in cs]), max_evals=10)
