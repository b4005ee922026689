"""The capshap command (in-process and as a subprocess) and the CLI specs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

from capshap import Explanation, FunctionCaptioner
from capshap.cli import build_parser, main
from capshap.captioners import build_captioner
from capshap.regions import TREES
from capshap.regions.user import resize_nearest
from capshap.registry import SpecError, parse_options
from capshap.scoring import build_scorer


def parse_generate(text):
    return parse_options(text, "--generate")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SMALL = ["--max-evals", "12", "--batch-size", "12"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "capshap.cli", *args],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=timeout,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run on the examples with the default (builtin) captioner."""
    out = tmp_path_factory.mktemp("run")
    code = main(["explain", str(EXAMPLES), "--out", str(out), *SMALL, "--grid", "4", "-q"])
    return code, out


def test_run_writes_every_output(run):
    code, out = run
    assert code == 0
    names = sorted(p.stem for p in EXAMPLES.glob("*.jpg"))
    assert len(names) == 4
    total_tokens = 0
    for n in names:
        meta = json.loads((out / f"{n}.json").read_text())
        T = len(meta["tokens"])
        total_tokens += T
        assert meta["caption"].startswith("a photo of") and T >= 5
        # the PNG opens and has one panel per token with credit (the template words are listed)
        with np.load(out / f"{n}.npz") as z:
            live = [tok for t, tok in enumerate(meta["tokens"]) if np.any(z["values"][..., t])]
        assert 0 < len(live) < T
        with Image.open(out / f"{n}.png") as im:
            im.load()
            assert im.format == "PNG" and im.text["capshap:panels"] == str(1 + len(live))
            assert json.loads(im.text["capshap:tokens"]) == live
        with Image.open(out / f"{n}_grid.png") as im:
            assert im.text["capshap:panels"] == "4"
        # efficiency: the values sum to outputs - base_values
        with np.load(out / f"{n}.npz") as z:
            values = z["values"].astype(np.float64)
        gap = np.array(meta["outputs"]) - np.array(meta["base_values"])
        np.testing.assert_allclose(values.sum(axis=(0, 1)), gap, atol=1e-3)
        assert np.abs(gap).max() > 0.1  # the label token really moved
        # the JSON carries what a reader needs
        p = meta["params"]
        assert p["captioner_spec"] == "builtin" and p["scorer_spec"] == "auto" and p["tree_spec"] == "axis"
        assert p["max_evals"] == 12 and p["mask"] == "inpaint_ns" and p["original_size"] == [224, 224]
        assert meta["info"]["n_evals"] <= 13 and meta["timings"]["total"] > 0
        assert len(meta["top_regions"]) == T and meta["top_regions"][-1]
        assert meta["versions"]["capshap"] and meta["versions"]["torch"]
        # template words do not depend on the image: zero attribution
        assert np.all(values[..., :3] == 0)
    page = (out / "index.html").read_text()
    assert len(re.findall(r'<section class="item"', page)) == 4
    assert len(re.findall(r'<button class="tok"', page)) == total_tokens
    for n in names:
        assert f'data-name="{n}.jpg"' in page and f'href="./{n}.png"' in page


def test_show_replots(run, tmp_path):
    _, out = run
    code = main(["show", str(out / "2.npz"), str(out / "3.json"), "--out", str(tmp_path), "--grid", "2", "-q"])
    assert code == 0
    meta = json.loads((out / "2.json").read_text())
    with np.load(out / "2.npz") as z:
        live = [t for t in range(len(meta["tokens"])) if np.any(z["values"][..., t])]
    with Image.open(tmp_path / "2.png") as im:
        assert im.text["capshap:panels"] == str(1 + len(live))
    assert (tmp_path / "3.png").exists() and (tmp_path / "2_grid.png").exists()
    assert main(["show", str(out / "2.npz"), "--tokens", "photo,4", "--out", str(tmp_path / "t"), "-q"]) == 0
    with Image.open(tmp_path / "t" / "2.png") as im:
        assert im.text["capshap:panels"] == "3"
    assert main(["show", str(tmp_path / "missing.npz"), "-q"]) == 1


def test_failures_are_reported_and_skipped(tmp_path):
    """A corrupt .jpg and a .txt next to good images: exit code 1, good outputs saved."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "2.jpg", src / "bird.jpg")
    Image.open(EXAMPLES / "3.jpg").crop((0, 40, 224, 170)).save(src / "wide.png")  # non-square
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    res = _run("explain", str(src), "--out", str(out), "--max-evals", "12", "--batch-size", "12")
    assert res.returncode == 1, res.stderr
    assert (out / "bird.png").exists() and (out / "bird.npz").exists() and (out / "bird.json").exists()
    assert (out / "wide.png").exists()
    assert json.loads((out / "wide.json").read_text())["params"]["original_size"] == [130, 224]
    assert not (out / "broken.png").exists() and not (out / "broken.json").exists()
    err_lines = [ln for ln in res.stderr.splitlines() if "broken.jpg" in ln]
    assert len(err_lines) == 1 and "not a readable image" in err_lines[0]  # one clear line
    assert "notes.txt" not in res.stderr  # not an image by its extension: skipped quietly (issue 20)
    assert re.search(r"broken\.jpg\s+FAILED", res.stdout)
    assert "2 of 3 images explained" in res.stdout
    page = (out / "index.html").read_text()
    assert len(re.findall(r'<section class="item"', page)) == 2 and "broken.jpg" in page


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mask", "foo"], "--mask foo"),
        (["--scorer", "bogus"], "--scorer bogus"),
        (["--captioner", "nope"], "--captioner nope"),
        (["--tree", "hexagons"], "--tree hexagons"),
        (["--tree", "labels:/no/such.png"], "no such file"),
        (["--max-evals", "1"], "--max-evals"),
        (["--fixed-context", "2"], "--fixed-context"),
        (["--grid", "some"], "--grid"),
        (["--max-side", "500", "--no-resize"], "not allowed with"),
        (["--captioner", "builtin:0"], "top-k"),
        (["--generate", "max_new_tokens=5"], "hf: captioners only"),
        (["--generate", "20"], "--generate 20"),
    ],
)
def test_usage_errors_exit_2(args, needle, capsys, tmp_path):
    assert main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(tmp_path), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


def test_missing_path_and_no_command(capsys, tmp_path):
    assert main(["explain", str(tmp_path / "nothing_here"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing_here: no such file or folder" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["frobnicate"]) == 2


def test_subprocess_exit_codes_and_help():
    res = _run("explain", "--help")
    assert res.returncode == 0
    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    for action in explain._actions:
        for opt in action.option_strings:
            assert opt in res.stdout  # every option is documented
        if action.option_strings:
            assert action.help and len(action.help) > 10
    assert _run("explain", str(EXAMPLES), "--mask", "purple-ish").returncode == 2
    assert _run("explain", "does/not/exist").returncode == 2
    ver = _run("version")
    assert ver.returncode == 0 and ver.stdout.startswith("capshap ")


def test_user_masks_tree(tmp_path, capsys):
    img = np.asarray(Image.open(EXAMPLES / "2.jpg").convert("RGB"))
    masks = tmp_path / "masks"
    (masks / "2").mkdir(parents=True)
    bird = np.zeros(img.shape[:2], np.uint8)
    bird[60:170, 40:200] = 255
    Image.fromarray(bird).save(masks / "2" / "bird.png")
    wire = np.zeros(img.shape[:2], np.uint8)
    wire[140:160, :] = 255
    Image.fromarray(wire).save(masks / "2_wire.png")
    out = tmp_path / "out"
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--tree", f"masks:{masks}", "--out", str(out),
                 "--max-evals", "10", "--batch-size", "10", "-q"])
    assert code == 0
    exp = Explanation.load(out / "2.npz")
    assert exp.tree.kind == "masks" and exp.tree.n_leaves >= 3  # bird, wire, background
    pv = exp.pixel_values()
    leaf = exp.tree.leaf_map()
    for lab in np.unique(leaf):  # values are constant within a leaf segment
        assert np.ptp(pv[leaf == lab], axis=0).max() < 1e-6
    assert json.loads((out / "2.json").read_text())["params"]["tree_spec"] == f"masks:{masks}"
    # re-plotting draws the outlines again from the saved tree
    from capshap.viz.plots import plot

    assert len([ax for ax in plot(exp).axes if ax.images][0].images) == 2
    # a mask that matches no image is a usage error naming the file
    Image.fromarray(wire).save(masks / "cat_01.png")
    code = main(["explain", str(EXAMPLES / "2.jpg"), str(EXAMPLES / "3.jpg"), "--tree", f"masks:{masks}",
                 "--out", str(tmp_path / "o2"), "-q"])
    assert code == 2 and "cat_01.png" in capsys.readouterr().err


def test_label_map_of_wrong_size_fails_that_image(tmp_path, capsys):
    lab = np.zeros((50, 60), np.uint8)
    lab[:, 30:] = 1
    Image.fromarray(lab).save(tmp_path / "labels.png")
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--tree", f"labels:{tmp_path / 'labels.png'}",
                 "--out", str(tmp_path / "o"), "--max-evals", "10", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "2.jpg" in err and "60x50" in err and "224x224" in err


# ------------------------------------------------------------------------- specs


def _cap(img):
    return "a grey square"


def test_build_scorer_specs():
    cap = FunctionCaptioner(_cap)
    from capshap.scoring.own import OwnHeadFactory
    from capshap.scoring.presence import PresenceFactory

    assert isinstance(build_scorer("auto", cap), PresenceFactory)  # no language head
    assert isinstance(build_scorer("presence", cap), PresenceFactory)
    with pytest.raises(SpecError, match=r"--scorer own: .*no language head.*presence"):
        build_scorer("own", cap)
    with pytest.raises(SpecError, match="--scorer magic: unknown scorer"):
        build_scorer("magic", cap)
    builtin = build_captioner("builtin:2")
    assert builtin.top_k == 2
    assert isinstance(build_scorer("auto", builtin), OwnHeadFactory)


def test_build_captioner_errors(monkeypatch):
    with pytest.raises(SpecError, match="--captioner hf: give an argument: hf:ID_OR_PATH"):
        build_captioner("hf")
    monkeypatch.delenv("AZURE_VISION_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_VISION_KEY", raising=False)
    with pytest.raises(SpecError, match="--captioner azure: .*AZURE_VISION_ENDPOINT"):
        build_captioner("azure")
    with pytest.raises(SpecError, match="--captioner builtin:x"):
        build_captioner("builtin:x")


def test_tree_specs_and_resize(tmp_path):
    assert TREES.create("slic").for_image("a.jpg", np.zeros((4, 4, 3), np.uint8)) == "slic"
    with pytest.raises(SpecError, match="masks:FOLDER takes a folder"):
        (tmp_path / "f.png").write_bytes(b"x")
        TREES.create(f"masks:{tmp_path / 'f.png'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="mask list is empty"):
        TREES.create(f"masks:{tmp_path / 'empty'}")
    a = np.arange(6).reshape(2, 3)
    up = resize_nearest(a, 4, 6)
    np.testing.assert_array_equal(up[::2, ::2], a)
    assert set(np.unique(up)) == set(range(6))
    # a label map at the original size is resized to the fitted image
    lab = np.zeros((40, 80), np.uint8)
    lab[:, 40:] = 3
    Image.fromarray(lab).save(tmp_path / "lab.png")
    src = TREES.create(f"labels:{tmp_path / 'lab.png'}")
    out = src.for_image("x.jpg", np.zeros((20, 40, 3), np.uint8), original_size=(40, 80))
    assert out.shape == (20, 40) and set(np.unique(out[:, :20])) == {0} and set(np.unique(out[:, 20:])) == {3}


def test_captioner_failure_on_one_image(tmp_path, monkeypatch, capsys):
    """A captioner registered from Python by name, that fails on one image: that image
    is reported, the other is saved."""
    from capshap.captioners import CAPTIONERS

    def flaky(img):
        if img.shape[0] != img.shape[1]:
            raise RuntimeError("service unavailable (HTTP 503)")
        return "a bird on a wire"

    CAPTIONERS.register("flaky", lambda arg, options, context: FunctionCaptioner(flaky, name="flaky"), help="flaky, a test")
    request_cleanup = CAPTIONERS.unregister
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "2.jpg", src / "a.jpg")
    Image.open(EXAMPLES / "3.jpg").crop((0, 40, 224, 170)).save(src / "b.png")
    out = tmp_path / "out"
    try:
        code = main(["explain", str(src), "--out", str(out), "--max-evals", "10", "--mask", "0", "--grid", "all",
                     "--captioner", "flaky"])
    finally:
        request_cleanup("flaky")
    assert code == 1
    cap = capsys.readouterr()
    assert "b.png" in cap.err and "service unavailable (HTTP 503)" in cap.err
    assert re.search(r"b\.png\s+FAILED: captioning failed: service unavailable", cap.out)
    meta = json.loads((out / "a.json").read_text())
    assert meta["params"]["scorer_spec"] == "auto" and meta["params"]["scorer"] == "_BoundPresence"
    assert meta["captions"] and len(meta["captions"]) == meta["info"]["n_evals"]  # presence: captions kept
    assert (out / "a_grid.png").exists() and not (out / "b.json").exists()


def test_cached_captioner_calls_once(tmp_path):
    from capshap.captioners.cache import CaptionCache, with_cache

    calls = []

    def fn(img):
        calls.append(1)
        return f"mean {img.mean():.0f}"

    class Headed(FunctionCaptioner):
        def own_scorer(self, caption, score="logodds", merge_words=False):
            return ("head", caption)

    cached = with_cache(Headed(fn), CaptionCache(tmp_path), "test/ns")
    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    assert cached.caption([a, b, a]) == ["mean 0", "mean 200", "mean 0"]
    n = len(calls)
    again = with_cache(FunctionCaptioner(fn), CaptionCache(tmp_path), "test/ns")  # a new run, same folder
    assert again.caption([b, a]) == ["mean 200", "mean 0"] and len(calls) == n
    assert cached.own_scorer("x") == ("head", "x")
    assert not hasattr(again, "own_scorer")  # no head is made up for a captioner without one


def test_hf_and_surrogate_specs(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import tiny_models as tm
    finally:
        sys.path.pop(0)
    from capshap.captioners.hf import HFCaptioner
    from capshap.scoring.own import OwnHeadFactory
    from capshap.captioners.cache import CachingCaptioner
    from capshap.scoring.surrogate import SurrogateFactory

    cap = build_captioner(f"hf:{tm.vit_gpt2_dir()}", None, device="cpu")
    assert isinstance(cap, HFCaptioner)
    assert isinstance(build_scorer("auto", cap), OwnHeadFactory)
    cached = build_captioner(f"hf:{tm.vit_gpt2_dir()}", None, device="cpu", cache_dir=tmp_path)
    assert isinstance(cached, CachingCaptioner) and isinstance(build_scorer("own", cached), OwnHeadFactory)
    sur = build_scorer(f"surrogate:{tm.bart_dir()}", cap, None, device="cpu")
    assert isinstance(sur, SurrogateFactory)
    with pytest.raises(SpecError, match="--captioner hf:"):
        build_captioner(f"hf:{tmp_path / 'no_model_here'}")


def test_evaluate_wiring(run, tmp_path, capsys):
    _, out = run
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--boxes", str(tmp_path / "boxes.json")]) == 2
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"2.jpg": [[40, 60, 200, 170]]}))
    code = main(["evaluate", str(out), "--boxes", str(boxes), "--steps", "3", "--random-orders", "1",
                 "--out", str(tmp_path / "m"), "-q"])
    assert code == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert {r["image"] for r in metrics["rows"]} == {"1.jpg", "2.jpg", "3.jpg", "4.jpg"}
    assert (tmp_path / "m" / "metrics.md").exists()


def test_parse_generate():
    got = parse_generate("max_new_tokens=20, num_beams=3,do_sample=false,temperature=0.7,eos=none,x=ab")
    assert got == {"max_new_tokens": 20, "num_beams": 3, "do_sample": False, "temperature": 0.7,
                   "eos": None, "x": "ab"}
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_generate("max_new_tokens")


def test_hf_captioner_through_the_cli_with_generation_settings(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import tiny_models as tm
    finally:
        sys.path.pop(0)
    folder = tm.vit_gpt2_dir()
    out = tmp_path / "hf"
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(out), "--captioner", f"hf:{folder}",
                 "--device", "cpu", "--generate", "min_new_tokens=3,max_new_tokens=5", "--max-evals", "8",
                 "--batch-size", "8", "--mask", "blur(9,9)", "-q"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "2.json").read_text())
    assert meta["params"]["generate_kwargs"] == {"min_new_tokens": 3, "max_new_tokens": 5}
    assert meta["caption"].strip() and len(meta["tokens"]) >= 1
    exp = Explanation.load(out / "2.npz")
    np.testing.assert_allclose(exp.values.astype(np.float64).sum((0, 1)), exp.outputs - exp.base_values,
                               rtol=1e-4, atol=1e-4)
    # someone else's hf run is not rebuilt unless asked: the refusal names the flag
    assert main(["evaluate", str(out), "--steps", "2", "--random-orders", "1", "--device", "cpu", "-q"]) == 2
    assert "--trust-run" in capsys.readouterr().err
    # with trust, evaluate rebuilds the same captioner (with its generation settings) from the run
    assert main(["evaluate", str(out), "--steps", "2", "--random-orders", "1", "--device", "cpu", "-q",
                 "--trust-run"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert len(rows) == len(meta["tokens"])
