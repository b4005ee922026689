"""Run the bad-inputs corpus (tests/bad_inputs.py) through capshap's loaders and print a table.

    PYTHONPATH=src python benchmarks/bad_inputs.py

For each case: ``load_image`` on the file, the file inside a folder with good images through
``iter_images``, and for the damaged explanations ``Explanation.load``. Columns:

* tried: cases run;
* clear error: refused with ImageError / ValueError (or FileNotFoundError) whose message starts
  with the file's path;
* traceback: any other exception, a hang (10 s) or a memory error: a bug;
* data lost: good images missing from ``iter_images`` next to the bad one, or a damaged
  explanation that loaded anyway (an inconsistent explanation would be drawn);
* ok loads: awkward but valid images that loaded as (H, W, 3) uint8.

The process limits its own address space to 4 GiB and each case to 10 s, so a regression
fails a row instead of the machine.
"""

from __future__ import annotations

import logging
import resource
import shutil
import signal
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bad_inputs as B  # noqa: E402
from capshap import Explanation, ImageError, iter_images, load_image  # noqa: E402


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang("no answer in 10 s")


def _run(fn):
    signal.alarm(10)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
        return out, None, len(caught)
    except BaseException as e:  # noqa: BLE001 - we classify everything
        return None, e, 0
    finally:
        signal.alarm(0)


def main() -> int:
    resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _alarm)
    logging.disable(logging.WARNING)  # the loaders log every refusal; the table says it
    rows = []  # (category, case, outcome, detail)
    tmp = Path(tempfile.mkdtemp(prefix="capshap-bad-"))
    try:
        for i, (name, (maker, expect)) in enumerate(B.IMAGE_CASES.items()):
            if name == "unreadable (mode 000)" and B.is_root():
                continue
            d = tmp / f"img{i}"
            p = B.make_image(name, d)
            arr, err, n_warn = _run(lambda: load_image(p))
            rows.append(("load_image", name, _classify(p, expect, arr, err, n_warn), _short(err)))
            # the same file next to two good ones, through iter_images
            for g in ("good1.png", "good2.jpg"):
                (d / g).write_bytes(B._png_bytes() if g.endswith("png") else B._jpeg_bytes())
            recs, err, n_warn = _run(lambda: list(iter_images(d)))
            if err is not None:
                outcome = "traceback"
            else:
                good = {r.name for r in recs if r.ok}
                lost = not {"good1.png", "good2.jpg"} <= good
                bad = [r for r in recs if r.path == p or r.name == p.name]
                if lost:
                    outcome = "data lost"
                elif expect == "error":
                    outcome = "clear error" if (not bad or all(not r.ok and str(r.error).startswith(str(p)) for r in bad)) else "loaded (wrong)"
                else:
                    outcome = "ok load" if bad and all(r.ok for r in bad) else "traceback"
                if n_warn:
                    outcome += " +raw warning"
            rows.append(("iter_images", name, outcome, _short(err)))
            B.chmod_back(d)
        base = tmp / "base"
        base.mkdir()
        for seg in (False, True):
            _, npz, js = B.make_explanation(base, f"e{int(seg)}", segments=seg)
            for i, (name, damage) in enumerate(B.EXPLANATION_CASES.items()):
                d = tmp / f"exp{int(seg)}_{i}"
                d.mkdir()
                n2, j2 = d / "e.npz", d / "e.json"
                shutil.copy(npz, n2)
                shutil.copy(js, j2)
                damage(n2, j2)
                exp, err, n_warn = _run(lambda: Explanation.load(n2))
                if err is None:
                    outcome = "data lost"  # a damaged file loaded: would be drawn as is
                elif isinstance(err, (ValueError, FileNotFoundError)) and str(err).startswith((str(n2), str(j2))):
                    outcome = "clear error"
                else:
                    outcome = "traceback"
                rows.append((f"Explanation.load ({'segments' if seg else 'axis'} tree)", name, outcome, _short(err)))
    finally:
        B.chmod_back(tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[1]) for r in rows)
    if "-v" in sys.argv:
        for cat, name, outcome, detail in rows:
            print(f"{cat:38s} {name:{width}s} {outcome:14s} {detail}")
        print()
    summary: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cat, _, outcome, _ in rows:
        summary[cat]["tried"] += 1
        summary[cat][outcome.split(" +")[0]] += 1
        if "+raw warning" in outcome:
            summary[cat]["raw warning"] += 1
    cols = ["tried", "clear error", "ok load", "traceback", "data lost", "loaded (wrong)", "raw warning"]
    print(f"| {'category':38s} | " + " | ".join(cols) + " |")
    print("|" + "-" * 40 + "|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")
    for cat, c in summary.items():
        print(f"| {cat:38s} | " + " | ".join(f"{c.get(k, 0):>{len(k)}d}" for k in cols) + " |")
    failures = [r for r in rows if r[2] not in ("clear error", "ok load")]
    for cat, name, outcome, detail in failures:
        print(f"FAIL {cat}: {name}: {outcome} {detail}")
    return 1 if failures else 0


def _classify(p, expect, arr, err, n_warn) -> str:
    if err is None:
        out = "ok load" if expect == "ok" else "loaded (wrong)"
    elif isinstance(err, ImageError) and str(err).startswith(str(p)):
        out = "clear error" if expect == "error" else "traceback"
    else:
        out = "traceback"
    return out + (" +raw warning" if n_warn else "")


def _short(err) -> str:
    return "" if err is None else f"{type(err).__name__}: {str(err)[-110:]}"


if __name__ == "__main__":
    sys.exit(main())
