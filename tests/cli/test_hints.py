"""What the command tells a user who asked for something that cannot help: a caption whose
words presence never sees, images in flight on a CPU with a local model."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from capshap.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = ["--max-evals", "12", "--batch-size", "12", "-q"]


def test_presence_with_a_caption_it_never_sees_says_why_values_are_zero(tmp_path, capsys):
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(tmp_path), "--caption", "a bird on a wire",
                 "--scorer", "presence", "--max-evals", "12", "--batch-size", "12"])
    err = capsys.readouterr().err
    assert code == 0
    js = json.loads((tmp_path / "2.json").read_text())
    silent = [w["token"] for w in js["grounding"]["words"] if w["evidence"] == 0 and w["prior"] == 0]
    assert silent, "the builtin captioner wrote one of these words: the test did not test anything"
    assert "never appear" in err and any(repr(w) in err for w in silent)


def test_in_flight_on_a_cpu_with_a_local_model_warns(tmp_path, capsys):
    code = main(["explain", str(EXAMPLES / "1.jpg"), str(EXAMPLES / "2.jpg"), "--out", str(tmp_path),
                 "--in-flight", "2", "--max-evals", "12", "--batch-size", "12"])
    err = capsys.readouterr().err
    assert code == 0
    assert "expect no speed-up over a serial run" in err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["in_flight"] == 2
