"""capshap.explain(..., out=DIR) is the CLI's run: the same run folder, resumed the same way."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np

import capshap
from capshap.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_api_out_writes_the_same_run_folder_as_the_cli(tmp_path):
    cli, api = tmp_path / "cli", tmp_path / "api"
    assert main(["explain", str(EXAMPLES), "--out", str(cli), "--max-evals", "12", "--batch-size", "6", "-q"]) == 0
    exps = capshap.explain(str(EXAMPLES), out=api, max_evals=12, batch_size=6, progress=False)
    assert [e.name for e in exps] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert _files(cli) == _files(api)
    assert {"index.html", "manifest.json", "summary.json", "summary.html", "1.npz", "1.json", "1.png"} <= set(_files(api))
    m_cli, m_api = (json.loads((d / "manifest.json").read_text()) for d in (cli, api))
    assert m_cli["settings"] == m_api["settings"]
    assert sorted(r["stem"] for r in m_cli["images"].values()) == sorted(r["stem"] for r in m_api["images"].values())
    for stem in ("1", "2", "3", "4"):
        a, b = np.load(cli / f"{stem}.npz"), np.load(api / f"{stem}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_a_second_api_call_resumes_without_recomputing(tmp_path):
    calls: list[int] = []

    def caption(image):
        calls.append(1)
        return "a red square"

    out = tmp_path / "run"
    kw = dict(captioner=caption, scorer="presence", out=out, max_evals=8, batch_size=4, progress=False)
    first = capshap.explain([str(EXAMPLES / "1.jpg"), str(EXAMPLES / "2.jpg")], **kw)
    n = len(calls)
    assert n > 2 and len(first) == 2
    again = capshap.explain([str(EXAMPLES / "1.jpg"), str(EXAMPLES / "2.jpg")], **kw)
    assert len(calls) == n, "done images were recomputed"
    assert [e.name for e in again] == [e.name for e in first]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.values, b.values)
    # overwrite=True explains them again
    capshap.explain([str(EXAMPLES / "1.jpg"), str(EXAMPLES / "2.jpg")], overwrite=True, **kw)
    assert len(calls) == 2 * n


def test_out_needs_files(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="out= writes a run folder of image files"):
        capshap.explain(np.zeros((16, 16, 3), np.uint8), captioner=lambda im: "a cat", out=tmp_path / "x")
