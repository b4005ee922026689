"""Cropped inpainting at real sizes: identical pixels, and how much time it saves.

For Owen-like coalitions of the axis-aligned pixel tree on sample photos (benchmarks/
photos.py), cv2.inpaint (NS and TELEA, radius 3) on the whole image is compared with
inpainting the hidden pixels' bounding box plus a margin, for several margins: how many
results are pixel-identical, and the median time of each. capshap uses
``capshap.masking.CROP_MARGIN`` (8) and falls back to the whole image when the crop is
over 70% of it.

    python benchmarks/crop_inpaint.py                     # 2 photos at 500 px, 150 coalitions each
    python benchmarks/crop_inpaint.py --photos 8 --coalitions 500 --max-side 224
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--coalitions", type=int, default=150)
    ap.add_argument("--margins", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    args = ap.parse_args(argv)

    from capshap.masking import CROP_MARGIN, Masker
    from capshap.regions.axis import axis_aligned
    from photos import NAMES, photos
    from test_crop_inpaint import _owen_like

    print(f"# cropped vs whole-image cv2.inpaint; capshap's margin is {CROP_MARGIN}")
    print("| method | margin | identical | of | crop used | median ms whole | median ms crop |")
    print("|---|---|---|---|---|---|---|")
    stats = {}
    rng = np.random.default_rng(0)
    for name, img in photos(args.max_side, NAMES[: args.photos]):
        H, W = img.shape[:2]
        tree = axis_aligned(H, W)
        masker = Masker(img, tree, 0)
        for c in _owen_like(tree, rng, args.coalitions):
            hidden = ~masker.visible(c)
            if hidden.all() or not hidden.any():
                continue
            rows, cols = np.flatnonzero(hidden.any(1)), np.flatnonzero(hidden.any(0))
            for meth, flag in (("NS", cv2.INPAINT_NS), ("TELEA", cv2.INPAINT_TELEA)):
                t = time.perf_counter()
                want = cv2.inpaint(img, hidden.view(np.uint8), 3, flag)
                t_full = time.perf_counter() - t
                for m in args.margins:
                    y0, y1 = max(0, rows[0] - m), min(H, rows[-1] + 1 + m)
                    x0, x1 = max(0, cols[0] - m), min(W, cols[-1] + 1 + m)
                    t = time.perf_counter()
                    got = img.copy()
                    got[y0:y1, x0:x1] = cv2.inpaint(np.ascontiguousarray(img[y0:y1, x0:x1]),
                                                    np.ascontiguousarray(hidden[y0:y1, x0:x1]).view(np.uint8), 3, flag)
                    t_crop = time.perf_counter() - t
                    small = (y1 - y0) * (x1 - x0) <= 0.7 * H * W
                    s = stats.setdefault((meth, m), {"same": 0, "n": 0, "used": 0, "full": [], "crop": []})
                    s["n"] += 1
                    s["same"] += bool(np.array_equal(got, want))
                    s["used"] += small
                    if small:
                        s["full"].append(t_full * 1e3)
                        s["crop"].append(t_crop * 1e3)
    for (meth, m), s in stats.items():
        mf = statistics.median(s["full"]) if s["full"] else float("nan")
        mc = statistics.median(s["crop"]) if s["crop"] else float("nan")
        print(f"| {meth} | {m} | {s['same']} | {s['n']} | {s['used']} | {mf:.2f} | {mc:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
