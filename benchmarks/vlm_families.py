"""Own-head explanations per Hugging Face model family: batched vs one image at a time.

Builds one tiny random model of each family (tests/tiny_models.py, tests/tiny_vlms.py:
hidden size 32, 2 layers, 32x32 px inputs; Qwen2-VL 56x56), captions a photo with
``HFCaptioner`` and explains its caption with the own-head scorer through
``capshap.explain_image`` at the same budget, once with the masked images scored in batches
of ``--batch`` and once one at a time (batch 1). Prints, per family, the wall time, the time
inside the model, the number of model calls (forward passes of the model, counted with a
torch forward hook), the speed-up and images per minute. Single process, on ``--device``.

    python benchmarks/vlm_families.py                           # max_evals 300, batch 50
    python benchmarks/vlm_families.py --families llava,qwen2_vl --evals 300 --batch 50 --repeats 2
    python benchmarks/vlm_families.py --device cuda --model-size blip-base   # real compute, random weights
    python benchmarks/vlm_families.py --device cuda --model-size 2b --dtype bfloat16 --evals 100 --batch 25
    python benchmarks/vlm_families.py --model-size 2b --build-only      # parameter count on the meta device

Tiny models show the per-call overhead of each family's processor and forward pass, which
is what batching removes; a real model adds compute that batching also amortises on a GPU.
``--model-size blip-base`` / ``2b`` (benchmarks/sized_models.py) builds one model at that
size instead of the tiny families (BLIP for blip-base, LLaVA for 2b) and explains a fixed
caption. On cuda the model time is GPU-synchronised (the scores come back to the host), so
the model share of the wall time is the GPU's busy share.
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

sys.path.insert(0, HERE)
import sized_models  # noqa: E402
from sized_models import SIZES  # noqa: E402


def folder(family: str) -> str:
    import tiny_models as tm
    import tiny_vlms as tv

    if family in CLASSIC:
        return {"vit-gpt2": tm.vit_gpt2_dir, "blip": tm.blip_dir, "git": tm.git_dir}[family]()
    return tv.path(family, std={"gemma3": 0.1}.get(family, 0.5))  # as the tests: non-empty greedy answers


def tiny_captioner(family: str, batch: int, device: str):
    """(HFCaptioner, caption) for a tiny random ``family`` model on ``device``."""
    from capshap.captioners.hf import HFCaptioner

    cap = HFCaptioner(folder(family), device=device, batch_size=batch,
                      generate_kwargs={"max_new_tokens": 8, "min_new_tokens": 8})
    return cap, None


def run(cap, caption, image: np.ndarray, evals: int, batch: int, mask: str, repeats: int) -> dict:
    """Explain ``caption`` (None: the model's own caption) on ``image`` with ``cap``'s own head."""
    import capshap

    cap.batch_size = batch
    caption = caption or cap.caption([image])[0]
    scorer = cap.own_scorer(caption)
    calls = [0]

    def counted(module, args, kwargs, output):
        calls[0] += 1

    hook = cap.model.register_forward_hook(counted, with_kwargs=True)
    walls, models = [], []
    try:
        for _ in range(repeats):
            calls[0] = 0
            t = time.perf_counter()
            exp = capshap.explain_image(image, scorer, max_evals=evals, batch_size=batch, mask=mask)
            walls.append(time.perf_counter() - t)
            models.append(exp.timings["model"])
    finally:
        hook.remove()
    return {"wall": statistics.median(walls), "model": statistics.median(models), "calls": calls[0],
            "T": len(scorer.tokens)}


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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--model-size", choices=("tiny",) + SIZES, default="tiny",
                   help="tiny: every family at hidden size 32; blip-base / 2b: one model at that size")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="weight dtype of a sized model (default float32)")
    p.add_argument("--build-only", action="store_true",
                   help="with --model-size: build on the meta device, print the parameter count and stop")
    p.add_argument("--no-batch-1", action="store_true", help="skip the one-image-at-a-time comparison")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available() and not args.build_only:
        p.error(f"--device {args.device}: no CUDA GPU is visible here")
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.model_size != "tiny" and args.build_only:
        _, n, _ = sized_models.build(args.model_size, "meta", dtype)
        print(f"{args.model_size}: {n / 1e6:.0f} M parameters (built on the meta device)")
        return

    photo = os.path.join(HERE, "..", "..", "..", "shared", "data", "shap_test_images", "1.jpg")
    for candidate in (photo, "/work/shared/data/shap_test_images/1.jpg"):
        if os.path.exists(candidate):
            image = load_image(candidate, max_side=args.size)
            break
    else:
        image = tv.images(1, size=args.size, seed=0)[0]
    where = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print(f"image {image.shape[1]}x{image.shape[0]}, max_evals {args.evals}, mask {args.mask}, "
          f"torch threads {torch.get_num_threads()}, {args.device} ({where})")
    print(f"{'family':10s} {'T':>3s} | {'batch ' + str(args.batch):>38s} | {'batch 1':>28s} | speed-up")
    print(f"{'':10s} {'':>3s} | {'wall s':>8s} {'model s':>9s} {'calls':>9s} {'img/min':>9s} | "
          f"{'wall s':>8s} {'model s':>9s} {'calls':>9s} |")
    if args.model_size == "tiny":
        models = [(f.strip(), lambda f=f: tiny_captioner(f.strip(), args.batch, args.device))
                  for f in args.families.split(",")]
    else:
        def sized():
            t = time.perf_counter()
            cap, n = sized_models.captioner(args.model_size, args.device, dtype, args.batch)
            print(f"# {args.model_size}: {type(cap.model).__name__}, {n / 1e6:.0f} M parameters, "
                  f"{cap.model.dtype}, built in {time.perf_counter() - t:.1f} s", flush=True)
            return cap, sized_models.CAPTION
        models = [(args.model_size, sized)]
    for fam, make in models:
        cap, caption = make()
        b = run(cap, caption, image, args.evals, args.batch, args.mask, args.repeats)
        one = None if args.no_batch_1 else run(cap, caption, image, args.evals, 1, args.mask, args.repeats)
        tail = (f"{one['wall']:8.2f} {one['model']:9.2f} {one['calls']:9d} | {one['wall'] / b['wall']:6.1f}x"
                if one else f"{'-':>8s} {'-':>9s} {'-':>9s} | {'-':>6s}")
        print(f"{fam:10s} {b['T']:3d} | {b['wall']:8.2f} {b['model']:9.2f} {b['calls']:9d} {60 / b['wall']:9.1f} | "
              f"{tail}", flush=True)
        del cap


if __name__ == "__main__":
    main()
