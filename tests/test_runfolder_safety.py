"""The run folder owns its names and trusts nothing it finds: reserved and colliding names,
folders holding the user's files, the lock and the manifest as links, FIFOs, huge or deep
files, manifest records of the wrong shape, temporaries that are not provably the run's,
.npz/.json pairs of two runs, ``--overwrite``'s summary, ``show`` and ``evaluate`` next to
the user's files. Every refusal is one line with the README's exit code."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
from run_folder_helpers import FAST, counting  # noqa: F401 - counting is a fixture
from run_folder_helpers import colour_image as _img

from capshap import Explanation
from capshap.cli import main
from capshap.runfolder import (
    LOCK,
    MANIFEST,
    Namespace,
    RunFolder,
    RunFolderError,
    check_manifest,
    check_stem,
    list_inputs,
    written_by_capshap,
)
from capshap.settings import Settings


def _run(*args: str) -> int:
    return main(["explain", *args, "--captioner", "counting", *FAST])


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def _done_run(tmp_path: Path, names=("a.png", "b.png")) -> tuple[Path, Path]:
    src, out = tmp_path / "in", tmp_path / "out"
    for i, n in enumerate(names):
        _img(src / n, ((200, 30, 30), (30, 200, 30), (30, 30, 200))[i % 3], i)
    assert _run(str(src), "--out", str(out)) == 0
    return src, out


# ------------------------------------------------------------------------- namespace


def test_namespace_reserves_run_files_and_sees_collisions_between_derived_names(tmp_path):
    ns = Namespace(tmp_path)
    for stem in ("metrics", "summary", "index", "index-2", "manifest", "METRICS", "sub/.hidden"):
        assert ns.conflict(stem) is not None, stem
    assert ns.conflict("x") is None
    ns.claim("x")
    assert ns.conflict("x_grid") == "x_grid.png"  # x's grid plot
    assert ns.conflict("X") is not None  # case-insensitive
    ns.claim("a/b")
    assert ns.conflict("a.png/c") is None and ns.conflict("a") is None
    ns.claim("a")
    (tmp_path / "user.png").write_bytes(b"a photo")
    assert ns.conflict("user") == "user.png"  # a file the folder did not write
    assert Namespace(tmp_path, {"user.png"}).conflict("user") is None  # ... unless the manifest owns it
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert ns.conflict("link/x") == "link"  # never write through a linked folder


@pytest.mark.parametrize("stem, ok", [
    ("cat", True), ("sub/cat.v1", True), ("../../outside/secret", False), ("/etc/passwd", False),
    ("a/../b", False), (".hidden", False), ("manifest", False), ("summary", False), ("index-3", False),
    ("", False), (5, False), (None, False), ("a\\b", False), ("x" * 300, False),
])
def test_check_stem(stem, ok):
    assert (check_stem(stem) is None) is ok


def test_every_input_gets_names_no_other_input_or_run_file_takes(tmp_path, counting):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, n in enumerate(["metrics.png", "summary.png", "manifest.png", "index-2.png", "x.png", "x_grid.jpg"]):
        _img(src / n, (200, 30, 30), i)
    assert _run(str(src), "--out", str(out), "--grid", "2") == 0
    recs = _manifest(out)["images"].values()
    files = [f.lower() for rec in recs for f in rec["files"]]
    assert len(files) == len(set(files)) == 6 * 4  # no file written for two images
    assert not any(Namespace.reserved(f) for f in files)
    assert "x_grid.png" in files and sum(f.startswith("x_grid") for f in files) == 1 + 4  # x's, x_grid_*'s
    stems = {rec["name"]: rec["stem"] for rec in recs}
    assert stems["x.png"] == "x" and stems["x_grid.jpg"].startswith("x_grid_")  # tagged: x's grid took x_grid.png
    assert stems["metrics.png"] != "metrics" and stems["summary.png"] != "summary"
    # evaluate writes metrics.json next to them: no explanation is overwritten
    for rec in recs:
        Explanation.load(out / rec["stem"])


# ---------------------------------------------------------------- the user's folder


def test_folder_of_user_files_is_refused_naming_one_and_adopt_never_overwrites(tmp_path, counting, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "s0.jpg", (200, 30, 30))
    out.mkdir()
    photo = _img(out / "s0.png", (1, 2, 3))
    (out / "s1.json").write_text('{"mine": 1}')
    (out / ".tmp-notes.json").write_text("user's")
    (out / ".capshap-tmp-user").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert _run(str(src), "--out", str(out)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--adopt" in line and ("s0.png" in line or "s1.json" in line or ".tmp-notes.json" in line)
    assert counting.calls == 0
    assert _run(str(src), "--out", str(out), "--adopt") == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before  # nothing overwritten
    assert (out / ".capshap-tmp-user").is_dir()  # not provably the run's: left alone
    (rec,) = _manifest(out)["images"].values()
    assert rec["stem"] != "s0" and (out / f"{rec['stem']}.png").is_file() and photo.read_bytes() == before["s0.png"]
    # now a capshap folder: a re-run needs no flag, and the user's files are still never written
    counting.calls = 0
    assert _run(str(src), "--out", str(out)) == 0 and counting.calls == 0


def test_adopt_still_refuses_a_run_level_name_held_by_a_user_file(tmp_path, counting, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "a.png", (200, 30, 30))
    out.mkdir()
    (out / "index.html").write_text("<p>my page</p>")
    assert _run(str(src), "--out", str(out), "--adopt") == 2
    assert "index.html" in _one_line(capsys.readouterr().err)
    assert (out / "index.html").read_text() == "<p>my page</p>" and counting.calls == 0


def test_only_provably_own_temporaries_are_cleaned(tmp_path, counting):
    src, out = _done_run(tmp_path)
    run_id = _manifest(out)["runs"][-1]
    ours = out / f".capshap-tmp-{run_id}-abc"
    ours.mkdir()
    (ours / "x.npz").write_bytes(b"half")
    theirs = [out / ".capshap-tmp-0123456789abcdef-x", out / ".tmp-user.json", out / ".capshap-tmp-keep"]
    for p in theirs:
        p.write_text("not capshap's")
    _img(src / "c.png", (30, 30, 200), 3)
    assert _run(str(src), "--out", str(out)) == 0
    assert not ours.exists() and all(p.read_text() == "not capshap's" for p in theirs)


# ----------------------------------------------------------------------------- lock


def test_lock_as_symlink_is_refused_and_the_target_untouched(tmp_path, counting, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "a.png", (200, 30, 30))
    out.mkdir()
    important = tmp_path / "important.txt"
    important.write_text("keep me")
    (out / LOCK).symlink_to(important)
    assert _run(str(src), "--out", str(out)) == 2
    assert "symbolic link" in _one_line(capsys.readouterr().err)
    assert important.read_text() == "keep me" and counting.calls == 0
    (out / LOCK).unlink()
    (out / LOCK).symlink_to(tmp_path / "nowhere")  # dangling: never created through
    assert _run(str(src), "--out", str(out)) == 2
    assert not (tmp_path / "nowhere").exists()


def test_lock_as_fifo_is_refused_without_blocking(tmp_path, counting, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "a.png", (200, 30, 30))
    out.mkdir()
    os.mkfifo(out / LOCK)
    assert _run(str(src), "--out", str(out)) == 2
    assert "not a regular file" in _one_line(capsys.readouterr().err)


def test_full_disk_at_the_lock_is_one_line_and_leaves_no_lock(tmp_path, counting, monkeypatch, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "a.png", (200, 30, 30))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    assert _run(str(src), "--out", str(out)) == 2
    assert "No space left on device" in _one_line(capsys.readouterr().err)
    assert not (out / LOCK).exists() and counting.calls == 0


# ------------------------------------------------------------------------- manifest


def _forged(out: Path, edit) -> None:
    m = _manifest(out)
    edit(m)
    (out / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("edit, field", [
    (lambda m: next(iter(m["images"].values())).update(files=5), "files"),
    (lambda m: next(iter(m["images"].values())).update(files=[None]), "files[0]"),
    (lambda m: next(iter(m["images"].values())).update(files=["../../elsewhere.npz"]), "files[0]"),
    (lambda m: next(iter(m["images"].values())).update(evaluations="lots"), "evaluations"),
    (lambda m: next(iter(m["images"].values())).update(seconds="abc"), "seconds"),
    (lambda m: next(iter(m["images"].values())).update(seconds=float("nan")), "seconds"),
    (lambda m: next(iter(m["images"].values())).update(stem="../../outside/secret"), "stem"),
    (lambda m: next(iter(m["images"].values())).update(stem="/etc/passwd"), "stem"),
    (lambda m: next(iter(m["images"].values())).update(stem="summary"), "stem"),
    (lambda m: next(iter(m["images"].values())).update(status=["done"]), "status"),
    (lambda m: next(iter(m["images"].values())).update(links={"PNG": "/etc/passwd"}), "links"),
    (lambda m: [r.update(stem="same", files=[], links=None) for r in m["images"].values()], "stem"),
    (lambda m: m.update(images=[1, 2]), "images"),
    (lambda m: m["images"].update(x=None), "images"),
    (lambda m: m.update(settings="s"), "settings"),
    (lambda m: m.update(runs=["../x"]), "runs"),
    (lambda m: m.update(version=99), "version"),
])
def test_malformed_manifest_records_are_one_line_naming_file_and_field(tmp_path, counting, capsys, edit, field):
    src, out = _done_run(tmp_path)
    _forged(out, edit)
    capsys.readouterr()
    counting.calls = 0
    assert _run(str(src), "--out", str(out)) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(out / MANIFEST) in line and "field '" in line and field.split("[")[0] in line, line
    assert counting.calls == 0


def test_check_manifest_accepts_what_a_run_writes(tmp_path, counting):
    _, out = _done_run(tmp_path)
    m = check_manifest(_manifest(out))
    assert len(m.images) == 2 and len(m.runs) == 1 and m.owned == []


@pytest.mark.parametrize("kind", ["fifo", "deep", "huge", "link"])
def test_hostile_manifest_files_fail_fast_in_one_line(tmp_path, counting, capsys, kind):
    src, out = _done_run(tmp_path)
    mf = out / MANIFEST
    mf.unlink()
    if kind == "fifo":
        os.mkfifo(mf)
    elif kind == "deep":
        mf.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge":
        with open(mf, "wb") as f:
            f.truncate(200 * 1024**2)  # sparse: 200 MB claimed, nothing read
    else:
        secret = tmp_path / "secret.json"
        secret.write_text('{"format": "capshap.run"}')
        mf.symlink_to(secret)
    capsys.readouterr()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(_run(str(src), "--out", str(out))), daemon=True)
    t.start()
    t.join(60)  # a bound, not a timing assertion: a blocking read would never return
    assert result == [2], "explain blocked on the manifest"
    line = _one_line(capsys.readouterr().err)
    assert str(mf) in line and {"fifo": "regular file", "deep": "nested", "huge": "limit",
                                "link": "symbolic link"}[kind] in line


# ---------------------------------------------------------------------------- pairs


def test_a_pair_of_two_runs_is_refused_on_load_and_redone_on_resume(tmp_path, counting, capsys):
    src, out = _done_run(tmp_path)
    other = tmp_path / "other"  # the same images with another budget (a run of the same settings writes
    assert main(["explain", str(src), "--out", str(other), "--captioner", "counting", *FAST,  # identical bytes)
                 "--max-evals", "6"]) == 0
    rec = _manifest(out)["images"][str(src / "a.png")]
    assert json.loads((out / "a.json").read_text())["pair"] == {"run": rec["run"], "npz_sha256": rec["npz_sha256"]}
    (out / "a.npz").write_bytes((other / "a.npz").read_bytes())  # another run's arrays next to this .json
    with pytest.raises(ValueError, match="pair.npz_sha256"):
        Explanation.load(out / "a")
    counting.calls = 0
    assert _run(str(src), "--out", str(out)) == 0 and counting.calls > 0  # a redone, b kept
    again = counting.calls
    Explanation.load(out / "a")
    # the .json of the other run (a consistent pair there) next to this run's record: redone too
    (out / "b.json").write_bytes((other / "b.json").read_bytes())
    (out / "b.npz").write_bytes((other / "b.npz").read_bytes())
    Explanation.load(out / "b")  # a pair in itself ...
    counting.calls = 0
    assert _run(str(src), "--out", str(out)) == 0 and 0 < counting.calls <= again  # ... but not this folder's
    assert json.loads((out / "b.json").read_text())["pair"]["run"] == _manifest(out)["runs"][-1]


def test_a_save_killed_between_renames_is_redone_under_the_same_names(tmp_path, counting, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    _img(src / "a.png", (200, 30, 30))
    real = os.replace
    n = []

    def die_after_first(a, b, *args, **kw):
        if str(b).endswith("a.json"):
            n.append(b)
            raise SystemExit(137)  # stands in for SIGKILL: nothing after runs
        return real(a, b, *args, **kw)

    monkeypatch.setattr(os, "replace", die_after_first)
    with pytest.raises(SystemExit):
        _run(str(src), "--out", str(out))
    monkeypatch.setattr(os, "replace", real)
    assert n and (out / "a.npz").exists() and _manifest(out)["images"][str(src / "a.png")]["status"] == "saving"
    assert _run(str(src), "--out", str(out)) == 0
    (rec,) = _manifest(out)["images"].values()
    assert rec["stem"] == "a" and rec["status"] == "done" and Explanation.load(out / "a").caption == "a red thing"


# ----------------------------------------------------------------------- overwrite


def test_overwrite_keeps_names_and_removes_the_previous_summary(tmp_path, counting):
    src, out = _done_run(tmp_path)
    assert (out / "summary.json").is_file() and (out / "summary.html").is_file()
    (src / "b.png").unlink()
    assert main(["explain", str(src), "--out", str(out), "--captioner", "counting", *FAST, "--max-evals", "6",
                 "--overwrite"]) == 0
    assert not (out / "summary.json").exists() and not (out / "summary.html").exists()
    m = _manifest(out)
    assert [r["stem"] for r in m["images"].values()] == ["a"] and "b.npz" in m["owned"]
    # b's old files stay the folder's: a later image named b gets its name back
    _img(src / "b.png", (30, 200, 30), 1)
    assert main(["explain", str(src), "--out", str(out), "--captioner", "counting", *FAST, "--max-evals", "6"]) == 0
    assert {r["stem"] for r in _manifest(out)["images"].values()} == {"a", "b"}


# --------------------------------------------------------------- show and evaluate


def test_show_never_draws_over_a_user_file(tmp_path, counting, capsys):
    _, out = _done_run(tmp_path)
    shown = tmp_path / "shown"
    shown.mkdir()
    for s in (".npz", ".json"):
        (shown / f"photo{s}").write_bytes((out / f"a{s}").read_bytes())
    photo = _img(shown / "photo.png", (5, 6, 7))
    before = photo.read_bytes()
    assert main(["show", str(shown / "photo.npz"), "-q"]) == 1
    assert "not written by capshap" in _one_line(capsys.readouterr().err) and photo.read_bytes() == before
    photo.unlink()
    assert main(["show", str(shown / "photo.npz"), "-q"]) == 0  # free: drawn
    assert written_by_capshap(photo)
    assert main(["show", str(shown / "photo.npz"), "-q"]) == 0  # its own drawing: redrawn


def test_evaluate_with_deep_json_and_a_user_metrics_file(tmp_path, counting, capsys):
    _, out = _done_run(tmp_path)
    (out / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (out / "deep.npz").write_bytes(b"PK")
    (out / "metrics.md").write_text("my notes\n")
    capsys.readouterr()
    code = main(["evaluate", str(out), "--trust-run", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "metrics.md" in err
    assert (out / "metrics.md").read_text() == "my notes\n" and not (out / "metrics.json").exists()
    (out / "metrics.md").unlink()
    assert main(["evaluate", str(out), "--trust-run", "-q"]) == 1  # deep.json skipped, the rest measured
    err = capsys.readouterr().err
    assert "Traceback" not in err and "deep" in err and "nested" in err
    assert written_by_capshap(out / "metrics.json") and written_by_capshap(out / "metrics.md")


def test_open_refuses_what_it_cannot_own_before_any_work(tmp_path):
    _img(tmp_path / "in" / "a.png", (200, 30, 30))
    files = list_inputs([tmp_path / "in"])
    s = Settings(captioner=None, max_evals=4)
    (tmp_path / "target").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunFolderError, match="symbolic link"):
        RunFolder.open(tmp_path / "out", s, files)
    rf = RunFolder.open(tmp_path / "fresh", s, files)
    assert rf.todo() == files and len(rf.run_id) == 16
    rf.close()
    assert not (tmp_path / "fresh").exists()  # recorded nothing: removed again


# ---------------------------------------------------------------------------- SIGKILL

_COLOUR_RUN = r'''
import sys
import numpy as np
import capshap
from capshap.cli import main

def colour(img):
    m = img.reshape(-1, 3).mean(0)
    return ("a red thing", "a green thing", "a blue thing")[int(np.argmax(m))]

capshap.CAPTIONERS.register("colour", lambda arg, options, context: capshap.FunctionCaptioner(colour, name="colour"),
                            help="colour words (a test)")
sys.exit(main(sys.argv[1:]))
'''


def test_sigkill_while_saving_then_resume_leaves_every_image_done_once(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        _img(src / f"{i}.png", ((200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90))[i], i)
    cmd = [sys.executable, "-c", _COLOUR_RUN, "explain", str(src), "--out", str(out), "--captioner", "colour", *FAST]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    kills = 0
    for k in range(8):  # kill the k-th save of each session as soon as its temporary folder appears
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        seen: set[str] = set()
        for _ in range(1200):  # polls of 0.05 s at most: a bound, not a timing assertion
            if proc.poll() is not None:
                break
            seen |= {p.name for p in out.glob(".capshap-tmp-*") if p.is_dir() and "probe" not in p.name}
            if len(seen) > k % 3:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.05)
        proc.wait(60)
    assert kills >= 4, "never caught a save in progress: the test did not test anything"
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    m = _manifest(out)
    assert len(m["images"]) == 4 and {r["status"] for r in m["images"].values()} == {"done"}
    stems = [r["stem"] for r in m["images"].values()]
    assert sorted(stems) == ["0", "1", "2", "3"]  # redone under the same names, no orphans renamed around
    for rec in m["images"].values():
        Explanation.load(out / rec["stem"])  # checks the pair's hash
        pair = json.loads((out / f"{rec['stem']}.json").read_text())["pair"]
        assert pair == {"run": rec["run"], "npz_sha256": rec["npz_sha256"]}
    assert not [p for p in out.iterdir() if p.name.startswith(".capshap-tmp-") and p.name[13:29] in m["runs"]]
