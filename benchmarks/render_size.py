"""Does rendering masks at the captioner's input size change the answer?

For each of eight 400-500 px photos (benchmarks/photos.py) the built-in captioner's own
head explains its caption twice, with masks rendered at full size (``render_size="full"``,
shap parity) and at the captioner's input size (``"auto"``: 224x224 for the built-in
captioner). Same tree (full resolution), budget and seed. Printed per photo:

* seconds of each run (total, masking, model) and the speed-up;
* per-token Pearson correlation of the pixel values (tokens whose values vary);
* whether the top-ranked region is the same: the region with the largest summed value of
  the label token among the 16 regions four levels below the root (and among the 4 two
  levels below);
* deletion and insertion AUCs (capshap.metrics.deletion_insertion, full-size inpainting,
  the label token) of both runs, their differences, and as the noise scale the standard
  deviation of the AUCs of random pixel orders.

    python benchmarks/render_size.py                          # 8 photos, max_evals 300
    python benchmarks/render_size.py --photos 2 --max-evals 100 --steps 5
    python benchmarks/render_size.py --noise-reference --photos 3   # full vs full on the image +-1 grey level

``--noise-reference`` replaces "auto" by a full-size run on the image with seeded +-1
grey-level noise: how much the values move for an imperceptible change of the input,
the yardstick for the auto-vs-full differences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def explain(img, scorer, captioner, render_size, **kw):
    """capshap.explain_image with the masks rendered at ``render_size`` (full/auto/N):
    (explanation, the (h, w) render size or None for full size)."""
    from capshap import explain_image
    from capshap.masking import render_shape

    size = render_shape(img.shape, render_size, captioner)
    return explain_image(img, scorer, render_size=size, **kw), size


def region_sums(tree, values, depth):
    """Summed values (T,) of each node ``depth`` levels below the root: [(node, sums)]."""
    nodes = [tree.root]
    for _ in range(depth):
        nodes = [c for n in nodes for c in ((tree.left(n), tree.right(n)) if n >= tree.n_leaves else (n,))]
    flat = values.reshape(-1, values.shape[-1])
    out = []
    for n in nodes:
        m = tree.node_region(n).reshape(-1)
        out.append((n, flat[m].sum(axis=0)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=8, help="how many of the 8 photos")
    ap.add_argument("--names", nargs="+", help="photos by name (benchmarks/photos.py NAMES) instead of --photos")
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--mask", default="inpaint_ns")
    ap.add_argument("--steps", type=int, default=10, help="deletion/insertion curve points")
    ap.add_argument("--random-orders", type=int, default=2)
    ap.add_argument("--noise-reference", action="store_true",
                    help="compare full with full on the image plus +-1 grey-level noise instead of auto")
    args = ap.parse_args(argv)

    import torch

    import capshap
    from capshap.captioners.builtin import BuiltinCaptioner
    from photos import NAMES, photos

    print(f"# render_size auto vs full: builtin captioner, own head, max_evals={args.max_evals} "
          f"batch={args.batch_size} mask={args.mask}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    cap = BuiltinCaptioner(batch_size=args.batch_size)
    head = ("| photo | size | caption | render | full s | auto s | speed-up | mask s full/auto | corr (label) "
            "| top region 16 / 4 | del AUC full/auto | ins AUC full/auto | random AUC std del/ins |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for name, img in photos(args.max_side, tuple(args.names) if args.names else NAMES[: args.photos]):
        caption = cap.caption([img])[0]
        scorer = capshap.OwnHeadFactory(cap).bind(caption)
        kw = dict(mask=args.mask, max_evals=args.max_evals, batch_size=args.batch_size, seed=0)
        t = time.perf_counter()
        full, _ = explain(img, scorer, cap, "full", **kw)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        if args.noise_reference:
            noise = np.random.default_rng(0).integers(-1, 2, size=img.shape)
            noisy = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            auto, size = explain(noisy, scorer, cap, "full", **kw)
            auto.image = img  # the metrics run on the original image
        else:
            auto, size = explain(img, scorer, cap, "auto", **kw)
        t_auto = time.perf_counter() - t
        T = len(full.tokens)
        vf, va = full.values.reshape(-1, T), auto.values.reshape(-1, T)
        varying = [k for k in range(T) if vf[:, k].std() > 0 or va[:, k].std() > 0]
        corrs = [float(np.corrcoef(vf[:, k], va[:, k])[0, 1]) for k in varying]
        top = []
        for depth in (4, 2):
            rf = region_sums(full.tree, full.values, depth)
            ra = region_sums(auto.tree, auto.values, depth)
            score_f = [s[varying].sum() for _, s in rf]
            score_a = [s[varying].sum() for _, s in ra]
            top.append(rf[int(np.argmax(score_f))][0] == ra[int(np.argmax(score_a))][0])
        metric = {}
        for key, exp in (("full", full), ("auto", auto)):
            m = capshap.deletion_insertion(exp, scorer, steps=args.steps, token=varying,
                                           random_orders=args.random_orders, batch_size=args.batch_size)
            tk = m["tokens"][0]
            metric[key] = tk
        df, da = metric["full"]["deletion_auc"], metric["auto"]["deletion_auc"]
        inf_, ina = metric["full"]["insertion_auc"], metric["auto"]["insertion_auc"]
        rsd_d = metric["full"].get("random_deletion_auc_std")
        rsd_i = metric["full"].get("random_insertion_auc_std")
        row = dict(name=name, corr=min(corrs) if corrs else float("nan"), top16=top[0], top4=top[1],
                   speed=t_full / t_auto, d_del=abs(df - da), d_ins=abs(inf_ - ina), rsd_d=rsd_d, rsd_i=rsd_i)
        rows.append(row)
        print(f"| {name} | {img.shape[1]}x{img.shape[0]} | {caption[len('a photo of '):]} | "
              f"{f'{size[1]}x{size[0]}' if size else 'full'} | {t_full:.1f} | {t_auto:.1f} | {t_full / t_auto:.1f}x | "
              f"{full.timings['mask']:.1f}/{auto.timings['mask']:.1f} | {row['corr']:.3f} | "
              f"{'same' if top[0] else 'DIFFERENT'} / {'same' if top[1] else 'DIFFERENT'} | "
              f"{df:.3f}/{da:.3f} | {inf_:.3f}/{ina:.3f} | {rsd_d:.3f}/{rsd_i:.3f} |", flush=True)
    print()
    print(f"median correlation {statistics.median(r['corr'] for r in rows):.3f} (min {min(r['corr'] for r in rows):.3f}); "
          f"same top region of 16: {sum(r['top16'] for r in rows)}/{len(rows)}, of 4: {sum(r['top4'] for r in rows)}/{len(rows)}; "
          f"median |dAUC| deletion {statistics.median(r['d_del'] for r in rows):.3f} "
          f"insertion {statistics.median(r['d_ins'] for r in rows):.3f} vs random-order std "
          f"{statistics.median(r['rsd_d'] for r in rows):.3f} / {statistics.median(r['rsd_i'] for r in rows):.3f}; "
          f"median speed-up {statistics.median(r['speed'] for r in rows):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
