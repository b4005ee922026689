"""Deletion / insertion curves on the two-squares scorer (see metrics_helpers)."""

import math

import numpy as np
import pytest

from capshap import FunctionScorer
from capshap.metrics import deletion_insertion
from metrics_helpers import Counting, custom_exp, image, scorer


def test_true_attribution_beats_random(exp):
    r = deletion_insertion(exp, scorer(), steps=20, random_orders=5, seed=0)
    assert [t["token"] for t in r["tokens"]] == ["cat", "dog"]
    assert len(r["fractions"]) == 21 and r["fractions"][0] == 0 and r["fractions"][-1] == 1
    for t in r["tokens"]:
        # the square covers 1/16 of the image: removing it first kills the score at once
        assert t["deletion_auc"] < t["random_deletion_auc"] - 3 * t["random_deletion_auc_std"]
        assert t["deletion_auc"] < 0.15
        assert t["insertion_auc"] > t["random_insertion_auc"] + 3 * t["random_insertion_auc_std"]
        assert t["insertion_auc"] > 0.85
        assert t["deletion_beats_random"] and t["insertion_beats_random"]
        assert t["deletion_auc_raw"] < t["random_deletion_auc_raw"]
        assert t["random_deletion_auc_std"] > 0  # the random orders differ
    assert r["summary"]["deletion_beats_random"] == 1.0 and r["summary"]["insertion_beats_random"] == 1.0
    assert r["random_unit"] == "8x8 px blocks"


def test_curves_are_raw_scores_and_normalised(exp):
    counter = Counting()
    r = deletion_insertion(exp, scorer(counter), steps=10, random_orders=2, token="cat")
    (t,) = r["tokens"]
    img = image()
    full = Counting()(img[None])[0, 0]
    empty = Counting()(np.zeros_like(img)[None])[0, 0]
    assert t["full_score"] == pytest.approx(full) and t["empty_score"] == pytest.approx(empty)
    d, i = np.asarray(t["deletion_scores"]), np.asarray(t["insertion_scores"])
    assert d[0] == pytest.approx(full) and d[-1] == pytest.approx(empty)
    assert i[0] == pytest.approx(empty) and i[-1] == pytest.approx(full)
    np.testing.assert_allclose(t["deletion_curve"], (d - empty) / (full - empty))
    np.testing.assert_allclose(t["insertion_curve"][[0, -1]], [0.0, 1.0])
    x = np.asarray(r["fractions"])
    assert t["deletion_auc_raw"] == pytest.approx(np.sum((d[1:] + d[:-1]) / 2 * np.diff(x)))
    # deletion never raises a brightness score (fill is black), so the curve is monotone
    assert np.all(np.diff(d) <= 1e-12)


def test_images_are_shared_batched_and_deterministic():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(64, 64))
    values = np.stack([v, v * 2.0, rng.normal(size=(64, 64))], axis=-1)  # same order for tokens 0 and 1
    exp = custom_exp(values, ["cat", "dog", "cat2"])

    def three(batch):
        s = Counting()(batch)
        return np.concatenate([s, s[:, :1]], axis=1)

    counter = Counting()

    def f(batch):
        counter(batch)
        return three(batch)

    steps, R = 6, 3
    r = deletion_insertion(exp, FunctionScorer(f, exp.tokens), steps=steps, random_orders=R, batch_size=16)
    inner = 2 * (steps - 1)  # masked images per order besides the full and the empty image
    expected = 2 + 2 * inner + R * inner  # tokens 0 and 1 share one order
    assert r["n_images"] == expected == counter.images
    assert r["n_calls"] == counter.calls == math.ceil(expected / 16)
    t0, t2 = r["tokens"][0], r["tokens"][2]  # same score column, same random orders
    assert t0["random_deletion_auc"] == t2["random_deletion_auc"]
    assert t0["deletion_auc"] != t2["deletion_auc"]  # but their own orders differ
    again = deletion_insertion(exp, FunctionScorer(three, exp.tokens), steps=steps, random_orders=R, batch_size=7)
    for a, b in zip(r["tokens"], again["tokens"]):
        for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc_std"):
            assert a[k] == b[k]
    other = deletion_insertion(exp, FunctionScorer(three, exp.tokens), steps=steps, random_orders=R, seed=5)
    assert other["tokens"][0]["random_deletion_auc"] != r["tokens"][0]["random_deletion_auc"]


def test_random_orders_follow_segment_leaves():
    from capshap.regions.segments import from_labels

    labels = (np.arange(64)[:, None] // 16) * 4 + (np.arange(64)[None, :] // 16)  # 16 squares of 16x16
    rng = np.random.default_rng(2)
    exp = custom_exp(rng.normal(size=(64, 64, 2)), ["cat", "dog"])
    exp.tree = from_labels(labels, image=exp.image)
    seen = []

    def f(batch):
        seen.append(batch.copy())
        return Counting()(batch)

    steps = 16  # steps of 1/16: a random order hides whole leaves at every step
    r = deletion_insertion(exp, FunctionScorer(f, exp.tokens), steps=steps, random_orders=2, token="cat")
    assert r["random_unit"] == "tree leaves"
    imgs = np.concatenate(seen)
    assert len(imgs) == r["n_images"]
    hidden = np.all(imgs == 0, axis=-1)  # the fill is black; the image has no black pixel
    per_leaf = np.stack([np.bincount(labels.ravel(), weights=h.ravel(), minlength=16) / 256 for h in hidden])
    whole = np.all((per_leaf == 0) | (per_leaf == 1), axis=1)
    # every image is whole leaves except the attribution order's (per-pixel values)
    assert whole.sum() == r["n_images"] - 2 * (steps - 1)
    # the axis tree instead shuffles 8x8 blocks
    exp.tree = None
    r = deletion_insertion(exp, FunctionScorer(f, exp.tokens), steps=2, random_orders=1)
    assert r["random_unit"] == "8x8 px blocks"


def test_bad_parameters(exp):
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(exp, scorer(), steps=0)
    with pytest.raises(ValueError, match="unknown mask option"):
        deletion_insertion(exp, scorer(), mask="paint")
    bad = FunctionScorer(lambda b: np.zeros((len(b), 3)), ["cat", "dog"])
    with pytest.raises(ValueError, match="one column per token"):
        deletion_insertion(exp, bad, steps=2, random_orders=0)


def _rendered(e):
    """Every image deletion_insertion renders for ``e`` (with one step: the full and the
    fully masked image)."""
    seen = []

    def f(batch):
        seen.append(batch.copy())
        return Counting()(batch)

    deletion_insertion(e, FunctionScorer(f, e.tokens), steps=1, random_orders=0)
    return np.concatenate(seen)


def test_the_fill_comes_from_the_explanation_settings(tmp_path):
    import dataclasses

    from capshap import Explanation
    from capshap.settings import Settings

    e = custom_exp(np.random.default_rng(4).normal(size=(64, 64, 2)), ["cat", "dog"])  # params mask 0 (black)

    def hidden_colours(x):
        imgs = _rendered(x)
        # the image has no pure black, white or red pixel: count pixels of each fill colour
        return {name: int(np.all(imgs == np.array(c, np.uint8), axis=-1).sum())
                for name, c in (("black", (0, 0, 0)), ("white", (255, 255, 255)), ("red", (255, 0, 0)))}

    assert hidden_colours(e)["black"] > 0 and hidden_colours(e)["white"] == 0
    # typed settings win over the params an engine recorded
    white = dataclasses.replace(e, settings=Settings(mask="255", captioner=None))
    got = hidden_colours(white)
    assert got["white"] > 0 and got["black"] == 0
    # a 0.1 file that recorded an (r, g, b) colour keeps it through its legacy settings
    dataclasses.replace(e, params={"mask": [255, 0, 0]}).save(tmp_path / "old")
    old = Explanation.load(tmp_path / "old")
    assert old.settings.mask == "255,0,0"
    got = hidden_colours(old)
    assert got["red"] > 0 and got["black"] == 0
    # a background image is not saved: refused with a clear message
    with pytest.raises(ValueError, match="background image"):
        deletion_insertion(dataclasses.replace(e, settings=Settings(mask="image")), scorer())
