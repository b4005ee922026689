"""The adaptive budget of the Owen engine (``tolerance``): 0 is the fixed budget bit for bit
(and shap's values), a positive tolerance stops on a prefix of the fixed run, words without
credit spend nothing, and the setting reaches the saved explanation and the CLI."""

import numpy as np
import pytest

from capshap.owen import owen_values as owen
from capshap.regions.axis import axis_aligned
from capshap.settings import SettingError, Settings


def _model(n_pixels, T, seed=1):
    """A smooth nonlinear model of visible-pixel vectors, T outputs, no priority ties."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_pixels, T))
    V = rng.normal(size=(n_pixels, T))

    def f(x):
        return np.tanh(x @ W / 10.0) + 0.3 * np.sin(x @ V / 7.0)

    return f


def _evaluate(tree, x, f, zero_columns=0, log=None):
    """Coalitions -> f(masked x), with ``zero_columns`` constant-0 words appended."""

    def evaluate(coalitions):
        if log is not None:
            log.append(list(coalitions))
        batch = np.stack([np.where(tree.visible(c).ravel(), x, 0.0) for c in coalitions])
        out = f(batch)
        return np.hstack([out, np.zeros((len(out), zero_columns))])

    return evaluate


def _setup(H=12, W=10, T=3, seed=0):
    tree = axis_aligned(H, W)
    x = np.random.default_rng(seed).uniform(0, 1, size=H * W)
    return tree, x, _model(H * W, T, seed=seed + 1)


@pytest.mark.parametrize("fixed_context", [None, 0, 1])
@pytest.mark.parametrize("max_evals,batch_size", [(40, 10), (151, 7), (400, 50)])
def test_tolerance_zero_is_the_fixed_budget_bit_for_bit(fixed_context, max_evals, batch_size):
    tree, x, f = _setup()
    kw = dict(max_evals=max_evals, batch_size=batch_size, fixed_context=fixed_context)
    a = owen(tree, _evaluate(tree, x, f), **kw)
    b = owen(tree, _evaluate(tree, x, f), tolerance=0.0, **kw)
    assert a.coalitions == b.coalitions
    np.testing.assert_array_equal(a.nodes, b.nodes)
    np.testing.assert_array_equal(a.node_values, b.node_values)
    assert a.stopped == b.stopped != "tolerance"


def test_tolerance_zero_equals_shap_partition():
    shap = pytest.importorskip("shap")
    H, W, T = 7, 6, 2
    shape = (H, W, 1)
    x = np.random.default_rng(0).uniform(0, 255, size=shape)
    f = _model(H * W, T)
    ref = shap.PartitionExplainer(lambda b: f(np.asarray(b).reshape(len(b), -1)), shap.maskers.Image(np.zeros(shape), shape))(
        x[None], max_evals=151, batch_size=7, silent=True
    )
    tree = axis_aligned(H, W)
    res = owen(tree, _evaluate(tree, x.ravel(), f), max_evals=151, batch_size=7, tolerance=0)
    dense = np.zeros((tree.n_nodes, res.node_values.shape[1]))
    dense[res.nodes] = res.node_values
    vals = tree.lower(dense)
    np.testing.assert_allclose(vals, ref.values[0].reshape(H, W, T), rtol=0, atol=1e-8)


@pytest.mark.parametrize("fixed_context", [None, 0, 1])
@pytest.mark.parametrize("tolerance", [0.01, 0.03, 0.1])
def test_one_split_per_call_stops_on_a_prefix_of_the_fixed_run(fixed_context, tolerance):
    """With one split per call no batch is cut short, so the adaptive run is the fixed run
    cut where the largest priority left first fell below the line: the values are those
    of the fixed budget that ends there, bit for bit."""
    tree, x, f = _setup(H=16, W=16)
    kw = dict(batch_size=2, fixed_context=fixed_context)
    fixed = owen(tree, _evaluate(tree, x, f), max_evals=1000, **kw)
    res = owen(tree, _evaluate(tree, x, f), max_evals=1000, tolerance=tolerance, **kw)
    assert res.stopped == "tolerance"
    assert res.n_evals < fixed.n_evals
    assert res.coalitions == fixed.coalitions[: res.n_evals]
    line = tolerance * np.max(np.abs(res.outputs - res.base_values))
    assert 0 < res.priority_left < line
    cut = owen(tree, _evaluate(tree, x, f), max_evals=res.budget_used, **kw)
    assert cut.coalitions == res.coalitions and cut.stopped == "budget"
    np.testing.assert_array_equal(cut.node_values, res.node_values)
    np.testing.assert_allclose(res.node_values.sum(0), res.outputs - res.base_values, rtol=0, atol=1e-9)


@pytest.mark.parametrize("fixed_context", [None, 0, 1])
@pytest.mark.parametrize("tolerance", [0.01, 0.03, 0.1])
def test_batches_are_cut_at_the_line_and_nothing_above_it_is_left(fixed_context, tolerance):
    """Batched: the calls are the fixed run's until the first one the line cuts short;
    splits queued after that which rise above the line are still expanded, so at the end
    every split left is below the line."""
    tree, x, f = _setup(H=16, W=16)
    kw = dict(batch_size=8, fixed_context=fixed_context)
    fixed_calls, adapt_calls = [], []
    fixed = owen(tree, _evaluate(tree, x, f, log=fixed_calls), max_evals=1000, **kw)
    res = owen(tree, _evaluate(tree, x, f, log=adapt_calls), max_evals=1000, tolerance=tolerance, **kw)
    assert res.stopped == "tolerance"
    assert res.n_evals < fixed.n_evals
    first_cut = next(i for i, (a, b) in enumerate(zip(adapt_calls, fixed_calls)) if a != b)
    assert adapt_calls[:first_cut] == fixed_calls[:first_cut]
    assert adapt_calls[first_cut] == fixed_calls[first_cut][: len(adapt_calls[first_cut])]
    line = tolerance * np.max(np.abs(res.outputs - res.base_values))
    assert 0 < res.priority_left < line
    np.testing.assert_allclose(res.node_values.sum(0), res.outputs - res.base_values, rtol=0, atol=1e-9)


def test_larger_tolerance_never_spends_more_and_cap_holds():
    tree, x, f = _setup(H=16, W=16)
    used = [owen(tree, _evaluate(tree, x, f), max_evals=800, batch_size=10, tolerance=t).n_evals
            for t in (0.0, 0.001, 0.005, 0.02, 0.1, 0.5)]
    assert used == sorted(used, reverse=True)
    assert used[0] == 800 and used[-1] < used[0]
    capped = owen(tree, _evaluate(tree, x, f), max_evals=30, batch_size=10, tolerance=1e-6)
    assert capped.stopped == "budget" and capped.budget_used <= 31


def test_words_without_credit_spend_no_budget():
    """Template words that score a constant change neither what is evaluated nor the values
    of the other words, and get exactly zero credit."""
    tree, x, f = _setup(H=16, W=16, T=2)
    a = owen(tree, _evaluate(tree, x, f), max_evals=1000, batch_size=10, tolerance=0.02)
    b = owen(tree, _evaluate(tree, x, f, zero_columns=4), max_evals=1000, batch_size=10, tolerance=0.02)
    assert a.coalitions == b.coalitions and a.stopped == "tolerance"
    np.testing.assert_array_equal(b.node_values[:, :2], a.node_values)
    assert not b.node_values[:, 2:].any()


def test_image_independent_scores_do_not_stop_early():
    """When no word's total moves (f(image) == f(all masked)) the line is 0: the whole
    budget is spent, as with a fixed budget."""
    tree = axis_aligned(8, 8)
    rng = np.random.default_rng(0)
    w = rng.normal(size=64)
    w -= w.mean()  # a zero-sum model: f(all) == f(none) == 0, other coalitions move

    def f(cs):
        return np.array([[float(w[tree.visible(c).ravel()].sum())] for c in cs])

    a = owen(tree, f, max_evals=60, batch_size=6)
    b = owen(tree, f, max_evals=60, batch_size=6, tolerance=0.5)
    assert b.coalitions == a.coalitions
    np.testing.assert_array_equal(a.node_values, b.node_values)


@pytest.mark.parametrize("tol", [-0.1, 1.0, 2, float("nan"), float("inf"), "0.1", True, None])
def test_bad_tolerance_is_named(tol):
    tree = axis_aligned(4, 4)
    with pytest.raises(ValueError, match="tolerance"):
        owen(tree, lambda cs: np.zeros((len(cs), 1)), tolerance=tol)
    with pytest.raises(SettingError, match="tolerance"):
        Settings(tolerance=tol).validate()


def test_setting_round_trips_and_reaches_the_explanation():
    import capshap

    s = Settings(tolerance=0.02, max_evals=500)
    assert Settings.from_dict(s.to_dict()) == s.validate()
    assert Settings.from_dict({k: v for k, v in s.to_dict().items() if k != "tolerance"}).tolerance == 0.0
    img = np.zeros((24, 24, 3), np.uint8)
    img[3:9, 14:20] = 255

    def scorer(caption):
        return capshap.FunctionScorer(lambda b: b.reshape(len(b), -1).mean(1, keepdims=True) / 255.0, ["white"], caption=caption)

    fixed, adaptive = (
        capshap.explain([img], captioner=lambda im: "white", scorer=scorer, max_evals=400, batch_size=10,
                        mask="0", tolerance=t)[0]
        for t in (0.0, 0.02)
    )
    assert adaptive.settings.tolerance == 0.02 and adaptive.params["tolerance"] == 0.02
    assert adaptive.info["stopped"] == "tolerance" and fixed.info["stopped"] == "budget"
    assert adaptive.n_evals < fixed.n_evals
    np.testing.assert_allclose(adaptive.values.sum(axis=(0, 1)), fixed.values.sum(axis=(0, 1)), rtol=1e-5)


def test_cli_option():
    from capshap.cli import build_parser
    from capshap.cli.explain import settings_from_args

    args = build_parser().parse_args(["explain", "x.jpg", "--tolerance", "0.02", "--max-evals", "600"])
    s = settings_from_args(args)
    assert (s.tolerance, s.max_evals) == (0.02, 600)
    assert settings_from_args(build_parser().parse_args(["explain", "x.jpg"])).tolerance == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["explain", "x.jpg", "--tolerance", "-1"])
