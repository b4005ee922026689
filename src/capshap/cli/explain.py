"""``capshap explain``: options -> :class:`Settings` (by a table) -> :class:`capshap.run.Run`.

Every option of ``capshap explain`` is in exactly one of the tables below: it sets a
:class:`~capshap.settings.Settings` field (:data:`SETTING_OF`, or a converter in
:data:`CONVERTED`), a run-folder option (:data:`FOLDER_OF`), or only steers the command
itself (:data:`COMMAND_ONLY`). The tests check that no option is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from capshap.cli.output import Row, err, grounding_of, print_summary
from capshap.cli.parser import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    UsageError,
)
from capshap.registry import SpecError, parse_options
from capshap.settings import SettingError, Settings

__all__ = ["Terminated", "cmd_explain", "settings_from_args", "folder_from_args",
           "SETTING_OF", "CONVERTED", "FOLDER_OF", "COMMAND_ONLY"]

logger = logging.getLogger("capshap.cli")

#: option dest -> the Settings field it sets, as given
SETTING_OF = {
    "captioner": "captioner",
    "scorer": "scorer",
    "mask": "mask",
    "max_evals": "max_evals",
    "tolerance": "tolerance",
    "batch_size": "batch_size",
    "fixed_context": "fixed_context",
    "seed": "seed",
    "tree": "tree",
    "segments": "n_segments",
    "channels": "channels",
    "model_batch_size": "batch_size_model",
    "max_pixels": "max_pixels",
    "device": "device",
    "prompt": "prompt",
    "caption": "caption",
    "contrast": "contrast",
    "tokens": "tokens",
    "render_size": "render_size",
    "cache": "cache_dir",
    "runner": "runner",
    "in_flight": "in_flight",
    "workers": "workers",
    "gpus_per_worker": "gpus_per_worker",
    "grounded_above": "grounded_above",
    "contradicted_below": "contradicted_below",
}


def _captioner_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--captioner-opt`` plus ``--base-url`` (an option of openai: captioners only)."""
    opts = parse_options(args.captioner_opt, "--captioner-opt")
    if args.base_url is not None:
        if not str(args.captioner).strip().lower().startswith("openai:"):
            raise SpecError("--base-url", args.base_url, "applies to openai:MODEL captioners only")
        opts["base_url"] = args.base_url
    return {"captioner_options": opts}


def _ray(args: argparse.Namespace) -> dict[str, Any]:
    """``--ray [ADDRESS]``: the Ray runner (no address: a local Ray)."""
    if args.ray is None:
        return {}
    return {"runner": "ray", "ray_address": None if args.ray == "local" else args.ray}


#: option dests -> a converter of the parsed options to Settings fields
CONVERTED: dict[tuple[str, ...], Callable[[argparse.Namespace], dict[str, Any]]] = {
    ("captioner_opt", "base_url"): _captioner_options,
    ("scorer_opt",): lambda a: {"scorer_options": parse_options(a.scorer_opt, "--scorer-opt")},
    ("generate",): lambda a: {"generate": parse_options(a.generate, "--generate") or None},
    ("max_side", "no_resize"): lambda a: {"max_side": None if a.no_resize else a.max_side},
    ("ray",): _ray,
}

#: option dest -> the :class:`~capshap.run.FolderOptions` field it sets (and how)
FOLDER_OF: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "overwrite": ("overwrite", bool),
    "adopt": ("adopt", bool),
    "wait_lock": ("wait_lock", bool),
    "no_html": ("html", lambda v: not v),
    "grid": ("grid", lambda v: v),
    "outline": ("outline", lambda v: v),
}

#: options of the command itself: what to read, where to write, what to print
COMMAND_ONLY = ("paths", "out", "recursive", "quiet", "verbose", "command")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's :class:`Settings` from ``capshap explain`` options (raises UsageError)."""
    try:
        values = {field: getattr(args, dest) for dest, field in SETTING_OF.items()}
        for convert in CONVERTED.values():
            values.update(convert(args))
        if args.ray is not None and args.runner not in ("auto", "ray"):
            raise SpecError("--ray", args.ray, f"conflicts with --runner {args.runner}; give one of them")
        return Settings(**values)
    except SpecError as e:
        raise UsageError(str(e)) from None


def folder_from_args(args: argparse.Namespace) -> Any:
    """The run folder's :class:`~capshap.run.FolderOptions` from the options."""
    from capshap.run import FolderOptions

    return FolderOptions(title=f"capshap: {', '.join(args.paths)}",
                         **{field: conv(getattr(args, dest)) for dest, (field, conv) in FOLDER_OF.items()})


def _usage(e: Exception) -> UsageError:
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

    from capshap.run import Run
    from capshap.runfolder import RunFolderError

    if importlib.util.find_spec("matplotlib") is None:  # the plots; checked before hours of work
        raise UsageError("the plots need matplotlib: pip install 'capshap[plots]'") from None
    settings = settings_from_args(args)
    try:
        run = Run(args.paths, settings, recursive=args.recursive, out=args.out, folder=folder_from_args(args),
                  progress=not args.quiet, notebook=False, on_wait=lambda msg: err(f"capshap: {msg}"))
    except (ValueError, FileNotFoundError) as e:
        raise _usage(e) from None
    try:
        run.open_folder()
    except RunFolderError as e:
        raise UsageError(str(e)) from None
    try:
        return _run(args, run)
    finally:
        run.close()


def _run(args: argparse.Namespace, run: Any) -> int:
    """Explain the images of the run folder not done yet, reporting each as it comes."""
    from capshap.runners.ray import RayUnavailable

    rf = run.folder
    rows: list[Row] = []
    for f in rf.done_before():
        rec = rf.record(f.key)
        rows.append(Row(f.name, caption=str(rec.get("caption") or ""), evals=int(rec.get("evaluations") or 0),
                        earlier=True))
    t_run = time.perf_counter()
    stopped: KeyboardInterrupt | None = None
    started = False
    try:
        for res in run.outcomes():
            started = True
            rows.append(_row(res))
    except (SettingError, SpecError, RayUnavailable) as e:
        if started:
            raise
        raise _usage(e) from None  # the parts could not be built: nothing was captioned
    except KeyboardInterrupt as e:
        stopped = e
        if run.unfinished is not None:
            rows.append(_row(run.unfinished, report=False))
        err("capshap: terminated; index.html lists what is done" if isinstance(e, Terminated)
            else "capshap: interrupted; index.html lists what is done")
    wall = time.perf_counter() - t_run
    if not args.quiet:
        print_summary(rows, rf.path, run.index_page, wall, total=len(rf.inputs))
    if stopped is not None:
        return EXIT_TERMINATED if isinstance(stopped, Terminated) else EXIT_INTERRUPTED
    if not rows:
        err(f"capshap: no images found in {', '.join(args.paths)}")
        return EXIT_FAILED
    return EXIT_FAILED if any(r.error for r in rows) else EXIT_OK


def _row(res: Any, report: bool = True) -> Row:
    """A summary row for an outcome, its failure or notes reported on stderr."""
    row = Row(res.name, caption=res.caption, seconds=res.seconds, error=res.error)
    if res.ok:
        exp = res.explanation
        row.evals = exp.n_evals
        row.grounding = grounding_of(exp)
        logger.info("%s: %r, %d evaluations in %.1f s", res.name, exp.caption, exp.n_evals, res.seconds)
        for note in res.notes:
            err(f"capshap: note: {res.name}: {note}")
    elif report:
        verb = "skipped" if res.stage == "loading" else "failed"
        err(f"capshap: {verb} {res.name}: {res.error}")
    return row
