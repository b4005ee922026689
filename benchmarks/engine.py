"""Engine overhead: capshap vs the shap pipeline on the same cheap model.

Runs, in one process and alternately, ``shap.Explainer(f, shap.maskers.Image(mask, shape))``
and ``capshap.explain_image`` on the same image, model, budget and batch size, and prints
each one's wall time, the time inside the model, the overhead (everything else) and the
ratios. The model is deliberately cheap (a fixed linear map of channel means, T outputs)
so that the overhead shows.

    python benchmarks/engine.py                      # 224x224 and 500x375, 300 and 3000 evals, inpaint_ns and blur
    python benchmarks/engine.py --sizes 224x224 --evals 300 --masks "blur(10,10)" --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")


class InpaintClock:
    """Sums the seconds spent inside cv2.inpaint calls (both pipelines call the same kernel;
    with capshap's parallel threads the sum exceeds the wall time it takes)."""

    def __init__(self):
        import threading

        import cv2

        self.cv2 = cv2
        self.orig = cv2.inpaint
        self.seconds = 0.0
        self.lock = threading.Lock()

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self.orig(*a, **k)
            finally:
                with self.lock:
                    self.seconds += time.perf_counter() - t

        cv2.inpaint = timed

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def cheap_model(T: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(3, T))
    state = {"t": 0.0, "calls": 0, "n": 0}

    def f(x):
        t = time.perf_counter()
        x = np.asarray(x, dtype=np.float32)
        out = np.tanh(x.reshape(len(x), -1, 3).mean(1) / 255.0 @ W)
        state["t"] += time.perf_counter() - t
        state["calls"] += 1
        state["n"] += len(x)
        return out

    return f, state


def photo(h: int, w: int) -> np.ndarray:
    from PIL import Image

    here = os.path.dirname(os.path.abspath(__file__))
    im = Image.open(os.path.join(here, "..", "examples", "3.jpg")).convert("RGB")
    return np.asarray(im.resize((w, h), Image.LANCZOS)).copy()


def run_shap(img, mask, max_evals, batch_size):
    import shap

    f, st = cheap_model()
    masker = shap.maskers.Image(mask, img.shape)
    explainer = shap.Explainer(f, masker, algorithm="partition")
    t = time.perf_counter()
    explainer(img[None].astype(np.float64), max_evals=max_evals, batch_size=batch_size, silent=True)
    wall = time.perf_counter() - t
    return wall, st["t"], st["n"]


def run_capshap(img, mask, max_evals, batch_size, channels=False):
    import capshap

    f, st = cheap_model()
    scorer = capshap.FunctionScorer(f, [f"t{i}" for i in range(5)])
    t = time.perf_counter()
    capshap.explain_image(img, scorer, mask=mask, max_evals=max_evals, batch_size=batch_size, channels=channels)
    wall = time.perf_counter() - t
    return wall, st["t"], st["n"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="224x224,500x375", help="HxW list (default 224x224,500x375)")
    ap.add_argument("--evals", default="300,3000", help="max_evals list (default 300,3000)")
    ap.add_argument("--masks", default="inpaint_ns;blur(10,10)", help="';'-separated mask options")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs per setting (median reported)")
    ap.add_argument("--channels", action="store_true", help="capshap in shap's channel-leaf mode too")
    args = ap.parse_args(argv)

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    evals = [int(v) for v in args.evals.split(",")]
    masks = args.masks.split(";")
    modes = [False, True] if args.channels else [False]
    print(f"# engine overhead, cheap model, batch_size={args.batch_size}, {os.cpu_count()} CPUs")
    # warm up both (numba compiles shap's tree builder on first use; imports)
    run_shap(photo(16, 16), "blur(3,3)", 10, 10)
    run_capshap(photo(16, 16), "blur(3,3)", 10, 10)
    clock = InpaintClock()
    head = (
        "| image | mask | max_evals | mode | shap wall s | shap overhead s | capshap wall s | capshap overhead s "
        "| wall ratio | overhead ratio | cv2.inpaint CPU s shap / capshap | shap overhead outside cv2.inpaint s |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (h, w) in sizes:
        img = photo(h, w)
        for mask in masks:
            for me in evals:
                for ch in modes:
                    S, C, KS, KC = [], [], [], []
                    for _ in range(args.repeats):
                        clock.take()
                        S.append(run_shap(img, mask, me, args.batch_size))
                        KS.append(clock.take())
                        C.append(run_capshap(img, mask, me, args.batch_size, channels=ch))
                        KC.append(clock.take())
                    sw = statistics.median(s[0] for s in S)
                    so = statistics.median(s[0] - s[1] for s in S)
                    cw = statistics.median(c[0] for c in C)
                    co = statistics.median(c[0] - c[1] for c in C)
                    ks, kc = statistics.median(KS), statistics.median(KC)
                    print(
                        f"| {h}x{w} | {mask} | {me} | {'channels' if ch else 'pixels'} | {sw:.3f} | {so:.3f} | "
                        f"{cw:.3f} | {co:.3f} | {sw / cw:.1f}x | {so / co:.1f}x | {ks:.2f} / {kc:.2f} | "
                        f"{so - ks:.2f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
