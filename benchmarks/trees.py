"""Region-tree build times: shap's axis-aligned tree vs capshap's, and segment trees.

    python benchmarks/trees.py            # 500x500 axis trees, 500x375 segment trees
    python benchmarks/trees.py --axis-sizes 32x32 --segment-size 64x48 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def timed(fn, repeats: int = 5) -> tuple[float, float]:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--axis-sizes", default="500x500,500x375,500x500c,224x224",
                    help="HxW list of axis trees; a trailing c: shap's channel leaves")
    ap.add_argument("--segment-size", default="500x375", help="WxH the chelsea photo is resized to for segment trees")
    ap.add_argument("--segments", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each axis tree (segment trees: 3 at most)")
    args = ap.parse_args(argv)
    axis = [(int(s.rstrip("c").split("x")[0]), int(s.rstrip("c").split("x")[1]), s.endswith("c"))
            for s in args.axis_sizes.split(",")]
    sw, sh = (int(v) for v in args.segment_size.split("x"))
    import skimage.data
    from PIL import Image

    from capshap.regions.axis import axis_aligned
    from capshap.regions.segments import superpixel_tree as segments

    print("| tree | image | best s | median s | leaves | depth |")
    print("|---|---|---|---|---|---|")
    axis_aligned(32, 32)
    for h, w, ch in axis:
        b, m = timed(lambda: axis_aligned(h, w, channels=ch), repeats=args.repeats)
        t = axis_aligned(h, w, channels=ch)
        print(f"| capshap axis{' (channels)' if ch else ''} | {h}x{w} | {b:.3f} | {m:.3f} | {t.n_leaves} | - |")
    try:
        import shap

        h, w = axis[0][:2]
        b, m = timed(lambda: shap.maskers.Image("inpaint_ns", (h, w, 3)), repeats=min(2, args.repeats))
        print(f"| shap.maskers.Image (channels) | {h}x{w} | {b:.3f} | {m:.3f} | {h * w * 3} | - |")
    except ImportError:
        pass
    photo = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((sw, sh), Image.BILINEAR))
    for method in ("slic", "felzenszwalb", "quickshift"):
        segments(photo[:120, :160], method, 8)  # imports and first-call costs
        b, m = timed(lambda: segments(photo, method, args.segments), repeats=min(3, args.repeats))
        t = segments(photo, method, args.segments)
        print(f"| {method} ({args.segments} segments) | {sh}x{sw} chelsea | {b:.3f} | {m:.3f} | {t.n_leaves} "
              f"| {t.params['depth']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
