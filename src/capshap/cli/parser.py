"""Argument parsing of the ``capshap`` command: every subcommand's options and help.

Registries supply the lists of captioners, scorers, trees and fills, so ``--help`` shows
what is registered (including kinds registered from Python before ``main()`` runs).
"""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import Any

__all__ = ["build_parser", "UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class UsageError(Exception):
    """A bad option value; main() prints it and exits with code 2."""


def _positive_int(option: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{v} is too small; {option} must be at least {minimum}")
        return v

    return parse


def _finite_positive(option: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: {option} must be a finite number >= 0")
        return v

    return parse


def _render_size(text: str) -> str | int:
    t = text.strip().lower()
    if t in ("full", "auto"):
        return t
    try:
        v = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not full, auto or a number of pixels") from None
    if v < 8:
        raise argparse.ArgumentTypeError(f"{v} is too small; give at least 8 pixels")
    return v


def _grid_value(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive integer nor 'all'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not positive; give N >= 1 or 'all'")
    return v


def _fixed_context(text: str) -> int | None:
    t = text.strip().lower()
    if t == "none":
        return None
    if t in ("0", "1"):
        return int(t)
    raise argparse.ArgumentTypeError(f"{text!r} is not one of none, 0, 1")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; adds "(default: X)" where a default says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "default" in text or d is None or d is False or d is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: {d})"


def _para(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=88)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``capshap`` command (all subcommands)."""
    from capshap import __version__
    from capshap.captioners import CAPTIONERS
    from capshap.masking import fill_help
    from capshap.regions import TREES
    from capshap.runners import RUNNERS
    from capshap.scoring import SCORERS

    CAPTIONER_HELP, SCORER_HELP, TREE_HELP = CAPTIONERS.help_text(), SCORERS.help_text(), TREES.help_text()
    RUNNER_HELP = RUNNERS.help_text()

    p = argparse.ArgumentParser(
        prog="capshap",
        description=_para(
            "Explain image captions word by word: which regions of an image made the "
            "captioner say each word (Owen values over image regions)."
        ),
        epilog="Exit codes: 0 all good, 1 some images failed (the others are saved), 2 usage error.\n"
        "Run 'capshap explain --help' for the options of the main job.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"capshap {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: Any, where: Any = None) -> None:
        g = (where if where is not None else sp).add_mutually_exclusive_group()
        g.add_argument("-q", "--quiet", action="store_true", help="print errors only: no progress bars, no summary")
        g.add_argument("-v", "--verbose", action="count", default=0, help="more log messages (-v info, -vv debug)")

    e = sub.add_parser(
        "explain",
        help="caption and explain images (the main job)",
        description=_para(
            "Caption each image, then explain every word of its caption: which regions "
            "raise or lower the word's score. Writes NAME.png (heatmaps), NAME.json (caption, tokens, "
            "scores, top regions, parameters, timings, versions), NAME.npz (the values) per image and "
            "one index.html for the run into --out."
        ),
        epilog="Captioners (--captioner):\n" + CAPTIONERS.describe() + "\n"
        "Scorers (--scorer):\n" + SCORERS.describe() + "\n"
        "Examples:\n"
        "  capshap explain examples/ --out out/\n"
        "  capshap explain photo.jpg --tree slic --segments 80 --grid 20\n"
        "  capshap explain photos/ --captioner hf:nlpconnect/vit-gpt2-image-captioning --device cuda\n"
        "  capshap explain photos/ --captioner azure --scorer surrogate:sshleifer/distilbart-xsum-12-6 --cache .capcache\n"
        "Re-running the same command into the same --out resumes: images already explained with the "
        "same settings are skipped (see OUT/manifest.json), failed ones are redone.\n"
        "Exit codes: 0 all good, 1 some images failed (reported, the others are saved), 2 usage error "
        "(also: --out in use by another run, not writable, or holding a run with other settings), "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM).",
        formatter_class=_Formatter,
    )
    # options in groups, in the order a user decides them
    g_in = e.add_argument_group("input")
    g_cap = e.add_argument_group("captioner")
    g_score = e.add_argument_group("scoring")
    g_mask = e.add_argument_group("masking and tree")
    g_budget = e.add_argument_group("budget")
    g_out = e.add_argument_group("output")
    g_scale = e.add_argument_group("scale (several images at once, Ray)")
    g_in.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    g_out.add_argument("-o", "--out", default="out", metavar="DIR", help="output folder (created if missing)")
    g_cap.add_argument("--captioner", default="builtin", metavar="SPEC",
                   help=f"who writes the caption: {CAPTIONER_HELP}. builtin is EfficientNet-Lite0 "
                   "'a photo of a {label}' (offline; builtin:3 names three labels); azure reads "
                   "AZURE_VISION_ENDPOINT and AZURE_VISION_KEY")
    g_score.add_argument("--scorer", default="auto", metavar="SPEC",
                   help=f"how a masked image is scored against the caption: {SCORER_HELP}. auto: the "
                   "captioner's own head (builtin, hf) else presence; own: teacher-force the captioner; "
                   "presence: 1/0 per word in the masked image's caption; surrogate: a language model "
                   "scores the caption given the masked image's caption (the SHAP notebook's method)")
    g_cap.add_argument("--captioner-opt", action="append", default=None, metavar="K=V,...",
                   help="options of the chosen captioner kind (repeatable), e.g. timeout=60 for azure; "
                   "the kinds and their options are listed below")
    g_cap.add_argument("--base-url", default=None, metavar="URL",
                   help="the server of an openai: captioner, e.g. http://localhost:8000/v1 for vLLM "
                   "(default: OPENAI_BASE_URL, else OpenAI's API); the key comes from OPENAI_API_KEY")
    g_score.add_argument("--scorer-opt", action="append", default=None, metavar="K=V,...",
                   help="options of the chosen scorer, e.g. score=logprob")
    g_score.add_argument("--tokens", choices=("words", "pieces"), default="words",
                   help="explain whole words (sub-word pieces merged, their values summed) or the model's pieces")
    g_score.add_argument("--caption", default=None, metavar="TEXT",
                   help="explain this caption instead of the one the captioner writes (any scorer; own-head and "
                   "surrogate scorers teacher-force it, presence looks for its words in the masked images' captions; "
                   "the builtin captioner's own head scores only its 'a photo of a LABEL' template)")
    g_score.add_argument("--contrast", default=None, metavar="TEXT",
                   help="explain why the model prefers its caption over TEXT: the score is log p(caption) - "
                   "log p(TEXT), whole captions, teacher-forced (own-head and surrogate scorers)")
    g_score.add_argument("--grounded-above", type=float, default=0.5, metavar="X",
                   help="a word whose evidence (its score on the image minus its score with the image hidden, "
                   "in score units) is above X is 'grounded' in the outputs")
    g_score.add_argument("--contradicted-below", type=float, default=-0.5, metavar="X",
                   help="a word whose evidence is below X is 'contradicted' (the image lowers it); between the "
                   "two thresholds a word is 'prior'-driven (the model says it with or without the image)")
    g_mask.add_argument("--mask", default="inpaint_ns", metavar="FILL", help="how hidden regions are filled: " + fill_help().replace(", or a background image array", ""))
    g_budget.add_argument("--max-evals", type=_positive_int("--max-evals", 3), default=300, metavar="N",
                   help="model evaluations per image (the budget; with --tolerance, the cap)")
    g_budget.add_argument("--tolerance", type=_finite_positive("--tolerance"), default=0.0, metavar="F",
                   help="adaptive budget: stop once what is left to expand cannot change any word's credit "
                   "by more than F times the largest word total, e.g. 0.02 (default 0: spend all of --max-evals)")
    g_budget.add_argument("--batch-size", type=_positive_int("--batch-size"), default=50, metavar="N",
                   help="masked images per model call")
    g_scale.add_argument("--model-batch-size", type=_positive_int("--model-batch-size"), default=None, metavar="N",
                   help="images per forward pass of the captioner (default: its own; lower it when a GPU runs "
                   "out of memory)")
    g_mask.add_argument("--fixed-context", type=_fixed_context, default=None, metavar="none|0|1",
                   help="none: exact Owen values where the budget reaches; 0 or 1: cheaper one-sided "
                   "variants (context all masked / all visible) (default: none)")
    g_mask.add_argument("--tree", default="axis", metavar="SPEC",
                   help=f"the region hierarchy: {TREE_HELP}. axis: shap's halves/quarters/...; "
                   "slic/felzenszwalb/quickshift: superpixels merged into a tree; labels:FILE.png: one "
                   "integer label map for every image; labels:FOLDER: FOLDER/NAME.png for image NAME.jpg; "
                   "masks:FOLDER: the masks FOLDER/NAME/*.png and FOLDER/NAME_*.png (non-zero = inside) "
                   "for image NAME.jpg. Segmentations may have the image's stored or fitted size")
    g_mask.add_argument("--segments", type=_positive_int("--segments", 2), default=64, metavar="N",
                   help="number of superpixels for slic, felzenszwalb, quickshift")
    g_mask.add_argument("--channels", action="store_true",
                   help="shap's channel leaves on the axis tree: each colour channel is its own region "
                   "(values (H, W, 3, T), number for number shap's Image masker with channels)")
    size = g_in.add_mutually_exclusive_group()
    size.add_argument("--max-side", type=_positive_int("--max-side", 8), default=500, metavar="PX",
                      help="shrink images so the longer side is at most PX pixels")
    size.add_argument("--no-resize", action="store_true", help="explain images at their full size")
    g_mask.add_argument("--render-size", type=_render_size, default="full", metavar="full|auto|N",
                   help="resolution masked images are rendered at: full (the loaded image; exact shap parity), "
                   "auto (the size the captioner resizes to, e.g. 224 px for builtin: about 2x faster at 500 px, "
                   "values correlate 0.88-0.96 with full) or N (longer side N px). Values stay per pixel of the "
                   "loaded image")
    g_in.add_argument("--max-pixels", type=_positive_int("--max-pixels", 64), default=50_000_000, metavar="N",
                   help="refuse images with more pixels (width x height) than this, before decoding them")
    g_mask.add_argument("--seed", type=int, default=0, help="seed that breaks ties in the search order")
    g_cap.add_argument("--device", default=None, metavar="DEV",
                   help="torch device for the models: cpu, cuda, cuda:1, mps (default: builtin on cpu, "
                   "Hugging Face models on cuda if available)")
    g_cap.add_argument("--generate", default=None, metavar="K=V,...",
                   help="generation settings for hf: captioners, e.g. max_new_tokens=20,num_beams=3")
    g_cap.add_argument("--prompt", default=None, metavar="TEXT",
                   help="the captioning prompt: chat models (hf: LLaVA, Qwen2-VL, SmolVLM, Gemma 3; openai:) "
                   "default to 'Describe this image in one sentence.', PaliGemma to 'caption en'; BLIP and "
                   "GIT continue a text prefix such as 'a picture of'. It is never part of the explained caption")
    g_cap.add_argument("--cache", default=None, metavar="DIR",
                   help="caption cache folder (azure, hf): re-runs cost no API calls for images seen before")
    g_out.add_argument("--grid", type=_grid_value, default=None, metavar="N|all",
                   help="also write NAME_grid.png: the first N masked images (or all) with the caption "
                   "made for each (or the scores, for scorers that make no captions)")
    g_out.add_argument("--outline", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the leaf segments' outlines in the plots (default: on for segment trees)")
    g_scale.add_argument("--in-flight", type=_positive_int("--in-flight"), default=None, metavar="N",
                   help="explain N images at once on this machine, their model calls stacked into one "
                   "(default: 8 on a GPU, 4 for a captioner behind a server, else 1: a serial run, bit for bit "
                   "the same values every time); stacked CPU batches change values by ~1e-6")
    g_scale.add_argument("--runner", default="auto", metavar="NAME",
                   help=f"how the images are run: {RUNNER_HELP}. auto: in flight on a GPU or for a captioner behind a "
                   "server, else serial")
    g_scale.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the images over a Ray cluster: HOST:PORT or ray://HOST:PORT, or no address "
                   "to start Ray on this machine (needs pip install 'capshap[ray]')")
    g_scale.add_argument("--workers", type=_positive_int("--workers"), default=None, metavar="N",
                   help="Ray actors (default: the cluster's CPUs, or GPUs / --gpus-per-worker)")
    g_scale.add_argument("--gpus-per-worker", type=_finite_positive("--gpus-per-worker"), default=0, metavar="G",
                   help="GPUs each Ray actor asks for (0: CPU actors)")
    g_in.add_argument("-r", "--recursive", action="store_true", help="also look for images in subfolders")
    g_out.add_argument("--no-html", action="store_true", help="do not write index.html")
    g_out.add_argument("--overwrite", action="store_true",
                   help="explain every image again even if --out holds a run (with the same or other "
                   "settings); without it a re-run skips the images already explained and refuses other settings")
    g_out.add_argument("--adopt", action="store_true",
                   help="write into --out although it holds files capshap did not write (they are never "
                   "overwritten: outputs that would take their names get other names)")
    g_out.add_argument("--wait-lock", action="store_true",
                   help="if another capshap run is writing --out, wait for it to finish instead of stopping")
    common(e, g_out)

    s = sub.add_parser(
        "show",
        help="draw a saved explanation again",
        description=_para(
            "Re-plot saved explanations (NAME.npz + NAME.json): writes NAME.png next to each "
            "file, or into --out. Segment trees get their outlines drawn again."
        ),
        formatter_class=_Formatter,
    )
    s.add_argument("files", nargs="+", metavar="FILE.npz", help="saved explanations (NAME.npz or NAME.json)")
    s.add_argument("-o", "--out", default=None, metavar="DIR", help="write the pictures here instead of next to the files")
    s.add_argument("--grid", type=_grid_value, default=None, metavar="N|all", help="also write NAME_grid.png")
    s.add_argument("--outline", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the leaf segments' outlines (default: on for segment trees)")
    s.add_argument("--tokens", default=None, metavar="T1,T2",
                   help="only these tokens (comma-separated words or indices)")
    common(s)

    v = sub.add_parser("evaluate", help="faithfulness metrics of a saved run",
                       description=_para(
                           "Deletion/insertion curves against random orders, and with --boxes a "
                           "pointing game, for every explanation saved in RUN_DIR; writes a metrics table "
                           "as JSON and Markdown (metrics.json, metrics.md)."
                       ), formatter_class=_Formatter)
    v.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'capshap explain'")
    v.add_argument("--boxes", default=None, metavar="FILE",
                   help='JSON file of object boxes per image: {"image": [[x0, y0, x1, y1], ...]}')
    v.add_argument("--captioner", default=None, metavar="SPEC",
                   help="rebuild this captioner (registry spec) to re-score; it must equal the one the run "
                   "stored. Without it only the builtin captioner is rebuilt from the run's files")
    v.add_argument("--scorer", default=None, metavar="SPEC",
                   help="rebuild this scorer; it must equal the run's. Without it only auto/own/presence "
                   "are rebuilt from the run's files")
    v.add_argument("--trust-run", action="store_true",
                   help="rebuild everything the run stored (captioner, scorer, their options, prompt, "
                   "generation settings). Only for runs you trust: hf: specs download and run models, "
                   "azure uses your key")
    v.add_argument("--device", default=None, metavar="DEV", help="torch device for re-scoring")
    v.add_argument("--cache", default=None, metavar="DIR", help="caption cache folder (azure, hf)")
    v.add_argument("--batch-size", type=_positive_int("--batch-size"), default=50, metavar="N",
                   help="masked images per model call")
    v.add_argument("--steps", type=_positive_int("--steps"), default=20, metavar="N",
                   help="points on each deletion / insertion curve")
    v.add_argument("--random-orders", type=_positive_int("--random-orders"), default=5, metavar="N",
                   help="random orders averaged for the baseline")
    v.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    v.add_argument("--tolerance", type=_finite_positive("--tolerance"), default=15.0, metavar="PX",
                   help="pointing game: a hit when the top pixel lies within PX pixels of a box")
    v.add_argument("-o", "--out", default=None, metavar="DIR",
                   help="where metrics.json and metrics.md go (default: RUN_DIR)")
    v.add_argument("--recompute", action="store_true",
                   help="score the deletion / insertion curves again even where an earlier evaluate into the "
                   "same folder scored them with the same files and settings (by default they are reused, so "
                   "adding --boxes scores nothing again)")
    common(v)

    ver = sub.add_parser("version", help="print the versions of capshap and its libraries", formatter_class=_Formatter)
    common(ver)
    return p
