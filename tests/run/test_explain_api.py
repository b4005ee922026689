"""capshap.run: the notebook's defaults end to end, and one bad image never loses the others."""

import logging
import shutil
from pathlib import Path

import pytest

import capshap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _scorer_factory(caption):
    def f(batch):
        return batch.reshape(len(batch), -1, 3).mean(1)[:, :1] / 255.0

    return capshap.FunctionScorer(f, ["grey"], caption=caption)


def test_bad_files_are_skipped_and_named(tmp_path, caplog):
    shutil.copy(EXAMPLES / "2.jpg", tmp_path / "a.jpg")
    shutil.copy(EXAMPLES / "3.jpg", tmp_path / "c.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("hello")
    with caplog.at_level(logging.DEBUG, logger="capshap"):
        exps = capshap.explain(tmp_path, captioner=lambda im: "grey", scorer=_scorer_factory, max_evals=10)
    assert [e.name for e in exps] == ["a.jpg", "c.jpg"]
    assert any("b.jpg" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    # not an image by its extension: named, but quietly (debug), not a warning (issue 20)
    assert any("notes.txt" in r.getMessage() for r in caplog.records)
    assert not any("notes.txt" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    with pytest.raises(capshap.ImageError, match="b.jpg"):
        capshap.explain(tmp_path, captioner=lambda im: "grey", scorer=_scorer_factory, max_evals=10, on_error="raise")


def test_captioner_failure_on_one_image_keeps_the_others(caplog):
    imgs = [capshap.load_image(EXAMPLES / f"{i}.jpg") for i in (1, 2, 3)]

    def flaky(im):
        if im is not None and int(im.mean()) == int(imgs[1].mean()):
            raise RuntimeError("service unavailable")
        return "grey"

    with caplog.at_level(logging.ERROR):
        exps = capshap.explain(imgs, captioner=flaky, scorer=_scorer_factory, max_evals=10)
    assert [e.name for e in exps] == ["image0", "image2"]
    assert any("image1" in r.getMessage() and "service unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="on_error"):
        capshap.explain(imgs, captioner=flaky, scorer=_scorer_factory, on_error="ignore")
