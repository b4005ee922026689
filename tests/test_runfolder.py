"""The run folder of ``capshap explain``: names, input safety, locking, unwritable
folders, interrupts (Ctrl-C, SIGTERM), long names, resuming and the manifest."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image
from run_folder_helpers import FAST, counting  # noqa: F401 - counting is a fixture
from run_folder_helpers import colour_image as _img

from capshap import Explanation
from capshap.atomic import file_mode
from capshap.cli import main
from capshap.runfolder import NAME_MAX, base_stem, fit_name, list_inputs
from capshap.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POLL_LIMIT = 600  # polls of 0.1 s at most: a bound, not a timing assertion


def _run(counting_args: list[str]) -> int:
    return main(["explain", *counting_args, "--captioner", "counting", *FAST])


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _no_temporaries(out: Path) -> None:
    left = [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".capshap-tmp-"))]
    assert left == []


def _items_in_page(out: Path) -> list[str]:
    return re.findall(r'<section class="item" id="item-\d+" data-name="([^"]*)"', (out / "index.html").read_text())


# ---------------------------------------------------------------------------- names


def test_base_stem_and_fit_name():
    assert base_stem("cat.v1.jpg") == "cat.v1" and base_stem("sub/cat.v2.png") == "sub/cat.v2"
    assert base_stem("../x.jpg") == "x" and base_stem(".hidden.jpg") == "hidden"
    long = "é" * 200  # 400 bytes
    short = fit_name(long)
    assert len(short.encode()) <= NAME_MAX - len("_grid.png") and short == fit_name(long)
    assert short != fit_name("é" * 199 + "e")  # the hash keeps cut names apart


def test_dotted_and_same_names_get_distinct_stable_names(tmp_path, counting):
    a, b = tmp_path / "a", tmp_path / "b"
    for i, p in enumerate([a / "cat.v1.jpg", a / "cat.v2.jpg", a / "1.png", b / "1.png"]):
        _img(p, (200, 30, 30), seed=i)
    out = tmp_path / "out"
    assert _run([str(a), str(b), "--out", str(out)]) == 0
    m = _manifest(out)
    stems = {rec["source"]: rec["stem"] for rec in m["images"].values()}
    assert len(set(stems.values())) == 4
    assert stems[str(a / "cat.v1.jpg")] == "cat.v1" and stems[str(a / "cat.v2.jpg")] == "cat.v2"
    for source, stem in stems.items():
        saved = Explanation.load(out / stem)
        assert saved.params["source"] == source  # each file holds its own image
        assert all((out / (stem + s)).is_file() for s in (".npz", ".json", ".png"))
        # written through private temporary files, yet with the usual permissions
        assert {(out / (stem + s)).stat().st_mode & 0o777 for s in (".npz", ".json")} == {file_mode()}
    # a second run (b given first this time) keeps every name
    assert _run([str(b), str(a), "--out", str(out)]) == 0
    assert {rec["source"]: rec["stem"] for rec in _manifest(out)["images"].values()} == stems


def test_out_equal_to_input_folder_never_overwrites_an_input(tmp_path, counting, capsys):
    src = tmp_path / "in"
    _img(src / "x.png", (200, 30, 30), 1)
    _img(src / "x.jpg", (30, 200, 30), 2)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    assert main(["explain", str(src), "--out", str(src), "--captioner", "counting", *FAST[:-1]]) == 0
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir() if p.name in before}
    assert after == before
    m = _manifest(src)
    stems = {rec["name"]: rec["stem"] for rec in m["images"].values()}
    assert set(stems) == {"x.png", "x.jpg"} and len(set(stems.values())) == 2
    for stem in stems.values():
        assert (src / f"{stem}.png").resolve() not in {src / "x.png", src / "x.jpg"}
        assert Explanation.load(src / stem).caption in ("a red thing", "a green thing")
    assert "would overwrite an input file" in capsys.readouterr().err
    # a re-run does not take its own heatmaps for inputs, and does nothing new
    n = counting.calls
    assert _run([str(src), "--out", str(src)]) == 0
    assert counting.calls == n and len(_manifest(src)["images"]) == 2


def test_long_file_name_is_shortened_before_the_work(tmp_path, counting):
    name = "n" * 250 + ".png"  # 254 bytes: NAME.png fits, NAME_grid.png would not
    _img(tmp_path / "in" / name, (200, 30, 30))
    out = tmp_path / "out"
    assert _run([str(tmp_path / "in"), "--out", str(out), "--grid", "2"]) == 0
    (rec,) = _manifest(out)["images"].values()
    assert len((rec["stem"] + "_grid.png").encode()) <= NAME_MAX and rec["stem"].startswith("n" * 200)
    assert (out / (rec["stem"] + "_grid.png")).is_file()
    assert rec["stem"] == fit_name("n" * 250)  # deterministic: the next run finds it


# --------------------------------------------------------------- unwritable, failed saves


def test_unwritable_out_is_refused_before_any_work(tmp_path, counting, capsys):
    _img(tmp_path / "in" / "a.png", (200, 30, 30))
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert _run([str(tmp_path / "in"), "--out", str(blocker / "run")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err and counting.calls == 0


def test_a_failed_save_names_the_file_cleans_up_and_goes_on(tmp_path, counting, monkeypatch, capsys):
    src = tmp_path / "in"
    _img(src / "a.png", (200, 30, 30))
    _img(src / "b.png", (30, 200, 30))
    _img(src / "c.png", (200, 30, 30), 3)
    out = tmp_path / "out"
    real = os.replace

    def full_disk(a, b, *args, **kw):
        if str(b).endswith(os.sep + "b.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b, *args, **kw)

    monkeypatch.setattr(os, "replace", full_disk)
    assert _run([str(src), "--out", str(out)]) == 1
    monkeypatch.setattr(os, "replace", real)
    err = capsys.readouterr().err
    assert f"could not write {out / 'b.json'}: No space left on device" in err
    _no_temporaries(out)
    assert not any((out / f"b{s}").exists() for s in (".npz", ".json", ".png"))  # all or nothing
    m = _manifest(out)["images"]
    assert m[str(src / "b.png")]["status"] == "failed" and "No space left" in m[str(src / "b.png")]["error"]
    assert {m[str(src / n)]["status"] for n in ("a.png", "c.png")} == {"done"}
    assert _items_in_page(out) == ["a.png", "c.png"]
    # the next run redoes only the failed image
    counting.calls = 0
    assert _run([str(src), "--out", str(out)]) == 0
    assert 0 < counting.calls and all(Explanation.load(out / n).caption for n in "abc")
    assert _items_in_page(out) == ["a.png", "b.png", "c.png"]
    calls_b = counting.calls
    counting.calls = 0
    assert _run([str(src / "b.png"), "--out", str(out)]) == 0 and counting.calls == 0 < calls_b


# -------------------------------------------------------------------------- resuming


def test_resume_skips_done_refuses_other_settings_and_writes_the_manifest(tmp_path, counting, capsys):
    src = tmp_path / "in"
    _img(src / "a.png", (200, 30, 30))
    _img(src / "b.png", (30, 200, 30))
    out = tmp_path / "out"
    assert _run([str(src), "--out", str(out)]) == 0
    first = counting.calls
    m = _manifest(out)
    from capshap import __version__

    assert m["format"] == "capshap.run" and m["capshap"] == __version__
    s = Settings.from_dict(m["settings"])
    assert s.captioner == "counting" and s.max_evals == 4 and s.mask == "0"
    for name in ("a.png", "b.png"):
        rec = m["images"][str(src / name)]
        assert rec["status"] == "done" and rec["error"] is None and rec["name"] == name
        assert rec["files"] == [rec["stem"] + x for x in (".npz", ".json", ".png")]
        assert rec["started"] <= rec["finished"]
    capsys.readouterr()
    # the same command again: nothing explained, everything listed
    counting.calls = 0
    assert main(["explain", str(src), "--out", str(out), "--captioner", "counting", *FAST[:-1]]) == 0
    assert counting.calls == 0
    assert "2 of 2 images explained (2 by an earlier run, skipped)" in capsys.readouterr().out
    assert _items_in_page(out) == ["a.png", "b.png"]
    # other settings: refused, naming what differs, before any work
    args = [str(src), "--out", str(out), "--captioner", "counting", *FAST, "--max-evals", "6"]
    assert main(["explain", *args]) == 2
    msg = capsys.readouterr().err
    assert "--max-evals (folder: 4, now: 6)" in msg and "--overwrite" in msg and counting.calls == 0
    assert main(["explain", *args, "--overwrite"]) == 0 and counting.calls > first - 1
    assert _manifest(out)["settings"]["max_evals"] == 6
    # a damaged done image (its npz gone) is redone
    (out / "a.npz").unlink()
    counting.calls = 0
    assert main(["explain", *args]) == 0 and counting.calls > 0 and (out / "a.npz").is_file()


def test_list_inputs_deduplicates_and_keeps_order(tmp_path):
    _img(tmp_path / "d" / "img10.png", (1, 2, 3))
    _img(tmp_path / "d" / "img2.png", (1, 2, 3))
    files = list_inputs([tmp_path / "d", tmp_path / "d" / "img2.png"])
    assert [f.name for f in files] == ["img2.png", "img10.png"]


# ------------------------------------------------------------------------ interrupts


def test_ctrl_c_leaves_complete_outputs_and_exit_130(tmp_path, counting, capsys):
    src = tmp_path / "in"
    _img(src / "1.png", (200, 30, 30))
    _img(src / "2.png", (30, 30, 200))
    _img(src / "3.png", (200, 30, 30), 3)
    out = tmp_path / "out"
    counting.on_blue = KeyboardInterrupt()
    assert main(["explain", str(src), "--out", str(out), "--captioner", "counting", *FAST[:-1]]) == 130
    cap = capsys.readouterr()
    assert "1 of 3 images explained (2 not reached)" in cap.out and "interrupted" in cap.err
    assert _items_in_page(out) == ["1.png"]
    m = _manifest(out)["images"]
    assert list(m) == [str(src / "1.png")] and m[str(src / "1.png")]["status"] == "done"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "1.json", "1.npz", "1.png", "index.html", "manifest.json"]
    _no_temporaries(out)
    counting.on_blue = None
    assert _run([str(src), "--out", str(out)]) == 0
    assert _items_in_page(out) == ["1.png", "2.png", "3.png"]


_HELPER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from capshap import FunctionCaptioner
    from capshap.captioners import CAPTIONERS
    from capshap.cli import main

    release = Path(sys.argv[1])

    def slow(img):
        m = img.reshape(-1, 3).mean(0)
        if m[2] > m[0]:  # blue: wait (bounded) until the test says go
            for _ in range(1200):
                if release.exists():
                    break
                time.sleep(0.05)
            return "a blue thing"
        return "a red thing"

    CAPTIONERS.register("slow", lambda arg, options, context: FunctionCaptioner(slow, name="slow"), help="slow")
    sys.exit(main(["explain", *sys.argv[2:], "--captioner", "slow"]))
""")


def _start(tmp_path: Path, src: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "helper.py"
    script.write_text(_HELPER)
    release = tmp_path / "release"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, str(script), str(release), str(src), "--out", str(out), *FAST],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, release


def _wait_for(cond, proc: subprocess.Popen) -> None:
    for _ in range(POLL_LIMIT):
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.returncode} {proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run never got there")


def _first_done(out: Path) -> bool:
    try:
        return any(r["status"] == "done" for r in _manifest(out)["images"].values())
    except (OSError, ValueError):
        return False


def test_sigterm_stops_with_143_and_a_consistent_folder(tmp_path):
    src = tmp_path / "in"
    _img(src / "1.png", (200, 30, 30))
    _img(src / "2.png", (30, 30, 200))
    out = tmp_path / "out"
    proc, _ = _start(tmp_path, src, out)
    try:
        _wait_for(lambda: _first_done(out), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert _items_in_page(out) == ["1.png"]
    assert [r["name"] for r in _manifest(out)["images"].values()] == ["1.png"]
    assert Explanation.load(out / "1").caption == "a red thing" and (out / "1.png").is_file()
    _no_temporaries(out)


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, counting, capsys):
    src = tmp_path / "in"
    _img(src / "1.png", (200, 30, 30))
    _img(src / "2.png", (30, 30, 200))
    out = tmp_path / "out"
    proc, release = _start(tmp_path, src, out)
    try:
        _wait_for(lambda: _first_done(out), proc)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".npz", ".json", ".png")}
        assert _run([str(src), "--out", str(out)]) == 2
        msg = capsys.readouterr().err
        assert f"{out} is in use by another capshap run (process {proc.pid})" in msg and "--wait-lock" in msg
        assert counting.calls == 0
        release.touch()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    for name, data in before.items():
        if name != "manifest.json":
            assert (out / name).read_bytes() == data
    assert _items_in_page(out) == ["1.png", "2.png"]
    # with the lock free again, a run goes ahead (other captioner: only with --overwrite)
    assert _run([str(src), "--out", str(out), "--wait-lock", "--overwrite"]) == 0 and counting.calls > 0


# ---------------------------------------------------------------------- Explanation.save


def test_explanation_save_keeps_dotted_names_and_leaves_no_temporaries(tmp_path, monkeypatch):
    from capshap.regions.axis import axis_aligned
    from capshap.run import explain_image

    class Const:
        caption, tokens = "a b", ["a", "b"]

        def score_with_captions(self, images):
            return np.asarray(images, np.float64).mean(axis=(1, 2, 3))[:, None].repeat(2, 1), None

    img = np.asarray(_img(tmp_path / "i.png", (90, 90, 90)) and Image.open(tmp_path / "i.png"))
    exp = explain_image(img, Const(), mask="0", max_evals=4, batch_size=4, tree=axis_aligned(48, 48))
    exp.save(tmp_path / "cat.v1")
    exp.save(tmp_path / "cat.v2")
    assert {p.name for p in tmp_path.glob("cat*")} == {"cat.v1.npz", "cat.v1.json", "cat.v2.npz", "cat.v2.json"}
    np.testing.assert_array_equal(Explanation.load(tmp_path / "cat.v1").values, exp.values)

    def broken(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="No space"):
        exp.save(tmp_path / "dog")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ctrl_c_while_saving_counts_the_image_as_not_explained(tmp_path, counting, monkeypatch, capsys):
    from capshap.viz import plots

    src = tmp_path / "in"
    _img(src / "1.png", (200, 30, 30))
    _img(src / "2.png", (30, 30, 200))
    out = tmp_path / "out"
    real = plots.save_figure
    seen = []

    def stop_on_second(fig, path, *a, **k):
        seen.append(path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(fig, path, *a, **k)

    monkeypatch.setattr(plots, "save_figure", stop_on_second)
    assert main(["explain", str(src), "--out", str(out), "--captioner", "counting", *FAST[:-1]]) == 130
    out_text = capsys.readouterr().out
    assert "1 of 2 images explained" in out_text and "FAILED: interrupted before its files were written" in out_text
    assert not any((out / f"2{s}").exists() for s in (".npz", ".json", ".png"))
    _no_temporaries(out)
    assert _items_in_page(out) == ["1.png"] and list(_manifest(out)["images"]) == [str(src / "1.png")]


def test_wait_lock_waits_for_the_holder_and_locks_the_file_in_place(tmp_path):
    import threading

    from capshap.runfolder import LOCK, RunFolder, RunFolderError

    _img(tmp_path / "in" / "a.png", (200, 30, 30))
    files = list_inputs([tmp_path / "in"])
    s = Settings(captioner=None, max_evals=4)
    first = RunFolder.open(tmp_path / "out", s, files)
    with pytest.raises(RunFolderError, match=f"in use by another capshap run \\(process {os.getpid()}\\)"):
        RunFolder.open(tmp_path / "out", s, files)
    waiting, got = threading.Event(), []

    def second() -> None:
        got.append(RunFolder.open(tmp_path / "out", s, files, wait_lock=True, on_wait=lambda msg: waiting.set()))

    t = threading.Thread(target=second, daemon=True)
    t.start()
    assert waiting.wait(60)
    first.close()  # recorded nothing: removes its lock file; the waiter must lock a file in place
    t.join(60)
    assert got and (tmp_path / "out" / LOCK).read_text() == str(os.getpid())
    with pytest.raises(RunFolderError, match="in use"):
        RunFolder.open(tmp_path / "out", s, files)
    got[0].close()
