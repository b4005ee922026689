"""``capshap explain``: settings from the options, then the shared run path."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from capshap.cli.output import Row, err, print_summary
from capshap.cli.parser import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    UsageError,
)
from capshap.registry import SpecError, parse_options
from capshap.runfolder import RunFolder
from capshap.settings import SettingError, Settings

__all__ = ["Terminated", "cmd_explain", "settings_from_args"]

logger = logging.getLogger("capshap.cli")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's :class:`Settings` from ``capshap explain`` options (raises UsageError)."""
    try:
        return Settings(
            captioner=args.captioner,
            captioner_options=_captioner_options(args),
            scorer=args.scorer,
            scorer_options=parse_options(args.scorer_opt, "--scorer-opt"),
            mask=args.mask,
            max_evals=args.max_evals,
            tolerance=args.tolerance,
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
            tokens=args.tokens,
            render_size=args.render_size,
            cache_dir=args.cache,
        )
    except SpecError as e:
        raise UsageError(str(e)) from None


def _captioner_options(args: argparse.Namespace) -> dict:
    """``--captioner-opt`` plus ``--base-url`` (an option of openai: captioners only)."""
    opts = parse_options(args.captioner_opt, "--captioner-opt")
    if args.base_url is not None:
        if not str(args.captioner).strip().lower().startswith("openai:"):
            raise SpecError("--base-url", args.base_url, "applies to openai:MODEL captioners only")
        opts["base_url"] = args.base_url
    return opts


def _usage(e: ValueError) -> UsageError:
    return UsageError(e.as_option() if isinstance(e, SettingError) else str(e))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (exit code 143)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the run lasts, SIGTERM raises :class:`Terminated` in the main thread (so the
    run stops the way Ctrl-C stops it); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_explain(args: argparse.Namespace) -> int:
    """``capshap explain``: returns the exit code (0, 1, 2 via UsageError, 130, 143)."""
    try:
        with _sigterm_as_interrupt():
            return _explain(args)
    except Terminated:
        err("capshap: terminated")
        return EXIT_TERMINATED


def _explain(args: argparse.Namespace) -> int:
    # ---- validate everything before any model loads or any image is read
    import importlib.util

    from capshap.runfolder import RunFolder, RunFolderError, list_inputs

    if importlib.util.find_spec("matplotlib") is None:  # the plots; checked before hours of work
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
    files = list_inputs(args.paths, args.recursive)
    try:
        rf = RunFolder.open(out, settings, files, overwrite=args.overwrite, wait_lock=args.wait_lock,
                            html=not args.no_html, grid=args.grid, title=f"capshap: {', '.join(args.paths)}",
                            on_wait=lambda msg: err(f"capshap: {msg}"))
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    try:
        return _run(args, rf, settings)
    finally:
        rf.close()


def _run(args: argparse.Namespace, rf: RunFolder, settings: Settings) -> int:
    """Explain the images of ``rf`` not done yet; save each, rewrite index.html after each."""
    from capshap.progress import Bars
    from capshap.run import (
        limits_of,
        prepare,
        run_images,
        runner_options,
        within_limits,
    )
    from capshap.runfolder import SaveError, load_inputs

    try:
        parts = prepare(settings)
        if parts.trees is not None and parts.trees.is_user:
            parts.trees.check_names([f.name for f in rf.inputs])
    except SpecError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise _usage(e) from None
    todo = rf.todo()
    rows: list[Row] = []
    for f in rf.done_before():
        rec = rf.record(f.key)
        rows.append(Row(f.name, caption=str(rec.get("caption") or ""), evals=int(rec.get("evaluations") or 0),
                        earlier=True))
    if rows:
        logger.info("%d of %d images were explained by an earlier run into %s; skipping them",
                    len(rows), len(rf.inputs), rf.path)
    bars = Bars(len(todo), enabled=not args.quiet, notebook=False)
    t_run = time.perf_counter()
    stopped: KeyboardInterrupt | None = None
    current: tuple[Row, str | None] | None = None
    try:
        items = within_limits(load_inputs(todo, parts.settings), *limits_of(parts))
        runner = runner_options(len(todo), in_flight=args.in_flight, ray=args.ray, workers=args.workers,
                                gpus_per_worker=args.gpus_per_worker, device=settings.device,
                                captioner=parts.captioner)
        for res in run_images(items, parts, n_images=len(todo), bars=bars, **runner):
            row = Row(res.name, caption=res.caption, seconds=res.seconds, error="not saved")
            rows.append(row)
            current = (row, res.source)
            if not res.ok:
                row.error = res.error
                verb = "skipped" if res.stage == "loading" else "failed"
                err(f"capshap: {verb} {res.name}: {res.error}")
                rf.record_failure(res.source, res.error or "", res.stage)
            else:
                exp = res.explanation
                assert exp is not None
                row.evals = exp.n_evals
                try:
                    rf.save(exp, res.source, outline=args.outline, seconds=res.seconds)
                except SaveError as exc:
                    row.error = f"saving failed: {exc}"
                    err(f"capshap: failed {res.name}: {row.error}")
                    rf.record_failure(res.source, row.error, "saving")
                else:
                    row.error = None
                    logger.info("%s: %r, %d evaluations in %.1f s", res.name, exp.caption, exp.n_evals, row.seconds)
            _write_index(rf)
    except KeyboardInterrupt as e:
        stopped = e
        if current is not None and current[0].error == "not saved":
            # exact: explained only when all its files are written (the signal may come after)
            done = current[1] is not None and rf.is_done(current[1])
            current[0].error = None if done else "interrupted before its files were written"
        err("capshap: terminated; index.html lists what is done" if isinstance(e, Terminated)
            else "capshap: interrupted; index.html lists what is done")
    finally:
        bars.close()
    if stopped is None and len(rf.inputs) > 1:
        _write_summary(rf, settings)
    page = _write_index(rf)
    wall = time.perf_counter() - t_run
    if not args.quiet:
        print_summary(rows, rf.path, page, wall, total=len(rf.inputs))
    if stopped is not None:
        if isinstance(stopped, Terminated):
            return EXIT_TERMINATED
        return EXIT_INTERRUPTED
    if not rows:
        err(f"capshap: no images found in {', '.join(args.paths)}")
        return EXIT_FAILED
    return EXIT_FAILED if any(r.error for r in rows) else EXIT_OK


def _write_summary(rf: RunFolder, settings: Settings) -> None:
    """summary.json and summary.html: per-word statistics across the run's images (with
    the share of credit inside the masks of a masks:FOLDER tree)."""
    from capshap.summary import Summary, mask_regions, write_summary

    kind, _, arg = settings.tree.partition(":")
    summary = Summary(mask_regions(arg) if kind == "masks" and arg else None)
    try:
        for exp in rf.done_explanations():
            summary.add(exp)
        if summary.to_dict().get("images"):
            write_summary(summary.to_dict(), rf.path)
    except (OSError, ValueError) as e:
        err(f"capshap: could not write {rf.path / 'summary.json'}: {e}")


def _write_index(rf: RunFolder) -> Path | None:
    try:
        return rf.write_index()
    except OSError as e:
        err(f"capshap: could not write {rf.path / 'index.html'}: {e.strerror or e}")
        return None
