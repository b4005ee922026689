"""Grounding (image evidence vs language prior) on cases whose answer is known by construction.

The scorer's three words: "a" ignores the image (prior), "bird" rises with the top-left
quadrant (grounded), "dog" falls when the bottom-right quadrant is visible (contradicted).
Expected priors and evidence are computed independently, by calling the same function on
the full image and on the fully masked one (mask=0 fills with black).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from known_words import word_scores

import capshap
from capshap import Explanation, FunctionCaptioner, FunctionScorer, explain_image
from capshap.grounding import CONTRADICTED, GROUNDED, PRIOR, Thresholds, ground, label

H = W = 32
IMG = np.full((H, W, 3), 200, dtype=np.uint8)


_f = word_scores(H, scale=200.0, bird=4.0, dog=3.0)


@pytest.fixture(scope="module")
def exp() -> Explanation:
    scorer = FunctionScorer(_f, ["a", "bird", "dog"], caption="a bird dog")
    return explain_image(IMG, scorer, mask=0, max_evals=64, name="known")


def test_prior_evidence_and_labels_match_an_independent_computation(exp):
    full = _f(IMG[None])[0]
    empty = _f(np.zeros_like(IMG)[None])[0]
    np.testing.assert_allclose(exp.prior, empty, atol=1e-12)
    np.testing.assert_allclose(exp.evidence, full - empty, atol=1e-12)
    assert exp.labels() == [PRIOR, GROUNDED, CONTRADICTED]
    g = exp.grounding()
    assert [w.token for w in g] == ["a", "bird", "dog"]
    assert [w.index for w in g] == [0, 1, 2]
    np.testing.assert_allclose([w.evidence for w in g], [0.0, 4.0, -3.0], atol=1e-9)
    # the values sum to the evidence
    np.testing.assert_allclose(exp.pixel_values().sum(axis=(0, 1)), exp.evidence, atol=1e-4)


def test_the_credit_of_grounded_and_contradicted_words_lies_in_their_region(exp):
    pv = exp.pixel_values()
    bird, dog = pv[..., 1], pv[..., 2]
    assert bird[: H // 2, : W // 2].sum() == pytest.approx(4.0, abs=1e-4)
    assert np.abs(bird[H // 2 :, :]).sum() < 1e-6 and np.abs(bird[:, W // 2 :]).sum() < 1e-6
    assert dog[H // 2 :, W // 2 :].sum() == pytest.approx(-3.0, abs=1e-4)
    assert not np.any(pv[..., 0])  # the prior word has no credit anywhere


def test_thresholds_are_settable_per_call_and_per_explanation(exp):
    assert exp.labels(grounded_above=5.0) == [PRIOR, PRIOR, CONTRADICTED]
    assert exp.labels(contradicted_below=-3.5) == [PRIOR, GROUNDED, PRIOR]
    assert exp.labels(grounded_above=-1.0, contradicted_below=-1.0) == [GROUNDED, GROUNDED, CONTRADICTED]
    old = exp.grounding_thresholds
    try:
        exp.grounding_thresholds = Thresholds(4.5, -4.5)
        assert exp.labels() == [PRIOR, PRIOR, PRIOR]
    finally:
        exp.grounding_thresholds = old


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"grounded_above": float("nan")}, "grounded_above must be a finite number"),
        ({"contradicted_below": "x"}, "contradicted_below must be a finite number"),
        ({"grounded_above": -1.0, "contradicted_below": 0.0}, "must not be above"),
        ({"grounded_above": True}, "grounded_above"),
    ],
)
def test_bad_thresholds_are_one_line_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as e:
        Thresholds(**kwargs)
    assert "\n" not in str(e.value)


def test_label_boundaries_are_strict():
    th = Thresholds(0.5, -0.5)
    assert label(0.5, th) == PRIOR and label(0.5000001, th) == GROUNDED
    assert label(-0.5, th) == PRIOR and label(-0.5000001, th) == CONTRADICTED
    assert label(float("nan"), th) == PRIOR
    with pytest.raises(ValueError, match="one base value and one output per token"):
        ground([0.0], [0.0, 1.0], ["a"])


def test_saved_json_holds_grounding_and_round_trips(exp, tmp_path):
    exp.grounding_thresholds = Thresholds(1.0, -2.0)
    try:
        _, js = exp.save(tmp_path / "k")
    finally:
        exp.grounding_thresholds = Thresholds()
    meta = json.loads(js.read_text())
    g = meta["grounding"]
    assert g["grounded_above"] == 1.0 and g["contradicted_below"] == -2.0
    assert [w["label"] for w in g["words"]] == [PRIOR, GROUNDED, CONTRADICTED]
    for w, b, o in zip(g["words"], meta["base_values"], meta["outputs"]):
        assert w["prior"] == b and w["evidence"] == pytest.approx(o - b, abs=1e-12)
    back = Explanation.load(tmp_path / "k")
    assert back.grounding_thresholds == Thresholds(1.0, -2.0)
    assert back.labels() == [PRIOR, GROUNDED, CONTRADICTED]


def test_older_files_without_grounding_load_with_the_defaults(exp, tmp_path):
    _, js = exp.save(tmp_path / "old")
    meta = json.loads(js.read_text())
    del meta["grounding"]
    js.write_text(json.dumps(meta))
    back = Explanation.load(tmp_path / "old")
    assert back.grounding_thresholds == Thresholds()
    assert back.labels() == [PRIOR, GROUNDED, CONTRADICTED]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([1, 2], "must be an object"),
        ({"grounded_above": "high"}, "grounded_above must be a finite number"),
        ({"grounded_above": 0.0, "contradicted_below": 1.0}, "must not be above"),
    ],
)
def test_a_damaged_grounding_field_is_a_one_line_error_naming_file_and_field(exp, tmp_path, value, needle):
    _, js = exp.save(tmp_path / "bad")
    meta = json.loads(js.read_text())
    meta["grounding"] = value
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=needle) as e:
        Explanation.load(tmp_path / "bad")
    msg = str(e.value)
    assert "\n" not in msg and str(js) in msg and "field 'grounding'" in msg


def test_function_captioner_through_the_public_api():
    """capshap.explain with a FunctionCaptioner and word presence: "photo" is said with or
    without the image (prior), "bird" only while the top-left quadrant is visible."""

    def caption(img: np.ndarray) -> str:
        tl = float(np.asarray(img, dtype=np.float64)[: H // 2, : W // 2].mean())
        return "photo of bird" if tl > 100 else "photo of nothing"

    exps = capshap.explain([IMG], captioner=FunctionCaptioner(caption), scorer="presence", mask=0, max_evals=32)
    (e,) = exps
    labels = dict(zip(e.tokens, e.labels()))
    assert labels["bird"] == GROUNDED
    assert labels["photo"] == PRIOR and labels["of"] == PRIOR
    np.testing.assert_allclose(e.evidence[e.tokens.index("bird")], 1.0)
    np.testing.assert_allclose(e.prior[e.tokens.index("photo")], 1.0)
