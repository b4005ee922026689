"""Overlapping mask rendering with the model: sequential vs Masker.render_iter.

One image's Owen loop with the built-in captioner's own head, masks rendered at the
captioner's input size, two ways:

* sequential (what run.py does today): render the batch with every core, then score it
  with torch on every core;
* overlapped: torch and the render threads split the cores (capshap.masking.thread_split),
  and the batch is rendered in chunks of the captioner's batch size one chunk ahead of the
  model (Masker.render_iter). The model sees the same sub-batches, so values are identical
  (checked).

    python benchmarks/overlap.py                          # 2 photos at 500 px, max_evals 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run_once(img, scorer, cap, overlap, max_evals, batch_size, mask):
    import torch

    from capshap.masking import Masker, render_shape, thread_split
    from capshap.owen import owen_values as owen
    from capshap.regions.axis import axis_aligned

    model_threads, mask_threads = thread_split(overlap=overlap)
    torch.set_num_threads(model_threads)
    tree = axis_aligned(*img.shape[:2])
    masker = Masker(img, tree, mask, threads=mask_threads, render_size=render_shape(img.shape, "auto", cap))
    chunk = cap.batch_size

    def evaluate(coalitions):
        if not overlap:
            return scorer.score(masker.render(coalitions))
        return np.concatenate([scorer.score(b) for b in masker.render_iter(coalitions, chunk)])

    t = time.perf_counter()
    res = owen(tree, evaluate, max_evals=max_evals, batch_size=batch_size)
    return time.perf_counter() - t, res, (model_threads, mask_threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--mask", default="inpaint_ns")
    args = ap.parse_args(argv)

    import torch

    from capshap.captioners.builtin import BuiltinCaptioner
    from photos import NAMES, photos

    cap = BuiltinCaptioner(batch_size=32)
    print(f"# {os.cpu_count()} CPUs; builtin own head, render auto, max_evals {args.max_evals}")
    print("| photo | sequential s (threads) | overlapped s (threads) | speed-up | values identical |")
    print("|---|---|---|---|---|")
    default_threads = torch.get_num_threads()
    for name, img in photos(args.max_side, NAMES[: args.photos]):
        scorer = cap.own_scorer(cap.caption([img])[0])
        a, ra, ta = run_once(img, scorer, cap, False, args.max_evals, args.batch_size, args.mask)
        b, rb, tb = run_once(img, scorer, cap, True, args.max_evals, args.batch_size, args.mask)
        same = np.array_equal(ra.node_values, rb.node_values) and np.array_equal(ra.nodes, rb.nodes)
        print(f"| {name} | {a:.2f} ({ta[0]}+{ta[1]}) | {b:.2f} ({tb[0]}+{tb[1]}) | {a / b:.2f}x | {same} |", flush=True)
    torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
