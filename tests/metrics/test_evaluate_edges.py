"""What a new user meets in `capshap evaluate`: areas in 0..1, words without credit left out,
"n/a" pointing for all-zero maps, quiet skips, progress, and curves reused when only the
boxes change."""

import dataclasses
import json
import logging

import numpy as np
import pytest
from metrics_helpers import CAT, CAT_BOX, Counting, custom_exp

from capshap import FunctionScorer
from capshap.captioners import CAPTIONERS
from capshap.interfaces import Captioner
from capshap.metrics import deletion_insertion, evaluate_run, pointing_game
from capshap.metrics.curvecache import CACHE_NAME
from capshap.settings import Settings

KW = {"steps": 4, "random_orders": 1}


def _trapezoid(x, y):
    return float(np.sum((y[1:] + y[:-1]) * 0.5 * np.diff(x)))


def test_normalised_areas_lie_in_0_1_even_when_the_raw_curve_overshoots(exp):
    def f(batch):
        s = Counting()(batch)
        # "cat" scores higher when part of the image is hidden than on the full image:
        # the raw curve leaves [empty, full]
        hidden = (batch == 0).mean(axis=(1, 2, 3))
        return np.stack([s[:, 0] + 4 * hidden * (1 - hidden), s[:, 1]], axis=1)

    r = deletion_insertion(exp, FunctionScorer(f, ["cat", "dog"]), steps=8, random_orders=2, token="cat")
    (t,) = r["tokens"]
    x = np.asarray(r["fractions"])
    d = np.asarray(t["deletion_scores"])
    full, empty = t["full_score"], t["empty_score"]
    unclipped = (d - empty) / (full - empty)
    assert unclipped.max() > 1  # the case the clipping is for
    expected = np.clip(unclipped, 0, 1)
    np.testing.assert_allclose(t["deletion_curve"], expected)
    assert t["deletion_auc"] == pytest.approx(_trapezoid(x, expected))
    for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert 0.0 <= t[k] <= 1.0, k
    # the raw area keeps the overshoot
    assert t["deletion_auc_raw"] == pytest.approx(_trapezoid(x, d))


def test_an_all_zero_map_has_no_pointing_result():
    v = np.zeros((64, 64, 2))
    v[CAT[0]:CAT[1], CAT[0]:CAT[1], 0] = 1.0
    e = custom_exp(v, ["cat", "a"])
    assert pointing_game(e, [CAT_BOX], "cat")["hit"] is True
    na = pointing_game(e, [CAT_BOX], "a")
    assert na["hit"] is None and na["distance"] is None and na["point"] is None
    assert na["box_fraction"] == pytest.approx(16 * 16 / 64 / 64)


def test_words_without_credit_are_left_out_and_counted(tmp_path):
    v = np.zeros((64, 64, 3))
    v[CAT[0]:CAT[1], CAT[0]:CAT[1], 1] = 1.0
    e = dataclasses.replace(custom_exp(v, ["a", "cat", "photo"]), name="pets.jpg")
    e.save(tmp_path / "run" / "pets")
    seen = []

    def f(batch):
        s = Counting()(batch)
        seen.append(len(batch))
        return np.stack([np.zeros(len(batch)), s[:, 0], np.ones(len(batch))], axis=1)

    res = evaluate_run(tmp_path / "run", {"pets.jpg": [CAT_BOX]}, scorer_factory=FunctionScorer(f, ["a", "cat", "photo"]), **KW)
    assert [r["token"] for r in res["rows"]] == ["cat"]
    assert res["rows"][0]["pointing_hit"] is True
    assert res["summary"]["n_words_without_credit"] == 2
    assert res["images"][0]["words_without_credit"] == ["a", "photo"]
    md = (tmp_path / "run" / "metrics.md").read_text(encoding="utf-8")
    assert "2 words with no credit anywhere" in md
    assert "| pets.jpg | a |" not in md and "| pets.jpg | cat |" in md
    assert seen  # "cat" was scored


def test_an_image_whose_words_all_lack_credit_scores_nothing_and_has_no_pointing_hit(tmp_path):
    e = dataclasses.replace(custom_exp(np.zeros((64, 64, 2)), ["a", "photo"]), name="blank.jpg")
    e.save(tmp_path / "run" / "blank")

    def never(batch):
        pytest.fail("a word without credit was scored")

    res = evaluate_run(tmp_path / "run", {"blank.jpg": [CAT_BOX]}, scorer_factory=FunctionScorer(never, ["a", "photo"]), **KW)
    assert res["rows"] == [] and res["summary"]["n_words_without_credit"] == 2
    assert res["images"][0]["pointing"]["hit"] is None
    assert res["summary"]["pointing_accuracy"] is None  # NaN in memory, null in JSON: no image counts


def test_files_the_run_wrote_are_skipped_quietly(exp, tmp_path, caplog):
    run = tmp_path / "run"
    exp.save(run / "pets")
    (run / "summary.json").write_text(json.dumps({"images": 1, "words": []}), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({"format": "capshap.run"}), encoding="utf-8")
    (run / "sub").mkdir()
    (run / "sub" / "other.json").write_text(json.dumps({"format": "capshap.something"}), encoding="utf-8")
    (run / "notes.json").write_text("{}", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="capshap.metrics"):
        evaluate_run(run, scorer_factory=FunctionScorer(Counting(), ["cat", "dog"]), **KW)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "summary.json" not in warned and "manifest.json" not in warned and "other.json" not in warned
    assert "notes.json" in warned  # a file the run did not write is still mentioned


def test_progress_bars_go_to_stderr(exp, tmp_path, capsys):
    exp.save(tmp_path / "run" / "pets")
    evaluate_run(tmp_path / "run", scorer_factory=FunctionScorer(Counting(), ["cat", "dog"]), progress=True, **KW)
    err = capsys.readouterr().err
    assert "[1/1] pets" in err
    capsys.readouterr()
    evaluate_run(tmp_path / "run", scorer_factory=FunctionScorer(Counting(), ["cat", "dog"]), progress=False, **KW)
    assert "[1/1]" not in capsys.readouterr().err


class SquaresCaptioner(Captioner):
    """A captioner whose own head is the two-squares scorer; counts how often it is built."""

    built = 0
    counter = Counting()

    def caption(self, images):
        return ["cat dog"] * len(images)

    def own_scorer(self, caption, score="logodds", merge_words=False):
        return FunctionScorer(SquaresCaptioner.counter, ["cat", "dog"], caption=caption)


@pytest.fixture
def squares_builtin():
    """'builtin' (rebuilt without asking) builds the squares captioner for one test."""
    entry = CAPTIONERS.get("builtin")
    CAPTIONERS.unregister("builtin")

    def make(arg, options, context):
        SquaresCaptioner.built += 1
        return SquaresCaptioner()

    CAPTIONERS.register("builtin", make, help=entry.help, options=entry.options, aliases=entry.aliases,
                        needs_arg=entry.needs_arg)
    SquaresCaptioner.built = 0
    SquaresCaptioner.counter = Counting()
    yield SquaresCaptioner
    CAPTIONERS.unregister("builtin")
    CAPTIONERS.register("builtin", entry.factory, help=entry.help, options=entry.options, aliases=entry.aliases,
                        needs_arg=entry.needs_arg)


def _curves(res):
    keys = ("deletion_auc", "insertion_auc", "random_deletion_auc", "deletion_auc_raw", "insertion_beats_random")
    return [[r[k] for k in keys] for r in res["rows"]], [im["metrics"] for im in res["images"]]


def test_curves_are_reused_when_only_the_boxes_change(exp, tmp_path, squares_builtin):
    run = tmp_path / "run"
    dataclasses.replace(exp, settings=Settings(captioner="builtin", scorer="auto", mask="0")).save(run / "pets")
    first = evaluate_run(run, **KW)
    assert squares_builtin.built == 1 and squares_builtin.counter.images > 0
    assert (run / CACHE_NAME).is_file()
    scored = squares_builtin.counter.images

    # boxes added: the curves come from the cache, nothing is built or scored
    boxed = evaluate_run(run, {"pets.jpg": [CAT_BOX]}, **KW)
    assert squares_builtin.built == 1 and squares_builtin.counter.images == scored
    assert _curves(boxed) == _curves(first)
    assert boxed["rows"][0]["pointing_hit"] is True and first["rows"][0]["pointing_hit"] is None

    # what the curves depend on changed: scored again
    evaluate_run(run, {"pets.jpg": [CAT_BOX]}, steps=5, random_orders=1)
    assert squares_builtin.built == 2
    # asked to recompute: scored again, same numbers as the first time
    again = evaluate_run(run, **KW, reuse=False)
    assert squares_builtin.built == 3 and _curves(again) == _curves(first)
    # the explanation's files changed: scored again
    dataclasses.replace(exp, caption="cat dog!", settings=Settings(captioner="builtin", scorer="auto", mask="0")).save(
        run / "pets")
    evaluate_run(run, **KW)
    assert squares_builtin.built == 4


@pytest.mark.parametrize("damage", ["not json", '{"format": "capshap.curves/1", "entries": []}', "bad types"])
def test_a_damaged_cache_is_ignored(exp, tmp_path, squares_builtin, damage):
    run = tmp_path / "run"
    dataclasses.replace(exp, settings=Settings(captioner="builtin", scorer="auto", mask="0")).save(run / "pets")
    first = evaluate_run(run, **KW)
    cache = run / CACHE_NAME
    if damage == "bad types":
        data = json.loads(cache.read_text(encoding="utf-8"))
        for entry in data["entries"].values():
            entry["metrics"]["tokens"][0]["deletion_auc"] = "0.0; rm -rf /"
        cache.write_text(json.dumps(data), encoding="utf-8")
    else:
        cache.write_text(damage, encoding="utf-8")
    res = evaluate_run(run, **KW)
    assert squares_builtin.built == 2  # computed again
    assert _curves(res) == _curves(first)
