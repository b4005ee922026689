"""evaluate_run over a run folder (see metrics_helpers)."""

import dataclasses
import json
import logging
import math
import re

import numpy as np
import pytest

from capshap import FunctionScorer, explain_image
from capshap.metrics import deletion_insertion, evaluate_run
from metrics_helpers import CAT_BOX, Counting, image, scorer


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


def test_evaluate_run(exp, tmp_path, caplog):
    run = tmp_path / "run"
    exp.save(run / "pets")
    half = image()[::2, ::2].copy()
    small = explain_image(half, scorer(), mask=0, max_evals=100, fixed_context=0, name="small.png")
    small.params["original_size"] = [64, 64]  # boxes are given on the 64x64 original
    small.save(run / "small")
    (run / "notes.json").write_text("{}", encoding="utf-8")
    np.savez(run / "stray.npz", a=np.zeros(2))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"pets.jpg": [CAT_BOX], "small": [CAT_BOX], "ghost": [[0, 0, 1, 1]]}), encoding="utf-8")
    made = []

    def factory(e):
        made.append(e.name)
        return scorer()

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
        res2 = evaluate_run(run, None, scorer_factory=scorer(), steps=8, random_orders=2, out=tmp_path / "o")
    assert "metrics.json" not in caplog.text
    assert (tmp_path / "o" / "metrics.md").exists()
    assert all(r["pointing_hit"] is None for r in res2["rows"])
    assert [r["deletion_auc"] for r in res2["rows"]] == [r["deletion_auc"] for r in res["rows"]]


def test_evaluate_run_errors(exp, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no saved explanations"):
        evaluate_run(tmp_path / "empty", scorer_factory=scorer())
    run = tmp_path / "run"
    exp.save(run / "pets")
    with pytest.raises(FileNotFoundError, match="boxes.json"):
        evaluate_run(run, tmp_path / "boxes.json", scorer_factory=scorer())
    bad = tmp_path / "bad.json"
    bad.write_text('{"pets": [[0, 0, 1]]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json, entry 'pets'.*box 0"):
        evaluate_run(run, bad, scorer_factory=scorer())
    with pytest.raises(ValueError, match="captioner_spec"):
        evaluate_run(run)
    assert not (run / "metrics.json").exists()


def test_damaged_files_are_skipped_and_reported_while_the_others_are_written(exp, tmp_path, caplog):
    run = tmp_path / "run"
    exp.save(run / "a_good")
    exp.save(run / "z_good")
    exp.save(run / "garbled")
    (run / "garbled.json").write_text('{"format": "capshap.explanation", "tokens": [', encoding="utf-8")
    exp.save(run / "no_values")  # the arrays file lost its values: Explanation.load meets a KeyError
    with np.load(run / "no_values.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "values"}
    np.savez(run / "no_values.npz", **arrays)
    exp.save(run / "orphan")
    (run / "orphan.npz").unlink()
    exp.save(run / "bad_settings")
    meta = json.loads((run / "bad_settings.json").read_text(encoding="utf-8"))
    meta["settings"] = {"max_evals": 5, "colour": "red"}
    (run / "bad_settings.json").write_text(json.dumps(meta), encoding="utf-8")
    dataclasses.replace(exp, name="breaks.jpg").save(run / "scorer_breaks")
    (run / "half.tmp.npz").write_bytes(b"PK")

    def factory(e):
        return scorer()

    def picky(e):
        if e.name == "breaks.jpg":  # a scorer with the wrong number of columns
            return FunctionScorer(lambda b: np.zeros((len(b), 5)), ["cat", "dog"])
        return scorer()

    with caplog.at_level(logging.WARNING, logger="capshap.metrics"):
        res = evaluate_run(run, scorer_factory=picky, steps=4, random_orders=1)
    reasons = {f["file"]: f["reason"] for f in res["failures"]}
    assert set(reasons) == {"garbled.json", "no_values", "orphan.json", "bad_settings.json", "scorer_breaks",
                            "half.tmp.npz"}
    assert "unreadable JSON" in reasons["garbled.json"]
    assert reasons["no_values"].startswith("loading failed") and "'values'" in reasons["no_values"]
    assert "arrays are missing" in reasons["orphan.json"]
    assert "unknown settings colour" in reasons["bad_settings.json"]
    assert reasons["scorer_breaks"].startswith("scoring masked images failed") and "one column per token" in reasons["scorer_breaks"]
    assert "unfinished" in reasons["half.tmp.npz"]
    for name in reasons:
        assert name in caplog.text
    # the good ones are written, with the same values as a run of the good ones alone
    assert {r["file"] for r in res["rows"]} == {"a_good", "z_good"}
    assert res["summary"]["n_failed"] == 6 and res["summary"]["n_images"] == 2
    alone = tmp_path / "alone"
    exp.save(alone / "a_good")
    ref = evaluate_run(alone, scorer_factory=factory, steps=4, random_orders=1)
    assert [r["deletion_auc"] for r in res["rows"][:2]] == [r["deletion_auc"] for r in ref["rows"]]
    written = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert written["failures"] == res["failures"]
    md = (run / "metrics.md").read_text(encoding="utf-8")
    assert "## Skipped files (6)" in md and "- garbled.json: unreadable JSON" in md


def test_nothing_evaluated_raises_with_every_reason(exp, tmp_path):
    from capshap.metrics import NothingEvaluated

    run = tmp_path / "run"
    exp.save(run / "a")
    (run / "a.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(NothingEvaluated, match=r"a\.json: not a capshap explanation") as info:
        evaluate_run(run, scorer_factory=scorer())
    assert info.value.failures == [{"file": "a.json", "reason": "not a capshap explanation (a JSON list)"}]
    assert not (run / "metrics.json").exists()


def test_metrics_md_escapes_text_from_files(tmp_path):
    tokens = ["<script>alert(1)</script>", "a|b", "`rm`", "[x](javascript:y)"]
    rng = np.random.default_rng(3)
    img = image()
    from capshap import Explanation

    evil = Explanation(
        values=rng.normal(size=(64, 64, 4)).astype(np.float32), base_values=np.zeros(4), outputs=np.zeros(4),
        tokens=tokens, caption=" ".join(tokens), image=img, params={"mask": 0},
        name="<img src=x onerror=alert(1)>\x1b[2J\nrow.jpg",
    )
    evil.save(tmp_path / "run" / "evil")

    def four(batch):
        s = Counting()(batch)
        return np.concatenate([s, s], axis=1)

    res = evaluate_run(tmp_path / "run", scorer_factory=FunctionScorer(four, tokens), steps=2, random_orders=1)
    md = (tmp_path / "run" / "metrics.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "<img" not in md and "\x1b" not in md
    assert re.search(r"(?<!\\)\]\(", md) is None  # no live link
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "a\\|b" in md and "\\`rm\\`" in md
    assert "\\[x\\](javascript:y)" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| image")]
    assert len(rows) == 4  # the newline in the name did not break a row
    for ln in rows:
        assert len(re.findall(r"(?<!\\)\|", ln)) == 7  # 6 cells, no extra column from "a|b"
        # control characters shown as text (the backslash itself escaped for Markdown)
        assert ln.startswith("| &lt;img src=x onerror=alert(1)&gt;\\\\x1b\\[2J\\\\nrow.jpg | ")
    # the JSON keeps the text as it was (JSON escapes it itself)
    assert [r["token"] for r in res["rows"]] == tokens


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "15", True])
def test_bad_tolerance_is_refused_before_anything_runs(exp, tmp_path, bad):
    exp.save(tmp_path / "run" / "pets")
    with pytest.raises(ValueError, match="tolerance"):
        evaluate_run(tmp_path / "run", scorer_factory=scorer(), tolerance=bad)
    assert not (tmp_path / "run" / "metrics.json").exists()
