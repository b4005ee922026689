"""Faithfulness metrics on a synthetic scorer with a known answer.

The image is 64x64 with two bright squares. Token "cat" scores the mean brightness of the
square CAT (rows/cols 8:24), token "dog" the mean brightness of the square DOG (rows/cols
40:56); nothing else matters. So the true attribution of "cat" lies inside CAT only.
"""

import json
import logging
import math

import numpy as np
import pytest

from capshap import Explanation, FunctionScorer, explain_image
from capshap.metrics import (
    deletion_insertion,
    evaluate_run,
    load_boxes,
    pointing_game,
    scale_boxes,
)

CAT = (8, 24)  # rows and cols [8, 24)
DOG = (40, 56)
CAT_BOX = [8, 8, 24, 24]  # x0, y0, x1, y1
DOG_BOX = [40, 40, 56, 56]


def _image():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 110, size=(64, 64, 3), dtype=np.uint8)
    img[CAT[0] : CAT[1], CAT[0] : CAT[1]] = 230
    img[DOG[0] : DOG[1], DOG[0] : DOG[1]] = 190
    return img


class Counting:
    """The square-brightness scorer, counting calls and images."""

    def __init__(self):
        self.calls = 0
        self.images = 0

    def __call__(self, batch):
        self.calls += 1
        self.images += len(batch)
        b = batch.astype(np.float64) / 255.0
        k = 64 // batch.shape[1]  # the squares scale with the image (64 px or 32 px)
        a, z = CAT[0] // k, CAT[1] // k
        c, d = DOG[0] // k, DOG[1] // k
        return np.stack([b[:, a:z, a:z].mean((1, 2, 3)), b[:, c:d, c:d].mean((1, 2, 3))], axis=1)


def _scorer(counter=None):
    return FunctionScorer(counter or Counting(), ["cat", "dog"], caption="cat dog")


@pytest.fixture(scope="module")
def exp():
    # fixed_context=0 reaches the 16x16 squares within 100 evaluations (exact Owen values,
    # fixed_context=None, stop at the 32x32 quadrants at this budget)
    return explain_image(
        _image(), _scorer(), mask=0, max_evals=100, batch_size=50, fixed_context=0, tree="axis", name="pets.jpg"
    )


def test_true_attribution_beats_random(exp):
    r = deletion_insertion(exp, _scorer(), steps=20, random_orders=5, seed=0)
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
    r = deletion_insertion(exp, _scorer(counter), steps=10, random_orders=2, token="cat")
    (t,) = r["tokens"]
    img = _image()
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


def test_pointing_game_hits_the_square_and_misses_elsewhere(exp):
    pg = pointing_game(exp, [CAT_BOX], token="cat")
    assert pg["hit"] and pg["distance"] == 0
    assert pg["energy_share"] > 0.8 and pg["box_fraction"] == pytest.approx(16 * 16 / 64**2)
    x, y = pg["point"]
    assert CAT[0] <= x <= CAT[1] and CAT[0] <= y <= CAT[1]
    miss = pointing_game(exp, [DOG_BOX], token="cat")
    assert not miss["hit"] and miss["distance"] > 15
    assert miss["energy_share"] < 0.2
    # a generous tolerance turns the miss into a hit
    assert pointing_game(exp, [DOG_BOX], token="cat", tolerance=miss["distance"] + 1)["hit"]
    # dog points at its own square; default token = largest positive attribution (the brighter cat)
    assert pointing_game(exp, [DOG_BOX], token=1)["hit"]
    assert pointing_game(exp, [CAT_BOX])["token"] == "cat"


def test_pointing_game_bad_input(exp):
    with pytest.raises(ValueError, match="box 0"):
        pointing_game(exp, [[1, 2, 3]])
    with pytest.raises(ValueError, match="empty"):
        pointing_game(exp, [[10, 10, 5, 20]])
    with pytest.raises(ValueError, match="not in the caption"):
        pointing_game(exp, [CAT_BOX], token="bird")


def _custom_exp(values, tokens):
    img = _image()
    return Explanation(
        values=values.astype(np.float32),
        base_values=np.zeros(len(tokens)),
        outputs=np.zeros(len(tokens)),
        tokens=tokens,
        caption=" ".join(tokens),
        image=img,
        params={"mask": 0},
        name="custom",
    )


def test_pointing_ties_and_energy_share_exact():
    v = np.zeros((64, 64, 2))
    v[0:40, 0:40, 0] = 2.0  # a flat top region: the point is its most central pixel
    v[60:64, 60:64, 0] = 1.0
    v[50:60, 0:10, 0] = -7.0  # negative attribution does not count as energy
    v[..., 1] = -1.0  # no positive attribution at all
    exp = _custom_exp(v, ["cat", "dog"])
    pg = pointing_game(exp, [[18, 18, 22, 22]], token="cat", tolerance=0)
    assert pg["hit"] and pg["point"] == [19.5, 19.5]
    assert not pointing_game(exp, [[0, 45, 5, 50]], token="cat", tolerance=0)["hit"]
    total = 2.0 * 1600 + 16
    share = pointing_game(exp, [[0, 0, 20, 40], [56, 56, 64, 64]], token="cat")["energy_share"]
    assert share == pytest.approx((2.0 * 800 + 16) / total)
    assert math.isnan(pointing_game(exp, [[0, 0, 8, 8]], token="dog")["energy_share"])
    assert pointing_game(exp, [[0, 0, 8, 8]])["token"] == "cat"


def test_images_are_shared_batched_and_deterministic():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(64, 64))
    values = np.stack([v, v * 2.0, rng.normal(size=(64, 64))], axis=-1)  # same order for tokens 0 and 1
    exp = _custom_exp(values, ["cat", "dog", "cat2"])

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
    exp = _custom_exp(rng.normal(size=(64, 64, 2)), ["cat", "dog"])
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


def test_constant_token_gives_nan_normalised_areas_and_null_json(exp, tmp_path):
    def f(batch):
        s = Counting()(batch)
        return np.stack([s[:, 0], np.full(len(batch), 0.5)], axis=1)  # "dog" ignores the image

    sc = FunctionScorer(f, ["cat", "dog"])
    r = deletion_insertion(exp, sc, steps=4, random_orders=2)
    dog = r["tokens"][1]
    assert math.isnan(dog["deletion_auc"]) and math.isnan(dog["random_insertion_auc"])
    assert dog["deletion_auc_raw"] == pytest.approx(0.5) and dog["deletion_beats_random"] is None
    assert r["summary"]["deletion_beats_random"] == 1.0  # over the tokens that can be compared
    exp.save(tmp_path / "run" / "pets")
    res = evaluate_run(tmp_path / "run", scorer_factory=sc, steps=4, random_orders=2)
    text = (tmp_path / "run" / "metrics.json").read_text(encoding="utf-8")
    assert "NaN" not in text and json.loads(text)["rows"][1]["deletion_auc"] is None
    assert res["rows"][1]["deletion_auc"] is None
    # the run's summary counts only tokens that can be compared with random orders
    assert res["rows"][1]["deletion_beats_random"] is None
    assert res["summary"]["deletion_beats_random"] == 1.0
    assert "| pets.jpg | dog | – (– ± –) |" in (tmp_path / "run" / "metrics.md").read_text(encoding="utf-8")


def test_bad_parameters(exp):
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(exp, _scorer(), steps=0)
    with pytest.raises(ValueError, match="unknown mask option"):
        deletion_insertion(exp, _scorer(), mask="paint")
    bad = FunctionScorer(lambda b: np.zeros((len(b), 3)), ["cat", "dog"])
    with pytest.raises(ValueError, match="one column per token"):
        deletion_insertion(exp, bad, steps=2, random_orders=0)


def test_scale_boxes():
    assert scale_boxes([[10, 20, 30, 40]], (200, 100), (100, 50)) == [[5.0, 10.0, 15.0, 20.0]]
    assert scale_boxes([[0, 0, 100, 50]], (50, 100), (25, 200)) == [[0.0, 0.0, 200.0, 25.0]]
    with pytest.raises(ValueError, match="positive"):
        scale_boxes([[0, 0, 1, 1]], (0, 10), (10, 10))


def test_load_boxes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_boxes(tmp_path / "nope.json")
    p = tmp_path / "bad.json"
    p.write_text('{"a": [[1, 2, 3, 4]],', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON"):
        load_boxes(p)
    p.write_text('[[1, 2, 3, 4]]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*expected an object"):
        load_boxes(p)
    p.write_text('{"ok": [[1, 2, 3, 4]], "cat.jpg": [[1, 2, 3, 4], [5, "x", 7, 8]]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json, entry 'cat\.jpg'.*box 1"):
        load_boxes(p)
    p.write_text('{"cat": [1, 2, 30, 40], "dog": [[0, 0, 5, 5], [1, 1, 2, 2]]}', encoding="utf-8")
    assert load_boxes(p) == {"cat": [[1.0, 2.0, 30.0, 40.0]], "dog": [[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 2.0, 2.0]]}


def test_evaluate_run(exp, tmp_path, caplog):
    run = tmp_path / "run"
    exp.save(run / "pets")
    half = _image()[::2, ::2].copy()
    small = explain_image(half, _scorer(), mask=0, max_evals=100, fixed_context=0, name="small.png")
    small.params["original_size"] = [64, 64]  # boxes are given on the 64x64 original
    small.save(run / "small")
    (run / "notes.json").write_text("{}", encoding="utf-8")
    np.savez(run / "stray.npz", a=np.zeros(2))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"pets.jpg": [CAT_BOX], "small": [CAT_BOX], "ghost": [[0, 0, 1, 1]]}), encoding="utf-8")
    made = []

    def factory(e):
        made.append(e.name)
        return _scorer()

    with caplog.at_level(logging.WARNING, logger="capshap.metrics"):
        res = evaluate_run(run, boxes, scorer_factory=factory, steps=8, random_orders=2)
    msgs = caplog.text
    assert "notes.json" in msgs and "stray.npz" in msgs and "'ghost'" in msgs
    assert sorted(made) == ["pets.jpg", "small.png"]
    data = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert data == res
    assert len(data["rows"]) == 4 and {(r["image"], r["token"]) for r in data["rows"]} == {
        (n, t) for n in ("pets.jpg", "small.png") for t in ("cat", "dog")
    }
    by = {(r["image"], r["token"]): r for r in data["rows"]}
    assert by[("pets.jpg", "cat")]["pointing_hit"] is True and by[("pets.jpg", "dog")]["pointing_hit"] is False
    # scaled to the 32x32 explanation, the box still surrounds the square
    assert by[("small.png", "cat")]["pointing_hit"] is True and by[("small.png", "cat")]["energy_share"] > 0.8
    small_img = next(im for im in data["images"] if im["image"] == "small.png")
    assert small_img["boxes"] == [[4.0, 4.0, 12.0, 12.0]]
    assert all(r["deletion_auc"] < r["random_deletion_auc"] for r in data["rows"])
    assert data["summary"]["pointing_accuracy"] == 1.0
    md = (run / "metrics.md").read_text(encoding="utf-8").splitlines()
    table = [ln for ln in md if ln.startswith("| ") and not ln.startswith("| image")]
    assert len(table) == 4
    assert any(ln.startswith("| pets.jpg | dog |") and "| no |" in ln for ln in table)
    # re-running over the same folder skips its own metrics.json quietly, and writes elsewhere on request
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="capshap.metrics"):
        res2 = evaluate_run(run, None, scorer_factory=_scorer(), steps=8, random_orders=2, out=tmp_path / "o")
    assert "metrics.json" not in caplog.text
    assert (tmp_path / "o" / "metrics.md").exists()
    assert all(r["pointing_hit"] is None for r in res2["rows"])
    assert [r["deletion_auc"] for r in res2["rows"]] == [r["deletion_auc"] for r in res["rows"]]


def test_evaluate_run_errors(exp, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no saved explanations"):
        evaluate_run(tmp_path / "empty", scorer_factory=_scorer())
    run = tmp_path / "run"
    exp.save(run / "pets")
    with pytest.raises(FileNotFoundError, match="boxes.json"):
        evaluate_run(run, tmp_path / "boxes.json", scorer_factory=_scorer())
    bad = tmp_path / "bad.json"
    bad.write_text('{"pets": [[0, 0, 1]]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json, entry 'pets'.*box 0"):
        evaluate_run(run, bad, scorer_factory=_scorer())
    with pytest.raises(ValueError, match="captioner_spec"):
        evaluate_run(run)
    assert not (run / "metrics.json").exists()
