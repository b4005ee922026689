"""Planted object: how much positive credit lands on an object pasted into a texture,
segment tree (slic) vs axis-aligned tree, for two fills and two budgets.

    python benchmarks/planted_object.py                                  # 2 fills x budgets 100, 300
    python benchmarks/planted_object.py --fills grey --max-evals 20      # one quick row

Prints a Markdown table; the test suite keeps one fast case of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenes import object_scorer, planted_scene, positive_fraction_in  # noqa: E402

from capshap import explain_image  # noqa: E402
from capshap.regions.segments import superpixel_tree as segments  # noqa: E402


FILLS = {"inpaint_ns": "inpaint_ns", "grey": (127, 127, 127)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", nargs="+", choices=sorted(FILLS), default=list(FILLS))
    ap.add_argument("--max-evals", type=int, nargs="+", default=[100, 300])
    args = ap.parse_args(argv)
    image, obj, box = planted_scene()
    seg_tree = segments(image, "slic", 64)
    scorer = object_scorer(image, obj)
    print("| fill | max_evals | slic | axis |")
    print("|---|---|---|---|")
    for fill in (FILLS[f] for f in args.fills):
        for max_evals in args.max_evals:
            fracs = {}
            for name, tree in (("axis", "axis"), ("slic", seg_tree)):
                exp = explain_image(image, scorer, tree=tree, mask=fill, max_evals=max_evals, batch_size=50, seed=0)
                fracs[name] = positive_fraction_in(exp.token_values(0), box)
            label = fill if isinstance(fill, str) else "grey (127,127,127)"
            print(f"| {label} | {max_evals} | {fracs['slic']:.2f} | {fracs['axis']:.2f} |")


if __name__ == "__main__":
    main()
