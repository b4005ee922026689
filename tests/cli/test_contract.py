"""The contract between ``capshap explain``'s options, Settings, the engine and the record.

One row per option: a non-default value, where it must arrive (a Settings field or a run
folder option) and with what value. The tests check that

* every option of ``capshap explain`` has a row, and every Settings field is reachable from
  an option or is listed as API-only (a new option or field without a row fails);
* each row's value reaches Settings (or the folder options) through the CLI's own parsing;
* a run with the non-default values records them in the saved JSON and the manifest, and
  changes what the engine does where it should (``--contrast`` explains log p(caption) -
  log p(TEXT), checked against an independent scoring of the same coalitions);
* settings the engine cannot run exit 2 before any image is captioned.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from capshap import Settings
from capshap.cli import build_parser, main
from capshap.cli.explain import COMMAND_ONLY, CONVERTED, FOLDER_OF, SETTING_OF, folder_from_args, settings_from_args

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SMALL = ["--max-evals", "12", "--batch-size", "12"]

#: option -> (extra argv giving it a non-default value, {field: expected value}).
#: Settings fields are plain names; run-folder options are "folder.NAME".
ROWS: dict[str, tuple[list[str], dict[str, object]]] = {
    "--captioner": (["--captioner", "builtin:2"], {"captioner": "builtin:2"}),
    "--scorer": (["--scorer", "own"], {"scorer": "own"}),
    "--captioner-opt": (["--captioner-opt", "top_k=2"], {"captioner_options": {"top_k": 2}}),
    "--base-url": (["--captioner", "openai:m", "--base-url", "http://127.0.0.1:9/v1"],
                   {"captioner_options": {"base_url": "http://127.0.0.1:9/v1"}}),
    "--scorer-opt": (["--scorer-opt", "score=logprob"], {"scorer_options": {"score": "logprob"}}),
    "--tokens": (["--tokens", "pieces"], {"tokens": "pieces"}),
    "--caption": (["--caption", "a photo of a tabby"], {"caption": "a photo of a tabby"}),
    "--contrast": (["--contrast", "a photo of a goldfinch"], {"contrast": "a photo of a goldfinch"}),
    "--mask": (["--mask", "blur(5,5)"], {"mask": "blur(5,5)"}),
    "--max-evals": (["--max-evals", "17"], {"max_evals": 17}),
    "--tolerance": (["--tolerance", "0.05"], {"tolerance": 0.05}),
    "--batch-size": (["--batch-size", "7"], {"batch_size": 7}),
    "--fixed-context": (["--fixed-context", "0"], {"fixed_context": 0}),
    "--tree": (["--tree", "slic"], {"tree": "slic"}),
    "--segments": (["--segments", "16"], {"n_segments": 16}),
    "--channels": (["--channels"], {"channels": True}),
    "--model-batch-size": (["--model-batch-size", "4"], {"batch_size_model": 4}),
    "--max-side": (["--max-side", "96"], {"max_side": 96}),
    "--no-resize": (["--no-resize"], {"max_side": None}),
    "--render-size": (["--render-size", "48"], {"render_size": 48}),
    "--max-pixels": (["--max-pixels", "123456"], {"max_pixels": 123456}),
    "--seed": (["--seed", "3"], {"seed": 3}),
    "--device": (["--device", "cpu"], {"device": "cpu"}),
    "--generate": (["--generate", "max_new_tokens=5"], {"generate": {"max_new_tokens": 5}}),
    "--prompt": (["--prompt", "a picture of"], {"prompt": "a picture of"}),
    "--cache": (["--cache", "capcache"], {"cache_dir": "capcache"}),
    "--in-flight": (["--in-flight", "2"], {"in_flight": 2}),
    "--runner": (["--runner", "serial"], {"runner": "serial"}),
    "--ray": (["--ray", "127.0.0.1:6379"], {"runner": "ray", "ray_address": "127.0.0.1:6379"}),
    "--workers": (["--ray", "--workers", "3"], {"runner": "ray", "ray_address": None, "workers": 3}),
    "--gpus-per-worker": (["--ray", "--gpus-per-worker", "0.5"], {"gpus_per_worker": 0.5}),
    "--grounded-above": (["--grounded-above", "1.5"], {"grounded_above": 1.5}),
    "--contradicted-below": (["--contradicted-below", "-2"], {"contradicted_below": -2.0}),
    "--grid": (["--grid", "4"], {"folder.grid": 4}),
    "--outline": (["--outline"], {"folder.outline": True}),
    "--no-html": (["--no-html"], {"folder.html": False}),
    "--overwrite": (["--overwrite"], {"folder.overwrite": True}),
    "--adopt": (["--adopt"], {"folder.adopt": True}),
    "--wait-lock": (["--wait-lock"], {"folder.wait_lock": True}),
}

#: options of the command itself (what to read, where to write, what to print), checked
#: by the CLI tests: they set no setting
COMMAND_OPTIONS = {"--out", "--recursive", "--quiet", "--verbose", "--help"}

#: Settings fields no option sets, and why
API_ONLY: dict[str, str] = {}


def _explain_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices["explain"]


def _parse(argv: list[str]):
    parser, _ = _explain_parser()
    return parser.parse_args(["explain", "x.jpg", *argv])


def _long(action) -> str:
    """The option's long name (``--outline`` for ``--outline/--no-outline``)."""
    positive = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
    return positive[0] if positive else max(action.option_strings, key=len)


def test_every_option_has_a_row_and_a_table():
    _, explain = _explain_parser()
    options = {_long(a): a for a in explain._actions if a.option_strings}
    missing = sorted(set(options) - set(ROWS) - COMMAND_OPTIONS)
    assert not missing, f"options without a contract row: {missing}"
    assert not sorted(set(ROWS) - set(options)), "rows for options that do not exist"
    tabled = set(SETTING_OF) | {d for dests in CONVERTED for d in dests} | set(FOLDER_OF) | set(COMMAND_ONLY)
    untabled = sorted(a.dest for a in explain._actions if a.dest not in tabled and a.dest != "help")
    assert not untabled, f"option dests in no table of capshap.cli.explain: {untabled}"


def test_every_settings_field_is_reachable_from_an_option_or_api_only():
    reached = {f for _, expect in ROWS.values() for f in expect if not f.startswith("folder.")}
    names = {f.name for f in fields(Settings)}
    unreachable = sorted(names - reached - set(API_ONLY))
    assert not unreachable, f"Settings fields no option reaches (add a row, or list them as API-only): {unreachable}"
    assert not (set(API_ONLY) - names), "API_ONLY lists fields that do not exist"


@pytest.mark.parametrize("option", sorted(ROWS))
def test_each_option_reaches_settings_or_the_folder(option):
    argv, expect = ROWS[option]
    args = _parse(argv)
    s = settings_from_args(args)
    folder = folder_from_args(args)
    default_s, default_f = settings_from_args(_parse([])), folder_from_args(_parse([]))
    for key, value in expect.items():
        if key.startswith("folder."):
            got, default = getattr(folder, key[7:]), getattr(default_f, key[7:])
        else:
            got, default = getattr(s, key), getattr(default_s, key)
            if isinstance(got, dict) or hasattr(got, "items"):
                got = dict(got)
        assert got == value, (option, key, got)
        assert got != default or key == "ray_address", f"{option}: the row's value is the default"


# --------------------------------------------------------------------- through a run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One run with many non-default settings: what the JSON and manifest record."""
    out = tmp_path_factory.mktemp("contract")
    argv = ["--scorer", "own", "--scorer-opt", "score=logprob", "--tokens", "pieces", "--mask", "blur(5,5)",
            "--max-evals", "17", "--batch-size", "7", "--fixed-context", "0", "--tree", "slic", "--segments", "16",
            "--max-side", "96", "--render-size", "48", "--max-pixels", "9000000", "--seed", "3",
            "--device", "cpu", "--cache", str(out / "capcache"), "--runner", "serial",
            "--grounded-above", "0.25", "--contradicted-below", "-0.75"]
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(out / "run"), "-q", *argv])
    assert code == 0
    js = json.loads((out / "run" / "2.json").read_text())
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    return settings_from_args(_parse(argv)), js, manifest, out


def test_a_run_records_every_setting_in_the_json_and_the_manifest(recorded):
    s, js, manifest, _ = recorded
    want = s.to_dict()
    assert js["settings"] == want
    assert manifest["settings"] == want
    for key in ("scorer", "tokens", "mask", "max_evals", "batch_size", "fixed_context", "tree", "n_segments",
                "max_side", "render_size", "seed", "device", "runner"):
        assert js["settings"][key] != Settings().to_dict()[key] or key == "runner", key


def test_the_engine_did_what_the_settings_say(recorded):
    _, js, _, out = recorded
    from capshap import Explanation

    exp = Explanation.load(out / "run" / "2")
    # --max-evals 17: splits are evaluated in pairs, so shap's count may end one over
    assert 12 < exp.info["budget_used"] <= 18 and exp.params["tree"] == "slic" and exp.params["mask"] == "blur(5,5)"
    assert max(exp.image.shape[:2]) == 96  # --max-side
    assert exp.grounding_thresholds.grounded_above == 0.25 and exp.grounding_thresholds.contradicted_below == -0.75
    assert js["grounding"]["grounded_above"] == 0.25
    assert exp.params["render_size"] is not None and max(exp.params["render_size"]) == 48
    assert exp.params["fixed_context"] == 0 and exp.params["seed"] == 3
    # score=logprob: scores are log-probabilities (<= 0), not log-odds
    assert np.all(exp.scores[:, [i for i, t in enumerate(exp.tokens) if t not in ("a", "photo", "of")]] <= 1e-9)


def test_contrast_from_the_cli_explains_the_log_probability_difference(tmp_path):
    from capshap import Explanation
    from capshap.captioners.builtin import BuiltinCaptioner
    from capshap.masking import Masker

    contrast = "a photo of a goldfinch"
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(tmp_path), "-q", *SMALL, "--contrast", contrast])
    assert code == 0
    exp = Explanation.load(tmp_path / "2")
    js = json.loads((tmp_path / "2.json").read_text())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert js["settings"]["contrast"] == contrast and manifest["settings"]["contrast"] == contrast
    assert exp.tokens == [f"{exp.caption} | not {contrast}"] and exp.caption != contrast
    # independently: score the same coalitions with the captioner's head, both captions
    cap = BuiltinCaptioner()
    masker = Masker(exp.image, exp.tree, "inpaint_ns")
    batch = masker.render(exp.coalitions)
    ours = cap.own_scorer(exp.caption, score="logprob").score(batch).sum(axis=1)
    theirs = cap.own_scorer(contrast, score="logprob").score(batch).sum(axis=1)
    np.testing.assert_allclose(exp.scores[:, 0], ours - theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exp.outputs[0] - exp.base_values[0], float(exp.pixel_values().sum()), rtol=1e-4)


# --------------------------------------------------------------------- refused early

REFUSED = {
    "max-evals 2": (["--max-evals", "2"], "--max-evals"),
    "seed -5": (["--seed", "-5"], "--seed"),
    "score nonsense": (["--scorer-opt", "score=nonsense"], "nonsense"),
    "no cuda here": (["--device", "cuda"], "--device"),
    "caption off the template": (["--caption", "a bird on a wire"], "--caption"),
    "workers without ray": (["--workers", "3"], "--workers"),
    "gpus without ray": (["--gpus-per-worker", "1"], "--gpus-per-worker"),
    "empty prompt": (["--prompt", ""], "--prompt"),
    "prompt for builtin": (["--prompt", "x"], "prompt"),
    "empty contrast": (["--contrast", ""], "--contrast"),
    "contrast with presence": (["--contrast", "a dog", "--scorer", "presence"], "--contrast"),
    "in flight serial": (["--in-flight", "3", "--runner", "serial"], "--in-flight"),
    "unknown runner": (["--runner", "dask"], "--runner"),
    "thresholds crossed": (["--grounded-above", "-1", "--contradicted-below", "1"], "--contradicted-below"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_settings_the_engine_cannot_run_exit_2_before_any_captioning(case, tmp_path, capsys):
    import torch

    argv, named = REFUSED[case]
    if case == "no cuda here" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    code = main(["explain", str(EXAMPLES / "2.jpg"), "--out", str(out), *SMALL, *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # argparse prints its usage lines first
    assert named in last and "error" in last and "Traceback" not in err, err
    assert not list(out.glob("*.npz")) and not list(out.glob("*.json")), "work was done"


def test_the_api_refuses_the_same_settings_naming_them():
    import capshap

    with pytest.raises(ValueError, match="caption"):
        capshap.explain(np.zeros((32, 32, 3), np.uint8), caption=123)
    with pytest.raises(ValueError, match="seed"):
        capshap.explain(np.zeros((32, 32, 3), np.uint8), seed=-5)
    with pytest.raises(ValueError, match="workers"):
        capshap.explain(np.zeros((32, 32, 3), np.uint8), workers=3)
