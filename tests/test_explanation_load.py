"""Explanation.load on damaged, inconsistent and hostile files: a ValueError naming the file
and the field, nothing allocated from sizes a file claims, nothing drawn inconsistently."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest

import bad_inputs as B
from capshap import Explanation
from capshap import savedfile


@pytest.fixture(scope="module", params=["axis", "slic"])
def saved(request, tmp_path_factory):
    """A valid explanation saved with each kind of tree (rebuilt from the JSON / stored)."""
    d = tmp_path_factory.mktemp(f"saved_{request.param}")
    exp, npz, js = B.make_explanation(d, "base", segments=request.param == "slic")
    return exp, npz, js


def _copy(saved, tmp_path):
    _, npz, js = saved
    n2, j2 = tmp_path / "e.npz", tmp_path / "e.json"
    shutil.copy(npz, n2)
    shutil.copy(js, j2)
    return n2, j2


def test_valid_files_load_back_equal(saved, tmp_path):
    exp, npz, _ = saved
    back = Explanation.load(npz)
    for f in ("values", "base_values", "outputs", "image", "nodes", "node_values", "scores"):
        np.testing.assert_array_equal(getattr(back, f), getattr(exp, f))
    assert back.tokens == exp.tokens and back.coalitions == exp.coalitions
    np.testing.assert_array_equal(back.tree.leaf_index, exp.tree.leaf_index)


@pytest.mark.parametrize("case", list(B.EXPLANATION_CASES))
def test_damaged_file_gives_value_error_naming_file_and_field(case, saved, tmp_path):
    n2, j2 = _copy(saved, tmp_path)
    B.EXPLANATION_CASES[case](n2, j2)
    with pytest.raises(ValueError) as info:
        Explanation.load(n2)
    msg = str(info.value)
    assert msg.startswith((f"{n2}: ", f"{j2}: ")), msg
    # a field is named whenever the file could be parsed at all
    if not any(w in case for w in ("JSON is a list", "syntax", "UTF-8", "npz truncated", "npz is text")):
        assert ": field '" in msg, msg
    assert "Traceback" not in msg and len(msg) < 600


def test_inconsistent_token_count_names_both_sides(saved, tmp_path):
    n2, j2 = _copy(saved, tmp_path)
    B.EXPLANATION_CASES["2 tokens for more value columns"](n2, j2)
    with pytest.raises(ValueError, match=r"field 'values'.*\(16, 20, 5\).*2 tokens"):
        Explanation.load(n2)


def test_claimed_sizes_allocate_nothing(saved, tmp_path, monkeypatch):
    """A JSON tree of 100000x100000 and an npz header of 100000x100000x5 are refused from
    the headers: no tree is built and no array data is read."""
    import capshap.regions.axis as tree_mod

    def forbidden(*a, **k):
        raise AssertionError("built or read something a damaged file claimed")

    for case in ("tree claims 100000x100000", "member header claims 100000x100000x5"):
        sub = tmp_path / str(abs(hash(case)))
        sub.mkdir()
        n2, j2 = _copy(saved, sub)
        B.EXPLANATION_CASES[case](n2, j2)
        with monkeypatch.context() as m:
            m.setattr(tree_mod, "axis_aligned", forbidden)
            m.setattr(np.lib.format, "read_array", forbidden)
            with pytest.raises(ValueError, match="tree.shape|exceed the limit"):
                Explanation.load(n2)


def test_byte_budget(saved, tmp_path):
    exp, npz, _ = saved
    need = sum(a.nbytes for a in (exp.values, exp.image))
    with pytest.raises(ValueError, match="limit of 1,000"):
        Explanation.load(npz, max_bytes=1000)  # the file itself is larger
    size = npz.stat().st_size
    assert need > size  # compressed: the arrays' headers, not the file size, must stop it
    with pytest.raises(ValueError, match=f"exceed the limit of {size:,} bytes"):
        Explanation.load(npz, max_bytes=size)
    assert Explanation.load(npz, max_bytes=need * 4).values.shape == exp.values.shape


def test_special_files_are_refused_without_hanging(saved, tmp_path):
    import os

    n2, j2 = _copy(saved, tmp_path)
    j2.unlink()
    os.mkfifo(j2)
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hung on a FIFO")))
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            Explanation.load(n2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    j2.unlink()
    j2.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        Explanation.load(n2)


def test_legacy_file_without_settings_still_loads(saved, tmp_path):
    n2, j2 = _copy(saved, tmp_path)
    meta = json.loads(j2.read_text())
    meta.pop("settings", None)
    meta.pop("captions", None)
    meta["params"] = {"max_evals": 40, "mask": "inpaint_ns", "tree": "axis"}
    j2.write_text(json.dumps(meta))
    back = Explanation.load(n2)
    assert back.settings is not None and back.settings.max_evals == 40 and back.captions is None


def test_legacy_params_of_wrong_type_are_named(saved, tmp_path):
    n2, j2 = _copy(saved, tmp_path)
    meta = json.loads(j2.read_text())
    meta.pop("settings", None)
    meta["params"] = {"max_evals": "lots"}
    j2.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"e\.json: field 'params': max_evals='lots'"):
        Explanation.load(n2)


def test_check_settings_types_accepts_every_default_and_union():
    from capshap.settings import Settings

    savedfile.check_settings_types(Settings())
    savedfile.check_settings_types(Settings(render_size=64, fixed_context=1, generate={"max_new_tokens": 3}))
    for bad in ({"channels": 1}, {"max_evals": True}, {"render_size": 1.5}, {"captioner_options": []}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            savedfile.check_settings_types(Settings(**bad))


def test_show_reports_each_damaged_file_and_draws_the_good_one(saved, tmp_path, capsys):
    from capshap.cli import main

    cases = ["JSON missing 'caption'", "2 tokens for more value columns", "NaN base values", "complex values",
             "params is a list"]
    files = []
    for i, case in enumerate(cases):
        sub = tmp_path / f"d{i}"
        sub.mkdir()
        n2, j2 = _copy(saved, sub)
        B.EXPLANATION_CASES[case](n2, j2)
        files.append(str(n2))
    good = _copy(saved, tmp_path)[0]
    code = main(["show", *files, str(good), "--out", str(tmp_path / "png"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "png" / "e.png").exists()
    assert len([ln for ln in err.splitlines() if "failed" in ln]) == len(cases)
    assert "Traceback" not in err and "KeyError" not in err and "unpack" not in err
