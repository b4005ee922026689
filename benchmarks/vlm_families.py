"""Own-head explanations per Hugging Face model family: batched vs one image at a time.

Builds one tiny random model of each family (tests/tiny_models.py, tests/tiny_vlms.py:
hidden size 32, 2 layers, 32x32 px inputs; Qwen2-VL 56x56), captions a photo with
``HFCaptioner`` and explains its caption with the own-head scorer through
``capshap.explain_image`` at the same budget, once with the masked images scored in batches
of ``--batch`` and once one at a time (batch 1). Prints, per family, the wall time, the time
inside the model, the number of model calls and the speed-up. Single process, CPU.

    python benchmarks/vlm_families.py                           # max_evals 300, batch 50
    python benchmarks/vlm_families.py --families llava,qwen2_vl --evals 300 --batch 50 --repeats 2

Tiny models show the per-call overhead of each family's processor and forward pass, which
is what batching removes; a real model adds compute that batching also amortises on a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

CLASSIC = ("vit-gpt2", "blip", "git")


def folder(family: str) -> str:
    import tiny_models as tm
    import tiny_vlms as tv

    if family in CLASSIC:
        return {"vit-gpt2": tm.vit_gpt2_dir, "blip": tm.blip_dir, "git": tm.git_dir}[family]()
    return tv.path(family, std={"gemma3": 0.1}.get(family, 0.5))  # as the tests: non-empty greedy answers


def run(family: str, image: np.ndarray, evals: int, batch: int, mask: str, repeats: int) -> dict:
    import capshap
    from capshap.captioners.hf import HFCaptioner

    cap = HFCaptioner(folder(family), device="cpu", batch_size=batch,
                      generate_kwargs={"max_new_tokens": 8, "min_new_tokens": 8})
    caption = cap.caption([image])[0]
    scorer = cap.own_scorer(caption)
    calls = [0]
    inner = cap.adapter.answer_logits

    def counted(images, ids):
        calls[0] += 1
        return inner(images, ids)

    cap.adapter.answer_logits = counted
    walls, models = [], []
    exp = None
    for _ in range(repeats):
        calls[0] = 0
        t = time.perf_counter()
        exp = capshap.explain_image(image, scorer, max_evals=evals, batch_size=batch, mask=mask)
        walls.append(time.perf_counter() - t)
        models.append(exp.timings["model"])
    return {"wall": statistics.median(walls), "model": statistics.median(models), "calls": calls[0],
            "T": len(scorer.tokens), "evals": exp.timings.get("evals", evals)}


def main(argv: list[str] | None = None) -> None:
    import tiny_vlms as tv
    import torch

    from capshap.images import load_image

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(CLASSIC + tv.FAMILIES))
    p.add_argument("--evals", type=int, default=300)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--mask", default="blur(10,10)")
    p.add_argument("--size", type=int, default=224, help="photo side in px (the shap test image 1.jpg)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    photo = os.path.join(HERE, "..", "..", "..", "shared", "data", "shap_test_images", "1.jpg")
    for candidate in (photo, "/work/shared/data/shap_test_images/1.jpg"):
        if os.path.exists(candidate):
            image = load_image(candidate, max_side=args.size)
            break
    else:
        image = tv.images(1, size=args.size, seed=0)[0]
    print(f"image {image.shape[1]}x{image.shape[0]}, max_evals {args.evals}, mask {args.mask}, "
          f"torch threads {torch.get_num_threads()}, CPU")
    print(f"{'family':10s} {'T':>3s} | {'batch ' + str(args.batch):>28s} | {'batch 1':>28s} | speed-up")
    print(f"{'':10s} {'':>3s} | {'wall s':>8s} {'model s':>9s} {'calls':>9s} | {'wall s':>8s} {'model s':>9s} {'calls':>9s} |")
    for fam in args.families.split(","):
        fam = fam.strip()
        b = run(fam, image, args.evals, args.batch, args.mask, args.repeats)
        one = run(fam, image, args.evals, 1, args.mask, args.repeats)
        print(f"{fam:10s} {b['T']:3d} | {b['wall']:8.2f} {b['model']:9.2f} {b['calls']:9d} | "
              f"{one['wall']:8.2f} {one['model']:9.2f} {one['calls']:9d} | {one['wall'] / b['wall']:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
