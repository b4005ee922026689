"""Own-head explanations through an OpenAI-compatible server vs in process.

Builds a tiny random chat VLM (tests/tiny_vlms.py, LLaVA by default, init std 0.5), serves
it from the tests' fake vLLM-like server (tests/captioners/fake_openai.py: real HTTP on
127.0.0.1, prompt log-probabilities from ``HFCaptioner.own_scorer``) or, with
``--vllm-python``, from a real vLLM server (the CPU build, in its own venv, on 127.0.0.1:
tests/integration/vllm_server.py; Idefics3 with head dimension 32 by default), and explains
the caption of each test image with ``capshap.explain_image`` at ``--evals`` / ``--batch``:
with ``OpenAICaptioner.own_scorer`` (one HTTP request per masked image, PNG data URL, at
each ``--concurrency`` value in flight) and with ``HFCaptioner.own_scorer`` in process (one
forward pass per batch). The caption is written in process by one captioner and scored as
text by others, so both paths score the same tokens. Prints the per-image wall time of
each, their ratio, the requests sent and the largest difference of the explanation values.

    python benchmarks/openai_server.py                          # llava, 3 images, max_evals 300, batch 50
    python benchmarks/openai_server.py --family qwen2_vl --images 2 --concurrency 8
    python benchmarks/openai_server.py --vllm-python ~/.cache/capshap-vllm/venv-0.32.0/bin/python \
        --images 2 --concurrency 1,4,8

The tiny model makes the forward pass nearly free, so the ratio is the HTTP and encoding
overhead per masked image; with a real model on a GPU server, vLLM batches the concurrent
requests and the forward pass dominates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "captioners"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default=None, help="llava (fake server) / idefics3 (vLLM) by default")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--evals", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--concurrency", default="8", help="requests in flight, e.g. 1,4,8")
    ap.add_argument("--vllm-python", default=None, help="python of a vLLM venv: serve with real vLLM")
    ap.add_argument("--max-tokens", type=int, default=6)
    args = ap.parse_args(argv)
    levels = [int(c) for c in str(args.concurrency).split(",")]
    family = args.family or ("idefics3" if args.vllm_python else "llava")

    import tempfile
    from contextlib import ExitStack

    import tiny_vlms as tv
    import torch

    from capshap.captioners.hf import HFCaptioner
    from capshap.captioners.openai import open_captioner
    from capshap.run import explain_image

    torch.set_num_threads(1)
    gen = {"max_new_tokens": args.max_tokens}
    with ExitStack() as stack:
        if args.vllm_python:
            from vllm_server import VLLMServer

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="capshap-bench-"))
            folder = tv.build(family, os.path.join(tmp, "model"), std=0.5, dims=tv.VLLM_DIMS)
            server = VLLMServer(args.vllm_python, folder, f"tiny-{family}", __import__("pathlib").Path(tmp) / "log")
            stack.callback(server.stop)
            t0 = time.perf_counter()
            server.start()
            print(f"vLLM server ready in {time.perf_counter() - t0:.0f} s")
            model, base_url, what = f"tiny-{family}", server.base_url, "vLLM (CPU build)"
        else:
            from fake_openai import MODEL, FakeOpenAI

            folder = tv.path(family, std=0.5)
            served = HFCaptioner(folder, device="cpu", batch_size=args.batch, generate_kwargs=gen)
            fake = stack.enter_context(FakeOpenAI(served, max_requests=10 ** 6, lifetime=3600))
            model, base_url, what = MODEL, fake.base_url, "the tests' fake server"
        writer = HFCaptioner(folder, device="cpu", batch_size=args.batch, generate_kwargs=gen)
        hf = HFCaptioner(folder, device="cpu", batch_size=args.batch, generate_kwargs=gen)
        caps = {c: open_captioner(model, base_url=base_url, proxies={}, max_concurrency=c, timeout=600)
                for c in levels}
        for c in caps.values():
            stack.callback(c.close)
        imgs = tv.images(args.images, size=40, seed=1)
        kw = {"max_evals": args.evals, "batch_size": args.batch, "seed": 0}
        rows = []
        for i, img in enumerate(imgs):
            caption = writer.caption([img])[0]
            t0 = time.perf_counter()
            local = explain_image(img, hf.own_scorer(caption), **kw)
            t_local = time.perf_counter() - t0
            for c, cap in caps.items():
                sent = cap.requests_sent
                t0 = time.perf_counter()
                remote = explain_image(img, cap.own_scorer(caption), **kw)
                t_remote = time.perf_counter() - t0
                diff = float(np.abs(remote.values - local.values).max())
                rows.append((i, c, len(local.tokens), t_remote, t_local, cap.requests_sent - sent, diff))
    print(f"family {family} served by {what}, max_evals {args.evals}, batch {args.batch}, "
          f"in-process torch threads 1, CPU")
    print(f"{'image':>5} {'in flight':>9} {'T':>3} {'server s':>9} {'in-proc s':>10} {'ratio':>6} {'requests':>9} "
          f"{'max |diff|':>11}")
    for i, c, t, a, b, r, d in rows:
        print(f"{i:>5} {c:>9} {t:>3} {a:>9.2f} {b:>10.2f} {a / b:>6.1f} {r:>9} {d:>11.1e}")
    for c in levels:
        sel = [r for r in rows if r[1] == c]
        ra, rb = np.mean([r[3] for r in sel]), np.mean([r[4] for r in sel])
        print(f"{'mean':>5} {c:>9} {'':>3} {ra:>9.2f} {rb:>10.2f} {ra / rb:>6.1f}")


if __name__ == "__main__":
    main()
