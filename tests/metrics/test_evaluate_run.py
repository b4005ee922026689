"""evaluate_run over a run folder (see metrics_helpers)."""

import json
import logging
import math

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
