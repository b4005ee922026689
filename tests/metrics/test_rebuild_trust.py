"""evaluate_run rebuilds only what the user names: a received run folder must not make it
download models, contact servers or use generation settings on its own say-so."""

import dataclasses
import json

import numpy as np
import pytest
from metrics_helpers import Counting

from capshap import FunctionScorer
from capshap.captioners import CAPTIONERS
from capshap.interfaces import Captioner
from capshap.metrics import RebuildRefused, deletion_insertion, evaluate_run
from capshap.metrics.rebuild import plan_recipe
from capshap.scoring import SCORERS
from capshap.settings import Settings

SPEC = "hf:someone/some-model"
KW = {"steps": 4, "random_orders": 1}


class SquaresCaptioner(Captioner):
    """A captioner whose own head is the two-squares scorer."""

    def caption(self, images):
        return ["cat dog"] * len(images)

    def own_scorer(self, caption, score="logodds", merge_words=False):
        return FunctionScorer(Counting(), ["cat", "dog"], caption=caption)


@pytest.fixture
def swap():
    """swap(registry, name, factory): replace a registered factory for one test."""
    swapped = []

    def do(registry, name, factory):
        entry = registry.get(name)
        registry.unregister(name)
        registry.register(name, factory, help=entry.help, options=entry.options, aliases=entry.aliases,
                          needs_arg=entry.needs_arg)
        swapped.append((registry, entry))

    yield do
    for registry, entry in reversed(swapped):
        registry.unregister(entry.name)
        registry.register(entry.name, entry.factory, help=entry.help, options=entry.options,
                          aliases=entry.aliases, needs_arg=entry.needs_arg)


def _forbidden(arg, options, context):
    pytest.fail(f"a captioner was built from the run's files: {arg!r}")


def _recording(made):
    def make(arg, options, context):
        made.append((arg, dict(options), {k: context.get(k) for k in ("device", "prompt", "generate", "cache_dir")}))
        return SquaresCaptioner()

    return make


def _run(tmp_path, exp, names=("pets",), **settings):
    run = tmp_path / "run"
    settings.setdefault("mask", "0")  # the fill the explanation was made with
    for n in names:
        dataclasses.replace(exp, settings=Settings(**settings)).save(run / n)
    return run


def test_stored_hf_spec_is_refused_without_building_anything(exp, tmp_path, swap):
    swap(CAPTIONERS, "hf", _forbidden)
    run = _run(tmp_path, exp, names=("pets", "sub/other"), captioner=SPEC, scorer="auto",
               prompt="Describe:", generate={"max_new_tokens": 5})
    with pytest.raises(RebuildRefused) as info:
        evaluate_run(run, **KW)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    # the first line alone (what a CLI may print) says what happened and what to pass
    assert msg.splitlines()[0] == ("evaluate built nothing: 2 saved explanations name models or settings that "
                                   "you did not give; to rebuild them pass --trust-run")
    for part in (SPEC, "and runs this Hugging Face model", "prompt 'Describe:'", "generation options", "max_new_tokens",
                 "2 files (pets, sub/other)", "to rebuild: --trust-run"):
        assert part in msg, part
    # without the stored extras, naming the captioner is the other way
    run_plain = _run(tmp_path / "plain", exp, captioner=SPEC, scorer="auto")
    with pytest.raises(RebuildRefused, match="to rebuild: --captioner hf:someone/some-model\n"):
        evaluate_run(run_plain, **KW)
    # naming the captioner is not enough while the run stored a prompt and generation settings
    with pytest.raises(RebuildRefused) as info:
        evaluate_run(run, captioner=SPEC, **KW)
    assert "prompt 'Describe:'" in str(info.value) and "to rebuild: --trust-run\n" in str(info.value)
    assert "captioner 'hf:" not in str(info.value)  # the named captioner is not listed again
    # nor is another captioner: its scores would not measure this explanation
    with pytest.raises(RebuildRefused, match="explained with captioner 'hf:someone/some-model', not 'hf:someone/other'"):
        evaluate_run(run, captioner="hf:someone/other", trust_run=True, **KW)
    assert not (run / "metrics.json").exists()


def test_a_0_1_file_naming_hf_in_its_params_is_refused(exp, tmp_path, swap):
    swap(CAPTIONERS, "hf", _forbidden)
    old = dataclasses.replace(exp, settings=None, params={**exp.params, "captioner_spec": SPEC,
                                                           "generate_kwargs": {"num_beams": 64}})
    old.save(tmp_path / "run" / "pets")
    meta = json.loads((tmp_path / "run" / "pets.json").read_text())
    assert meta["settings"] is None  # as 0.1 wrote it: the spec lives in params only
    with pytest.raises(RebuildRefused, match="num_beams"):
        evaluate_run(tmp_path / "run", **KW)


def test_trusted_run_builds_through_the_registry_once(exp, tmp_path, swap):
    made = []
    swap(CAPTIONERS, "hf", _recording(made))
    run = _run(tmp_path, exp, names=("pets", "again"), captioner=SPEC, scorer="auto",
               prompt="Describe:", generate={"max_new_tokens": 5}, device="cuda:7", cache_dir="/their/cache")
    res = evaluate_run(run, trust_run=True, device="cpu", **KW)
    # built once for both files, with the run's prompt and generation settings but the user's
    # device and cache folder (never the paths the file names)
    assert made == [("someone/some-model", {}, {"device": "cpu", "prompt": "Describe:",
                                                 "generate": {"max_new_tokens": 5}, "cache_dir": None})]
    assert res["failures"] == [] and len(res["rows"]) == 4
    direct = deletion_insertion(exp, FunctionScorer(Counting(), ["cat", "dog"]), **KW)
    assert [r["deletion_auc"] for r in res["rows"][:2]] == [t["deletion_auc"] for t in direct["tokens"]]
    assert res["settings"]["trust_run"] is True


def test_named_captioner_is_built_with_default_settings(exp, tmp_path, swap):
    made = []
    swap(CAPTIONERS, "hf", _recording(made))
    run = _run(tmp_path, exp, captioner=SPEC, scorer="own")
    res = evaluate_run(run, captioner=" hf:someone/some-model ", scorer="own", **KW)
    assert made == [("someone/some-model", {}, {"device": None, "prompt": None, "generate": None, "cache_dir": None})]
    assert len(res["rows"]) == 2
    # stored kind options (here a revision to download) also need trust
    run2 = tmp_path / "r2"
    dataclasses.replace(exp, settings=Settings(captioner=SPEC, captioner_options={"revision": "x"})).save(run2 / "a")
    with pytest.raises(RebuildRefused, match="captioner options"):
        evaluate_run(run2, captioner=SPEC, **KW)
    assert len(made) == 1


def test_builtin_needs_no_flag_but_a_stored_surrogate_does(exp, tmp_path, swap):
    made = []
    swap(CAPTIONERS, "builtin", _recording(made))
    run = _run(tmp_path, exp, captioner="builtin", scorer="auto")
    res = evaluate_run(run, **KW)
    assert len(made) == 1 and len(res["rows"]) == 2
    made.clear()

    def no_lm(arg, options, context):
        pytest.fail("the surrogate language model was built")

    swap(SCORERS, "surrogate", no_lm)
    run2 = tmp_path / "r2"
    dataclasses.replace(exp, settings=Settings(captioner="builtin", scorer="surrogate:someone/lm")).save(run2 / "a")
    with pytest.raises(RebuildRefused, match="--scorer surrogate:someone/lm"):
        evaluate_run(run2, **KW)
    assert made == []  # refused before the captioner was built


def test_refusal_text_is_safe_for_a_terminal_and_a_shell(exp, tmp_path, swap):
    swap(CAPTIONERS, "hf", _forbidden)
    run = _run(tmp_path, exp, captioner="hf:evil\x1b]0;owned\x07; rm -rf ~")
    with pytest.raises(RebuildRefused) as info:
        evaluate_run(run, **KW)
    msg = str(info.value)
    assert "\x1b" not in msg and "\x07" not in msg
    assert "--captioner 'hf:evil\\x1b]0;owned\\x07; rm -rf ~'" in msg  # quoted for the shell


def test_argument_checks(exp, tmp_path):
    run = _run(tmp_path, exp, captioner="builtin")
    sc = FunctionScorer(Counting(), ["cat", "dog"])
    with pytest.raises(ValueError, match="not both"):
        evaluate_run(run, scorer_factory=sc, trust_run=True)
    with pytest.raises(ValueError, match="captioner=''"):
        evaluate_run(run, captioner="")
    with pytest.raises(ValueError, match="trust_run"):
        evaluate_run(run, trust_run="yes")
    # without a stored or named captioner there is nothing to rebuild
    with pytest.raises(ValueError, match="no captioner spec"):
        plan_recipe(Settings(captioner=None))
    assert plan_recipe(Settings(captioner=None), captioner="builtin").captioner == "builtin"
    assert np.isfinite(evaluate_run(run, scorer_factory=sc, **KW)["rows"][0]["deletion_auc"])


def test_a_file_with_mistyped_settings_is_skipped_not_fatal(exp, tmp_path, swap):
    made = []
    swap(CAPTIONERS, "builtin", _recording(made))
    run = _run(tmp_path, exp, names=("good",), captioner="builtin")
    dataclasses.replace(exp, settings=Settings(captioner="builtin", captioner_options=["crop_fraction"])).save(run / "bad")
    res = evaluate_run(run, **KW)
    assert [f["file"] for f in res["failures"]] == ["bad"]
    assert "settings.captioner_options is a list, expected dict" in res["failures"][0]["reason"]
    assert {r["file"] for r in res["rows"]} == {"good"} and len(made) == 1
