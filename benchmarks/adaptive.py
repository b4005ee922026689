"""Fewer model calls for the same explanation? The adaptive budget against fixed budgets.

For every image, the built-in captioner's own head explains its caption

1. once at a high budget (``--reference``, 3000 evaluations by default): the reference;
2. at each fixed budget of ``--budgets`` (50 100 200 300): shap's way, the whole budget;
3. with the adaptive rule at each tolerance of ``--tolerances`` (``tolerance=t``, capped at
   ``--cap`` evaluations): the expansion stops once the largest split left is below t times
   the largest word total.

Same tree (the axis tree at the loaded size), fill, batch size (50) and seed throughout.
Masks are rendered at the captioner's input size (``--render-size auto``, 224x224 for the
built-in captioner; at 224 px this is the full size) so that a 3000-evaluation reference is
affordable on a CPU. Within one image every coalition is scored once and shared by all
settings (a cache keyed by coalition; each setting's "calls" are the evaluations its own
engine asked for, cached or not).

Error against the reference, for each word with credit (template words score a constant and
get zero values; words of one label share one score and count once):

* ``corr``: Pearson correlation of the per-pixel values;
* ``top10``: the share of the reference's top-10 % pixels (most positive values) that are in
  the setting's top 10 % (ties broken by one seeded key);
* ``dDel`` / ``dIns``: |AUC - reference AUC| of the normalised deletion and insertion curves
  (capshap.metrics.deletion_insertion, the explanation's fill, at the loaded size), next to
  ``rnd``, the standard deviation of the AUCs of random 8x8-block orders: the noise scale.

Printed: one row per image, then per setting the medians over images (the curve of error
against calls, sorted by calls), for the examples and photos and, apart, for hold-out images
(``--holdout``: scikit-image's camera, coins, hubble_deep_field and immunohistochemistry)
that were not looked at while choosing the tolerances. The goal line says whether some
tolerance reaches fixed 300's median correlation and top-10 % overlap with at most half its
median calls.

    python benchmarks/adaptive.py                                   # everything: 28 images, hours on a busy 2-core CPU
    python benchmarks/adaptive.py --reference 2000 --budgets 50 100 150 200 300 \
        --tolerances 0.1 0.05 0.03 0.02 0.01 0.005 --steps 8 --random-orders 2 --holdout-sizes 224 \
        --json adaptive.json                                        # the run in the README (cut short: --resume)
    python benchmarks/adaptive.py --examples 2 --photos 0 --holdout 0 --sizes 224 --reference 1000
    python benchmarks/adaptive.py --tiny                            # seconds: the test suite's smoke run

``--tiny`` is ``--examples 1 --photos 0 --holdout 0 --sizes 32 --reference 40 --budgets 10 20
--tolerances 0.05 --cap 40 --steps 2 --random-orders 1``. ``--json PATH`` also writes every
number.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

logger = logging.getLogger("adaptive")

HOLDOUT = ("camera", "coins", "hubble_deep_field", "immunohistochemistry")
TINY = ["--examples", "1", "--photos", "0", "--holdout", "0", "--sizes", "32", "--reference", "40",
        "--budgets", "10", "20", "--tolerances", "0.05", "--cap", "40", "--steps", "2", "--random-orders", "1"]


# ------------------------------------------------------------------ a coalition cache


class CachedMasker:
    """A masker that renders nothing itself: it notes the coalitions asked for, and
    :class:`CachedScorer` scores the ones not seen before (rendered by the real masker)."""

    def __init__(self, masker):
        self.inner = masker
        self.tree = masker.tree
        self.image = masker.image
        self.fill = masker.fill
        self.render_size = masker.render_size
        self.pending: list[tuple[int, ...]] = []

    def render(self, coalitions):
        self.pending = list(coalitions)
        return np.zeros((len(self.pending), 1, 1, 3), np.uint8)  # placeholders; never scored


class CachedScorer:
    """Scores the coalitions :class:`CachedMasker` noted: each coalition once per image."""

    def __init__(self, scorer, masker: CachedMasker):
        self.inner, self.masker = scorer, masker
        self.tokens, self.caption = scorer.tokens, scorer.caption
        self.cache: dict[tuple[int, ...], np.ndarray] = {}
        self.model_evals = 0

    def score_with_captions(self, _placeholders):
        cs = self.masker.pending
        new = list(dict.fromkeys(c for c in cs if c not in self.cache))
        if new:
            out = np.asarray(self.inner.score(self.masker.inner.render(new)), dtype=np.float64)
            self.cache.update(zip(new, out))
            self.model_evals += len(new)
        return np.stack([self.cache[c] for c in cs]), None

    def score(self, images):  # pragma: no cover - the engine calls score_with_captions
        raise RuntimeError("CachedScorer scores coalitions, not images")


class Columns:
    """The bound scorer with its output columns picked (and repeated): ``score(images)
    -> (N, len(cols))``; lets one deletion/insertion pass serve every setting."""

    def __init__(self, scorer, cols, names):
        self.inner, self.cols, self.tokens, self.caption = scorer, list(cols), list(names), scorer.caption

    def score(self, images):
        return np.asarray(self.inner.score(images))[:, self.cols]


# ------------------------------------------------------------------ images


def load_images(args):
    """[(set, name, (H, W, 3) uint8)] for every size: examples, photos, hold-out images."""
    import capshap
    from photos import NAMES, _raw

    examples = sorted(glob.glob(os.path.join(ROOT, "examples", "*.jpg")))[: args.examples]
    ex = [(os.path.basename(p), p, args.sizes) for p in examples]
    ph = [(n, n, args.sizes) for n in NAMES[: args.photos]]
    ho = [(n, n, args.holdout_sizes or args.sizes) for n in HOLDOUT[: args.holdout]]
    # interleaved (an example, a photo at every size, a hold-out image, the next example, ...)
    # so that a run cut short still covers every kind of image and size
    order = []
    for i in range(max(len(ex), len(ph), len(ho))):
        order += [("main", *ex[i])] if i < len(ex) else []
        order += [("main", *ph[i])] if i < len(ph) else []
        order += [("holdout", *ho[i])] if i < len(ho) else []
    out, seen = [], set()
    for group, name, src, sizes in order:
        raw = src if group == "main" and name.endswith(".jpg") else (_raw(src) if group == "main" else _holdout(src))
        for size in sizes:
            img = capshap.load_image(raw, max_side=size, name=name)
            key = (name, img.shape)
            if key in seen:  # e.g. a 224 px example at --sizes 500: the same image again
                logger.info("%s is %dx%d at max side %d too; counted once", name, img.shape[1], img.shape[0], size)
                continue
            seen.add(key)
            out.append((group, name, img))
    return out


def _holdout(name):
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


# ------------------------------------------------------------------ metrics


def credited_words(values, tokens):
    """Indices of words with credit, one per distinct value map."""
    keep = []
    for t in range(values.shape[-1]):
        v = values[..., t]
        if not np.any(v):
            continue
        if any(np.array_equal(v, values[..., k]) for k in keep):
            continue
        keep.append(t)
    return keep


def top_share(v, ref, tie, frac=0.1):
    """Share of ref's top-``frac`` pixels that are in v's top ``frac``."""
    k = max(1, int(math.ceil(frac * v.size)))
    a = np.lexsort((tie, -v))[:k]
    b = np.lexsort((tie, -ref))[:k]
    return len(np.intersect1d(a, b, assume_unique=True)) / k


def corr(a, b):
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def measure(group, name, img, cap, args):
    """Every setting on one image: [{setting, calls, corr, top10, dDel, dIns, rnd...}]."""
    import capshap
    from capshap.masking import Masker, render_shape
    from capshap.metrics import deletion_insertion
    from capshap.regions import make_tree
    from capshap.run import explain_image

    t0 = time.perf_counter()
    caption = cap.caption([img])[0]
    bound = capshap.OwnHead(cap).bind(caption)
    tree = make_tree("axis", img)
    real = Masker(img, tree, args.mask, render_size=render_shape(img.shape, args.render_size, cap))
    masker = CachedMasker(real)
    scorer = CachedScorer(bound, masker)

    def run(max_evals, tolerance=0.0):
        logger.info("%s: max_evals %d tolerance %g (%d model evaluations so far)", name, max_evals, tolerance,
                    scorer.model_evals)
        return explain_image(img, scorer, masker=masker, mask=args.mask, max_evals=max_evals,
                             batch_size=args.batch_size, seed=0, tolerance=tolerance, name=name)

    settings = [("reference", run(args.reference))]
    settings += [(f"fixed {b}", run(b)) for b in args.budgets]
    settings += [(f"tol {t:g}", run(args.cap, t)) for t in args.tolerances]
    ref = settings[0][1]
    words = credited_words(ref.values, ref.tokens)
    H, W = img.shape[:2]
    tie = np.random.default_rng(0).random(H * W)

    # one deletion/insertion pass for all settings x words (random orders shared)
    cols, names, vals = [], [], []
    for label, exp in settings:
        for t in words:
            cols.append(t)
            names.append(f"{label}|{ref.tokens[t]}")
            vals.append(exp.values[..., t])
    curves = {}
    if words:
        combo = capshap.Explanation(values=np.stack(vals, -1).astype(np.float32), base_values=np.zeros(len(cols)),
                                    outputs=np.zeros(len(cols)), tokens=names, caption=caption, image=img,
                                    params={"mask": args.mask}, tree=tree, name=name)
        m = deletion_insertion(combo, Columns(bound, cols, names), mask=args.mask, steps=args.steps,
                               random_orders=args.random_orders, batch_size=args.batch_size)
        curves = {r["token"]: r for r in m["tokens"]}

    rows = []
    for label, exp in settings:
        c, o, dd, di, rd, ri = [], [], [], [], [], []
        for t in words:
            v, r = exp.values[..., t].ravel().astype(np.float64), ref.values[..., t].ravel().astype(np.float64)
            c.append(corr(v, r))
            o.append(top_share(v, r, tie))
            me, rf = curves[f"{label}|{ref.tokens[t]}"], curves[f"reference|{ref.tokens[t]}"]
            dd.append(abs(me["deletion_auc"] - rf["deletion_auc"]))
            di.append(abs(me["insertion_auc"] - rf["insertion_auc"]))
            rd.append(rf["random_deletion_auc_std"])
            ri.append(rf["random_insertion_auc_std"])
        nanmean = lambda a: float(np.nanmean(a)) if a and np.isfinite(a).any() else float("nan")  # noqa: E731
        rows.append(dict(group=group, image=name, size=f"{W}x{H}", caption=caption, setting=label,
                         calls=int(exp.n_evals), stopped=exp.info.get("stopped"),
                         words=[ref.tokens[t] for t in words], corr=nanmean(c), top10=nanmean(o),
                         dDel=nanmean(dd), dIns=nanmean(di), rndDel=nanmean(rd), rndIns=nanmean(ri)))
    logger.info("%s %dx%d: %d settings, %d model evaluations, %.0f s", name, W, H, len(settings),
                scorer.model_evals, time.perf_counter() - t0)
    return rows


# ------------------------------------------------------------------ printing


def _f(x, nd=3):
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def print_images(rows, labels):
    head = "| image | size | label | " + " | ".join(f"{lb} calls/corr" for lb in labels if lb != "reference") + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    by = {}
    for r in rows:
        by.setdefault((r["image"], r["size"]), {})[r["setting"]] = r
    for (image, size), s in by.items():
        label = s["reference"]["caption"].split(" of ", 1)[-1]
        cells = [f"{s[lb]['calls']}/{_f(s[lb]['corr'], 2)}" for lb in labels if lb != "reference"]
        print(f"| {image} | {size} | {label} | " + " | ".join(cells) + " |")


def summarize(rows, labels):
    """Per setting: medians over images."""
    out = []
    for lb in labels:
        rs = [r for r in rows if r["setting"] == lb]
        med = lambda k: statistics.median([r[k] for r in rs if np.isfinite(r[k])] or [float("nan")])  # noqa: E731
        out.append(dict(setting=lb, n=len(rs), calls=statistics.median(r["calls"] for r in rs),
                        calls_max=max(r["calls"] for r in rs), corr=med("corr"), corr_min=min(r["corr"] for r in rs),
                        top10=med("top10"), dDel=med("dDel"), dIns=med("dIns"), rndDel=med("rndDel"),
                        rndIns=med("rndIns"), stopped=sum(r["stopped"] == "tolerance" for r in rs)))
    return out


def print_curve(summary):
    print("| setting | images | median calls (max) | median corr (min) | median top-10 % overlap "
          "| median dAUC del / ins | random-order std del / ins | stopped by tolerance |")
    print("|---|---|---|---|---|---|---|---|")
    for s in sorted(summary, key=lambda s: (s["setting"] == "reference", s["calls"])):
        print(f"| {s['setting']} | {s['n']} | {s['calls']:g} ({s['calls_max']}) | {_f(s['corr'])} ({_f(s['corr_min'])}) "
              f"| {_f(s['top10'])} | {_f(s['dDel'])} / {_f(s['dIns'])} | {_f(s['rndDel'])} / {_f(s['rndIns'])} "
              f"| {s['stopped'] if s['setting'].startswith('tol') else '-'} |")


def goal(summary, against="fixed 300"):
    """Lines saying which tolerances match ``against`` with at most half its median calls."""
    base = next((s for s in summary if s["setting"] == against), None)
    if base is None:
        return [f"goal: no '{against}' setting to compare with"]
    lines = []
    for s in summary:
        if not s["setting"].startswith("tol"):
            continue
        ok_err = s["corr"] >= base["corr"] and s["top10"] >= base["top10"]
        ok_calls = s["calls"] <= base["calls"] / 2
        lines.append(f"goal {s['setting']}: median calls {s['calls']:g} vs {base['calls']:g} "
                     f"({s['calls'] / base['calls']:.2f}x; {'<=' if ok_calls else '>'} half), corr {_f(s['corr'])} vs "
                     f"{_f(base['corr'])}, top-10 % {_f(s['top10'])} vs {_f(base['top10'])}: "
                     f"{'REACHED' if ok_err and ok_calls else 'not reached'}")
    return lines


def equal_error(rows, labels):
    """Per tolerance, image by image: the fixed budget that reaches the same correlation
    (interpolated between the fixed budgets, on their running best), and the median ratio
    of the adaptive calls to it. Images whose adaptive correlation lies outside the fixed
    budgets' range are counted apart."""
    by = {}
    for r in rows:
        by.setdefault((r["image"], r["size"]), {})[r["setting"]] = r
    fixed = [lb for lb in labels if lb.startswith("fixed")]
    lines = []
    for lb in labels:
        if not lb.startswith("tol"):
            continue
        ratios, below, above = [], 0, 0
        for s in by.values():
            calls = np.array([s[f]["calls"] for f in fixed], float)
            best = np.maximum.accumulate([s[f]["corr"] for f in fixed])
            c = s[lb]["corr"]
            if c < best[0]:
                below += 1
            elif c > best[-1]:
                above += 1
            else:
                ratios.append(s[lb]["calls"] / float(np.interp(c, best, calls)))
        med = f"{statistics.median(ratios):.2f}" if ratios else "nan"
        lines.append(f"equal error {lb}: median adaptive calls / fixed calls at the same correlation {med} "
                     f"over {len(ratios)} images ({below} below {fixed[0]}'s correlation, {above} above {fixed[-1]}'s)")
    return lines


# ------------------------------------------------------------------ main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (see the docstring)")
    ap.add_argument("--examples", type=int, default=4, help="how many of examples/*.jpg (0: none)")
    ap.add_argument("--photos", type=int, default=8, help="how many of the 8 photos of benchmarks/photos.py")
    ap.add_argument("--holdout", type=int, default=4, help=f"how many hold-out images ({', '.join(HOLDOUT)})")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 500], help="max sides the images are loaded at")
    ap.add_argument("--holdout-sizes", type=int, nargs="+", default=None,
                    help="max sides for the hold-out images (default: --sizes)")
    ap.add_argument("--reference", type=int, default=3000, help="evaluations of the reference explanation")
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 300], help="fixed budgets")
    ap.add_argument("--tolerances", type=float, nargs="+", default=[0.05, 0.02, 0.01, 0.005],
                    help="tolerances of the adaptive rule")
    ap.add_argument("--cap", type=int, default=1000, help="max_evals of the adaptive runs")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--mask", default="inpaint_ns")
    ap.add_argument("--render-size", default="auto", help="full, auto or N (see capshap explain --render-size)")
    ap.add_argument("--steps", type=int, default=10, help="deletion/insertion curve points")
    ap.add_argument("--random-orders", type=int, default=3)
    ap.add_argument("--device", default=None, help="torch device of the captioner (default: CPU)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every row and summary here")
    ap.add_argument("--resume", default=None, metavar="PATH",
                    help="a --json file of a cut-short run with the same settings: keep its rows, skip its images")
    ap.add_argument("--from-json", default=None, metavar="PATH",
                    help="print the tables of a (possibly partial) --json file and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each image's time to stderr")
    args = ap.parse_args(TINY + list(argv) if "--tiny" in (argv or []) else argv)
    if args.render_size not in ("full", "auto"):
        args.render_size = int(args.render_size)
    for name in ("reference", "cap"):
        if getattr(args, name) < max(args.budgets):
            ap.error(f"--{name} {getattr(args, name)} is below the largest fixed budget {max(args.budgets)}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        report(saved["rows"], saved["labels"], saved["budgets"])
        return 0
    import torch

    from capshap.captioners.builtin import BuiltinCaptioner

    cap = BuiltinCaptioner(batch_size=args.batch_size, device=args.device or "cpu")
    labels = ["reference"] + [f"fixed {b}" for b in args.budgets] + [f"tol {t:g}" for t in args.tolerances]
    print(f"# adaptive budget vs fixed budgets: builtin captioner, own head, reference {args.reference} evaluations, "
          f"adaptive cap {args.cap}, batch {args.batch_size}, mask {args.mask}, render size {args.render_size}, "
          f"deletion/insertion {args.steps} steps x {args.random_orders} random orders; {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    images = load_images(args)
    rows = []
    if args.resume:  # rows of a cut-short run with the same settings: those images are done
        with open(args.resume) as f:
            rows = [r for r in json.load(f)["rows"]]
    done = {(r["image"], r["size"]) for r in rows}
    for group, name, img in images:
        if (name, f"{img.shape[1]}x{img.shape[0]}") in done:
            continue
        new = measure(group, name, img, cap, args)
        rows += new
        print(f"{name} {new[0]['size']} ({group}): {new[0]['caption']!r}; " + ", ".join(
            f"{r['setting']} {r['calls']}/{_f(r['corr'], 2)}" for r in new[1:]), flush=True)
        if args.json:  # rewritten after every image, so a cut-short run keeps what it did
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "labels": labels, "budgets": args.budgets, "rows": rows}, f,
                          indent=1, default=float)
    report(rows, labels, args.budgets)
    print(f"\n{time.perf_counter() - t0:.0f} s in all", flush=True)
    return 0


def report(rows, labels, budgets):
    """Print the per-image tables, the curves and the goal lines of each image group."""
    for group in ("main", "holdout"):
        rs = [r for r in rows if r["group"] == group]
        if not rs:
            continue
        title = "examples and photos" if group == "main" else "hold-out images (not used to choose tolerances)"
        print(f"\n## {title}: calls / per-word correlation with the reference, per image\n")
        print_images(rs, labels)
        summary = summarize(rs, labels)
        print(f"\n## {title}: error against calls (medians over {summary[0]['n']} images)\n")
        print_curve(summary)
        print()
        for line in goal(summary, f"fixed {max(budgets)}"):
            print(line)
        print()
        for line in equal_error(rs, labels):
            print(line)


if __name__ == "__main__":
    sys.exit(main())
