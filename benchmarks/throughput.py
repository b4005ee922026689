"""Images per minute of the runners: serial, in flight, and Ray with 2 workers.

Images: the examples, each also flipped left-right, flipped up-down and centre-cropped
(and their flips), up to ``--images`` (default 32). Two captioners:

* ``builtin``: the offline EfficientNet-Lite0 with its own head (``--scorer own``);
* ``azure``: the fake Azure server of the tests (tests/captioners/fake_azure.py) on
  127.0.0.1, every answer delayed ``--latency`` seconds (default 0.2), presence scoring; the
  key reaches Ray workers through the environment (AZURE_VISION_KEY), as in real use.

Each runner's values are checked against the serial run's (max |difference| of the node
values is printed). Run it alone: it uses every core it is given.

    python benchmarks/throughput.py                               # the issue's numbers (slow on 2 cores)
    python benchmarks/throughput.py --images 8 --max-evals 60 --captioners builtin
    python benchmarks/throughput.py --device cuda --captioners builtin   # Ray workers share the GPU

On cuda the builtin captioner runs on the GPU; each Ray worker asks for
``--gpus-per-worker`` of it (default: one GPU split over the workers). The serial run also
prints its model share of the wall time (the scores come back to the host after every
batch, so on cuda that is the GPU's busy share).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]


def dataset(n: int, max_side: int) -> list:
    from capshap.images import load_image
    from capshap.job import ImageInput

    base = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for p in base:
        a = load_image(str(p), max_side=max_side)
        h, w = a.shape[:2]
        crop = a[h // 8 : h - h // 8, w // 8 : w - w // 8]
        for tag, v in (("", a), ("_lr", a[:, ::-1]), ("_ud", a[::-1]), ("_crop", crop), ("_crop_lr", crop[:, ::-1]),
                       ("_crop_ud", crop[::-1]), ("_rot", a[::-1, ::-1]), ("_crop_rot", crop[::-1, ::-1])):
            v = np.ascontiguousarray(v)
            out.append(ImageInput(p.stem + tag, v, None, v.shape[:2]))
    return (out * (n // len(out) + 1))[:n] if len(out) < n else out[:n]


def measure(label: str, items: list, settings, **kw) -> tuple[float, dict]:
    """Run ``items`` with the runner and runner settings ``kw`` (the run owner's path:
    a validated plan, the runner from the registry; a Ray driver builds no model)."""
    from capshap.job import Plan, Prepared
    from capshap.runners import runner_for

    s = settings.replace(**kw)
    t0 = time.perf_counter()
    outs = {}
    for o in runner_for(s.runner)(Prepared(Plan.of(s)), items, n_images=len(items)):
        outs[o.name] = o
    wall = time.perf_counter() - t0
    bad = [o for o in outs.values() if not o.ok]
    model = sum(o.explanation.timings.get("model", 0.0) for o in outs.values() if o.ok)
    share = f", model {100 * model / wall:.0f}% of the wall time" if kw.get("runner") == "serial" else ""
    print(f"  {label:<24} {len(items) / wall * 60:8.1f} images/min  ({wall:7.1f} s, {len(bad)} failed{share})",
          flush=True)
    for o in bad[:3]:
        print(f"    {o.name}: {o.error}")
    return wall, outs


def diff(ref: dict, got: dict) -> str:
    d = [float(np.abs(ref[k].explanation.node_values - got[k].explanation.node_values).max())
         for k in ref if ref[k].ok and k in got and got[k].ok]
    eq = all(np.array_equal(ref[k].explanation.node_values, got[k].explanation.node_values)
             for k in ref if ref[k].ok and k in got and got[k].ok)
    return "bit for bit" if eq else f"max |diff| {max(d):.2e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--azure-images", type=int, default=None, help="images for the fake Azure runs (default: --images)")
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--mask", default="inpaint_ns")
    ap.add_argument("--in-flight", type=int, default=None)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--captioners", default="builtin,azure")
    ap.add_argument("--runners", default="serial,in_flight,ray")
    ap.add_argument("--device", default=None, help="the builtin captioner's device (cpu, cuda, ...)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers")
    ap.add_argument("--gpus-per-worker", type=float, default=None,
                    help="GPUs each Ray worker asks for (default on cuda: the GPUs split over the workers)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "captioners"))
    from capshap.runners.flight import default_in_flight
    from capshap.settings import Settings

    k = args.in_flight or default_in_flight(args.device)
    runners = args.runners.split(",")
    cuda = bool(args.device) and args.device.startswith("cuda")
    gpus = 0
    if cuda:
        import torch

        if not torch.cuda.is_available():
            ap.error(f"--device {args.device}: no CUDA GPU is visible here")
        gpus = torch.cuda.device_count()
    per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (
        gpus / args.workers if cuda else 0)
    where = f", {gpus} GPU(s) ({torch.cuda.get_device_name(0)})" if cuda else ""
    print(f"{args.images} images, max_evals {args.max_evals}, mask {args.mask}, in flight {k}, "
          f"{os.cpu_count()} CPUs{where}", flush=True)
    failed = 0
    for cap in args.captioners.split(","):
        server = None
        items = dataset(args.azure_images or args.images, args.max_side) if cap == "azure" else dataset(
            args.images, args.max_side)
        if cap == "builtin":
            s = Settings(captioner="builtin", scorer="own", max_evals=args.max_evals, mask=args.mask,
                         max_side=args.max_side, device=args.device)
        else:
            from fake_azure import FakeAzure

            server = FakeAzure(delay=args.latency).start()
            os.environ["AZURE_VISION_ENDPOINT"] = server.endpoint
            os.environ["AZURE_VISION_KEY"] = server.key
            s = Settings(captioner="azure", scorer="presence", max_evals=args.max_evals, mask=args.mask,
                         max_side=args.max_side, captioner_options={"backoff": 0.01})
        print(f"{cap} ({s.scorer}{'' if server is None else f', {args.latency:g} s a call'}):", flush=True)
        try:
            ref = None
            for r in runners:
                if r == "serial":
                    _, outs = measure("serial", items, s, runner="serial")
                elif r == "in_flight":
                    _, outs = measure(f"in flight ({k})", items, s, runner="in_flight", in_flight=k)
                else:
                    import ray

                    if not ray.is_initialized():
                        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, logging_level="ERROR",
                                 log_to_driver=False,
                                 runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
                    _, outs = measure(f"ray, {args.workers} workers", items, s, runner="ray", workers=args.workers,
                                      in_flight=k, gpus_per_worker=per_worker if cap == "builtin" else 0)
                failed += sum(not o.ok for o in outs.values())
                if ref is None:
                    ref = outs
                elif r != "serial":
                    print(f"    values vs {runners[0]}: {diff(ref, outs)}")
        finally:
            if server is not None:
                print(f"    fake Azure: {server.total} requests, at most {server.max_in_flight} at once")
                server.close()
    if failed:
        print(f"{failed} image runs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
