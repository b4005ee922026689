"""``capshap explain``: settings from the options, then the shared run path."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from capshap.cli.output import Row, err, out_stem, print_summary, save_outputs
from capshap.cli.parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from capshap.registry import SpecError, parse_options
from capshap.settings import SettingError, Settings

__all__ = ["settings_from_args", "cmd_explain"]

logger = logging.getLogger("capshap.cli")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's :class:`Settings` from ``capshap explain`` options (raises UsageError)."""
    try:
        return Settings(
            captioner=args.captioner,
            captioner_options=parse_options(args.captioner_opt, "--captioner-opt"),
            scorer=args.scorer,
            scorer_options=parse_options(args.scorer_opt, "--scorer-opt"),
            mask=args.mask,
            max_evals=args.max_evals,
            batch_size=args.batch_size,
            fixed_context=args.fixed_context,
            seed=args.seed,
            tree=args.tree,
            n_segments=args.segments,
            max_side=None if args.no_resize else args.max_side,
            max_pixels=args.max_pixels,
            device=args.device,
            prompt=args.prompt,
            generate=parse_options(args.generate, "--generate") or None,
            caption=args.caption,
            contrast=args.contrast,
            tokens=args.tokens,
            cache_dir=args.cache,
        )
    except SpecError as e:
        raise UsageError(str(e)) from None


def _usage(e: ValueError) -> UsageError:
    return UsageError(e.as_option() if isinstance(e, SettingError) else str(e))


def cmd_explain(args: argparse.Namespace) -> int:
    from capshap.images import ImageError, image_names
    from capshap.progress import Bars
    from capshap.run import inputs_from, limits_of, prepare, run_serial

    # ---- validate everything before any model loads or any image is read
    try:
        import matplotlib  # noqa: F401  (the plots; checked before hours of work)
    except ImportError:
        raise UsageError("the plots need matplotlib: pip install 'capshap[plots]'") from None
    settings = settings_from_args(args)
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise UsageError(f"{p}: no such file or folder")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    try:
        settings.validate()
    except SpecError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise _usage(e) from None
    names = image_names(args.paths, args.recursive)
    try:
        parts = prepare(settings)
        if parts.trees is not None and parts.trees.is_user:
            parts.trees.check_names(names)
    except SpecError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise _usage(e) from None
    try:
        limits, who = limits_of(parts)
        items = inputs_from(args.paths, parts.settings, args.recursive, limits, who)
    except (ImageError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)

    from capshap.viz.report import Report

    report = Report(f"capshap: {', '.join(args.paths)}")
    rows: list[Row] = []
    used: set[str] = set()
    bars = Bars(len(names), enabled=not args.quiet, notebook=False)
    t_run = time.perf_counter()
    interrupted = False
    try:
        for res in run_serial(items, parts, n_images=len(names), bars=bars):
            row = Row(res.name, caption=res.caption, seconds=res.seconds)
            rows.append(row)
            if not res.ok:
                row.error = res.error
                verb = "skipped" if res.stage == "loading" else "failed"
                err(f"capshap: {verb} {res.name}: {res.error}")
                report.add_failure(res.name, res.error or "")
                continue
            exp = res.explanation
            assert exp is not None
            row.evals = exp.n_evals
            try:
                links = save_outputs(exp, out, out_stem(res.name, used), args.grid, args.outline)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                row.error = f"saving failed: {exc}"
                err(f"capshap: failed {res.name}: {row.error}")
                report.add_failure(res.name, row.error)
                continue
            report.add(exp, links=links, meta={"evaluations": exp.n_evals, "s": f"{row.seconds:.1f}"})
            logger.info("%s: %r, %d evaluations in %.1f s", res.name, exp.caption, exp.n_evals, row.seconds)
    except KeyboardInterrupt:
        interrupted = True
        err("capshap: interrupted; writing what is done")
    finally:
        bars.close()
    page = report.write(out / "index.html") if not args.no_html and (report.entries or report.failures) else None
    wall = time.perf_counter() - t_run
    if not args.quiet:
        print_summary(rows, out, page, wall)
    if interrupted:
        return EXIT_INTERRUPTED
    if not rows:
        err(f"capshap: no images found in {', '.join(args.paths)}")
        return EXIT_FAILED
    return EXIT_FAILED if any(r.error for r in rows) else EXIT_OK
