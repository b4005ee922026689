"""Side-by-side benchmark: the SHAP image-captioning notebook's pipeline vs capshap.

In one process, alternating on the same images, it runs

1. shap: ``shap.Explainer(shap.models.TeacherForcing(f, similarity_model, similarity_tokenizer),
   shap.maskers.Image(mask, shape))`` called with ``max_evals, batch_size, fixed_context=None``;
2. capshap with the same captioner and surrogate language model, on the shap-compatible
   tree (channel leaves), so its values can be compared with shap's;
3. capshap with own-head scoring (the captioner's own scores, no surrogate) on its
   default pixel tree.

The captioner is capshap's embedded EfficientNet-Lite0 caption template. The surrogate is
a BART with ``sshleifer/distilbart-xsum-12-6``'s exact configuration (12 encoder and 6
decoder layers, d_model 1024, vocabulary 50264) and random weights, with a byte-level BPE
tokenizer trained on the spot: its compute cost is the real one, its scores are not.

Printed per image and as medians: wall seconds, the ratio to shap, seconds inside model
forward passes (the captioner's network and the LM) versus everything else, model calls,
captions, and the agreement with shap's values.

    python benchmarks/vs_shap.py                      # examples/*.jpg, max_evals 300, batch 50, inpaint_ns
    python benchmarks/vs_shap.py --images examples/2.jpg --max-evals 100 --mask "blur(10,10)"
    python benchmarks/vs_shap.py --device cuda        # on a GPU machine
    python benchmarks/vs_shap.py --photos 2 --sizes 224 500 --render-size auto   # real photos, two sizes
    python benchmarks/vs_shap.py --images examples/2.jpg --max-side 48 --max-evals 8 --lm tiny   # does it run?

With ``--photos N`` the images are the first N of the eight sample photos of
benchmarks/photos.py, loaded at each ``--sizes`` max side (224: like the examples, 500:
the CLI's default). ``--render-size`` (full, auto or N) is the size capshap renders masks
at (the shap pipeline always masks at full size); the agreement columns compare with shap
only at ``full``. Also printed: capshap's floor, the model's forward time plus the masking
time spread over all cores (masking CPU seconds / cores), the ratio of the wall time to it,
and the process's peak RSS after each run, and per size and pipeline the images per minute.
On cuda every timed forward pass ends in ``torch.cuda.synchronize()``, so the model share
is the GPU's busy share.

capshap's masking time comes from a Masker subclass handed to ``explain_image(masker=...)``
(the engine's hook for a caller's masker; nothing in the package is replaced).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import resource
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Accumulates time spent inside wrapped torch modules' forward passes."""

    def __init__(self, device: str):
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0
        self._t0 = 0.0

    def _sync(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def wrap(self, module):
        """Time every forward of ``module`` (nested calls counted once)."""
        orig = module.forward

        def timed(*a, **k):
            if self._depth == 0:
                self._sync()
                self._t0 = time.perf_counter()
            self._depth += 1
            try:
                return orig(*a, **k)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._sync()
                    self.seconds += time.perf_counter() - self._t0
                    self.calls += 1

        module.forward = timed
        return module

    def reset(self):
        self.seconds = 0.0
        self.calls = 0


def train_tokenizer(extra_texts):
    """A byte-level BPE tokenizer trained on the spot (BART's special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
    )
    tok.train_from_iterator(list(extra_texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>",
    )


#: Surrogate LM sizes (``--lm``): distilbart-xsum-12-6's configuration, and a tiny one
#: that only checks the script runs (the test suite uses it).
LM_SIZES = {
    "distilbart": dict(vocab_size=50264, d_model=1024, encoder_layers=12, decoder_layers=6, encoder_attention_heads=16,
                       decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096),
    "tiny": dict(vocab_size=4000, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
}


def distilbart_xsum_12_6(tokenizer, device, size="distilbart"):
    """BART with distilbart-xsum-12-6's configuration (or ``size`` of :data:`LM_SIZES`), random weights."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        **LM_SIZES[size],
        max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id, scale_embedding=False, normalize_before=False,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(cfg).eval().to(device)
    return model


def load_images(paths, max_side=None):
    import capshap

    kw = {} if max_side is None else {"max_side": max_side}
    return [(os.path.splitext(os.path.basename(p))[0], capshap.load_image(p, **kw)) for p in paths]


def run_shap(img, captioner, lm, tok, clock, mask, max_evals, batch_size, device):
    import shap

    n = {"captions": 0, "calls": 0}

    def f(x):
        x = np.asarray(x).reshape((-1,) + img.shape)
        n["calls"] += 1
        n["captions"] += len(x)
        return np.array(captioner.caption([np.clip(a, 0, 255).astype(np.uint8) for a in x]))

    wrapped = shap.models.TeacherForcing(f, similarity_model=lm, similarity_tokenizer=tok, batch_size=batch_size,
                                         device=device)
    masker = shap.maskers.Image(mask, img.shape)
    explainer = shap.Explainer(wrapped, masker, silent=True)
    clock.reset()
    t = time.perf_counter()
    sv = explainer(img[None].astype(np.float64), max_evals=max_evals, batch_size=batch_size, fixed_context=None)
    wall = time.perf_counter() - t
    return {"wall": wall, "model": clock.seconds, "calls": clock.calls, "captions": n["captions"],
            "values": np.asarray(sv.values[0]), "tokens": list(sv.output_names) if sv.output_names is not None else None}


def cpu_timed_masker(img, tree, mask, render_size):
    """A capshap Masker that adds up the CPU seconds its render threads spend (``.cpu``).

    Handed to ``explain_image(masker=...)``, the engine's hook for a caller's own masker:
    the same Masker explain_image would build (same tree, fill and render size), so the
    values do not change.
    """
    import threading

    from capshap.masking import Masker

    class CpuTimedMasker(Masker):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.cpu = 0.0
            self._lock = threading.Lock()

        def _timed(self, fn, *a):
            t = time.thread_time()
            try:
                return fn(*a)
            finally:
                with self._lock:
                    self.cpu += time.thread_time() - t

        def apply_rendered(self, visible, out=None):
            return self._timed(super().apply_rendered, visible, out)

        def visible_rendered(self, coalition):
            return self._timed(super().visible_rendered, coalition)

    return CpuTimedMasker(img, tree, mask, render_size=render_size)


def run_capshap(img, captioner, factory, clock, mask, max_evals, batch_size, channels, render_size="full"):
    from capshap import explain_image
    from capshap.masking import render_shape
    from capshap.regions import make_tree

    size = render_shape(img.shape, render_size, captioner)
    clock.reset()
    t = time.perf_counter()
    caption = captioner.caption([img])[0]
    scorer = factory.bind(caption) if hasattr(factory, "bind") else factory(caption)
    masker = cpu_timed_masker(img, make_tree("axis", img, channels=channels), mask, size)
    exp = explain_image(img, scorer, max_evals=max_evals, batch_size=batch_size, masker=masker)
    wall = time.perf_counter() - t
    caps = exp.captions
    return {"wall": wall, "model": clock.seconds, "calls": clock.calls,
            "captions": (len(caps) if caps is not None else 0) + 1, "values": exp.values, "tokens": exp.tokens,
            "timings": exp.timings, "n_evals": exp.n_evals, "mask_cpu": masker.cpu, "render": size}


def agreement(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return float("nan"), float("nan")
    diff = float(np.max(np.abs(a - b)))
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return diff, corr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=sorted(glob.glob(os.path.join(HERE, "..", "examples", "*.jpg"))))
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--mask", default="inpaint_ns")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-shap", action="store_true", help="only time capshap")
    ap.add_argument("--photos", type=int, default=0, help="use the first N sample photos (benchmarks/photos.py)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 500], help="max sides of the sample photos")
    ap.add_argument("--render-size", default="full", help="full, auto or N: capshap's render size")
    ap.add_argument("--max-side", type=int, default=None, help="fit --images to this max side (default: as loaded)")
    ap.add_argument("--lm", choices=sorted(LM_SIZES), default="distilbart",
                    help="surrogate LM size (tiny: only checks that the script runs)")
    args = ap.parse_args(argv)
    if args.render_size not in ("full", "auto"):
        args.render_size = int(args.render_size)
    logging.basicConfig(level=logging.WARNING)

    import torch

    import capshap
    from capshap.captioners.builtin import BuiltinCaptioner
    from capshap.scoring.surrogate import SurrogateFactory

    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {dev}: no CUDA GPU is visible here")
    print(f"# capshap vs shap: max_evals={args.max_evals} batch_size={args.batch_size} mask={args.mask} "
          f"device={dev} ({torch.cuda.get_device_name(0) if dev.startswith('cuda') else f'{os.cpu_count()} CPUs'}) "
          f"torch threads={torch.get_num_threads()}")
    clock = Clock(dev)
    captioner = BuiltinCaptioner(device=dev, batch_size=args.batch_size)
    clock.wrap(captioner._get_model())
    labels = capshap.captioners.builtin.load_imagenet_labels()
    texts = [f"a photo of a {lab}" for lab in labels] * 2
    tok = train_tokenizer(texts)
    t = time.perf_counter()
    lm = clock.wrap(distilbart_xsum_12_6(tok, dev, args.lm))
    print(f"# surrogate LM built in {time.perf_counter() - t:.1f} s "
          f"({sum(p.numel() for p in lm.parameters()) / 1e6:.0f} M parameters)")
    surrogate = SurrogateFactory(captioner, lm, tok, device=dev, batch_size=args.batch_size)
    own = capshap.OwnHeadFactory(captioner)

    rows = []
    cores = os.cpu_count() or 1
    head = ("| image | size | pipeline | wall s | ratio to shap | model s | mask s (cpu) | floor s | wall / floor "
            "| other s | model share | model calls | captions | max abs diff | corr | peak RSS MiB |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    if args.photos:
        from photos import NAMES, photos

        inputs = [(f"{n}", im, side) for side in args.sizes for n, im in photos(side, NAMES[: args.photos])]
    else:
        inputs = [(n, im, max(im.shape[:2])) for n, im in load_images(args.images, args.max_side)]
    for name, img, side in inputs:
        res = {}
        rss = {}
        if not args.skip_shap:
            res["shap"] = run_shap(img, captioner, lm, tok, clock, args.mask, args.max_evals, args.batch_size, dev)
            rss["shap"] = peak_rss_mb()
        res["capshap surrogate (shap tree)"] = run_capshap(img, captioner, surrogate, clock, args.mask,
                                                           args.max_evals, args.batch_size, channels=True,
                                                           render_size=args.render_size)
        rss["capshap surrogate (shap tree)"] = peak_rss_mb()
        res["capshap own head"] = run_capshap(img, captioner, own, clock, args.mask, args.max_evals,
                                              args.batch_size, channels=False, render_size=args.render_size)
        rss["capshap own head"] = peak_rss_mb()
        for key, r in res.items():
            ratio = res["shap"]["wall"] / r["wall"] if "shap" in res else float("nan")
            diff = corr = float("nan")
            if key.startswith("capshap surrogate") and "shap" in res and r.get("render") is None:
                sv = res["shap"]["values"]
                ours = r["values"]
                if sv.shape == ours.shape:
                    diff, corr = agreement(sv, ours)
            other = r["wall"] - r["model"]
            mask_cpu = r.get("mask_cpu", float("nan"))
            floor = r["model"] + mask_cpu / cores if key != "shap" else float("nan")
            size = f"{img.shape[1]}x{img.shape[0]}"
            row = dict(image=name, size=size, pipeline=key, wall=r["wall"], ratio=ratio, model=r["model"],
                       other=other, share=r["model"] / r["wall"], calls=r["calls"], captions=r["captions"],
                       diff=diff, corr=corr, floor=floor, to_floor=r["wall"] / floor, rss=rss[key], side=side)
            rows.append(row)
            print(f"| {name} | {size} | {key} | {r['wall']:.2f} | {ratio:.1f}x | {r['model']:.2f} | {mask_cpu:.2f} | "
                  f"{floor:.2f} | {row['to_floor']:.2f} | {other:.2f} | "
                  f"{100 * row['share']:.0f}% | {r['calls']} | {r['captions']} | {diff:.2g} | {corr:.4f} | "
                  f"{row['rss']:.0f} |", flush=True)
    print()
    print(f"render size: {args.render_size}")
    # on cuda the model share is the GPU's busy share (every timed forward ends in torch.cuda.synchronize)
    print("| max side | pipeline | median wall s | images / min | median ratio to shap | median model share "
          "| median wall / floor |")
    print("|---|---|---|---|---|---|---|")
    groups = dict.fromkeys((r["side"], r["pipeline"]) for r in rows)
    for side, key in groups:
        sel = [r for r in rows if r["pipeline"] == key and r["side"] == side]
        wall = statistics.median(r["wall"] for r in sel)
        print(f"| {side} | {key} | {wall:.2f} | {60 / wall:.1f} | "
              f"{statistics.median(r['ratio'] for r in sel):.1f}x | "
              f"{100 * statistics.median(r['share'] for r in sel):.0f}% | "
              f"{statistics.median(r['to_floor'] for r in sel):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
