"""Region-tree build times: shap's axis-aligned tree vs capshap's, and segment trees.

    python benchmarks/trees.py            # 500x500 axis trees, 500x375 segment trees
"""

from __future__ import annotations

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


def main() -> int:
    import skimage.data
    from PIL import Image

    from capshap.regions.axis import axis_aligned
    from capshap.regions.segments import segments

    print("| tree | image | best s | median s | leaves | depth |")
    print("|---|---|---|---|---|---|")
    axis_aligned(32, 32)
    for h, w, ch in ((500, 500, False), (500, 375, False), (500, 500, True), (224, 224, False)):
        b, m = timed(lambda: axis_aligned(h, w, channels=ch))
        t = axis_aligned(h, w, channels=ch)
        print(f"| capshap axis{' (channels)' if ch else ''} | {h}x{w} | {b:.3f} | {m:.3f} | {t.n_leaves} | - |")
    try:
        import shap

        b, m = timed(lambda: shap.maskers.Image("inpaint_ns", (500, 500, 3)), repeats=2)
        print(f"| shap.maskers.Image (channels) | 500x500 | {b:.3f} | {m:.3f} | {500 * 500 * 3} | - |")
    except ImportError:
        pass
    photo = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((500, 375), Image.BILINEAR))
    for method in ("slic", "felzenszwalb", "quickshift"):
        segments(photo[:120, :160], method, 8)  # imports and first-call costs
        b, m = timed(lambda: segments(photo, method, 100), repeats=3)
        t = segments(photo, method, 100)
        print(f"| {method} (100 segments) | 375x500 chelsea | {b:.3f} | {m:.3f} | {t.n_leaves} | {t.params['depth']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
