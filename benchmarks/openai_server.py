"""Own-head explanations through an OpenAI-compatible server vs in process.

Builds a tiny random chat VLM (tests/tiny_vlms.py, LLaVA by default, init std 0.5), serves
it from the tests' fake vLLM-like server (tests/captioners/fake_openai.py: real HTTP on
127.0.0.1, prompt log-probabilities from ``HFCaptioner.own_scorer``), and explains the
caption of each test image with ``capshap.explain_image`` at ``--evals`` / ``--batch``:
once with ``OpenAICaptioner.own_scorer`` (one HTTP request per masked image, PNG data
URL, ``--concurrency`` in flight; the fake server runs one forward pass per request) and
once with ``HFCaptioner.own_scorer`` in process (one forward pass per batch). Prints the
per-image wall time of each, their ratio, the requests sent and the largest difference of
the explanation values. Single process, CPU.

    python benchmarks/openai_server.py                          # llava, 3 images, max_evals 300, batch 50
    python benchmarks/openai_server.py --family qwen2_vl --images 2 --concurrency 8

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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llava")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--evals", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)

    import tiny_vlms as tv
    import torch
    from fake_openai import MODEL, FakeOpenAI

    from capshap.captioners.hf import HFCaptioner
    from capshap.captioners.openai import open_captioner
    from capshap.run import explain_image

    torch.set_num_threads(1)
    hf = HFCaptioner(tv.path(args.family, std=0.5), device="cpu", batch_size=args.batch,
                     generate_kwargs={"max_new_tokens": 6})
    imgs = tv.images(args.images, size=40, seed=1)
    kw = {"max_evals": args.evals, "batch_size": args.batch, "seed": 0}
    rows = []
    with FakeOpenAI(hf, max_requests=10 ** 6, lifetime=3600) as server:
        cap = open_captioner(MODEL, base_url=server.base_url, proxies={}, max_concurrency=args.concurrency)
        for i, img in enumerate(imgs):
            caption = cap.caption([img])[0]
            sent = cap.requests_sent
            t0 = time.perf_counter()
            remote = explain_image(img, cap.own_scorer(caption), **kw)
            t_remote = time.perf_counter() - t0
            reqs = cap.requests_sent - sent
            t0 = time.perf_counter()
            local = explain_image(img, hf.own_scorer(caption), **kw)
            t_local = time.perf_counter() - t0
            diff = float(np.abs(remote.values - local.values).max())
            rows.append((i, len(local.tokens), t_remote, t_local, reqs, diff))
    print(f"family {args.family}, max_evals {args.evals}, batch {args.batch}, concurrency {args.concurrency}, "
          f"torch threads 1, CPU")
    print(f"{'image':>5} {'T':>3} {'server s':>9} {'in-proc s':>10} {'ratio':>6} {'requests':>9} {'max |diff|':>11}")
    for i, t, a, b, r, d in rows:
        print(f"{i:>5} {t:>3} {a:>9.2f} {b:>10.2f} {a / b:>6.1f} {r:>9} {d:>11.1e}")
    ra = np.mean([r[2] for r in rows])
    rb = np.mean([r[3] for r in rows])
    print(f"{'mean':>5} {'':>3} {ra:>9.2f} {rb:>10.2f} {ra / rb:>6.1f}")


if __name__ == "__main__":
    main()
