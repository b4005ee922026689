"""The ``capshap`` command: explain captions of image files, re-plot, evaluate, version.

::

    capshap explain PATH... [--out out/] [options]   caption and explain images
    capshap show FILE.npz...                         draw a saved explanation again
    capshap evaluate RUN_DIR [--boxes FILE]          faithfulness metrics of a saved run
    capshap version                                  versions of capshap and its libraries

Exit codes: 0 everything worked; 1 some images (or files) failed and were skipped, the
rest were done; 2 usage error (unknown option or value, missing path); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).

The CLI is a thin layer: it parses options into :class:`capshap.settings.Settings` and
drives the same run path as :func:`capshap.explain` (:mod:`capshap.run`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from capshap.cli.parser import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
)
from capshap.text import printable

__all__ = ["main", "build_parser"]


class _TqdmHandler(logging.Handler):
    """Writes log records above the progress bars (through tqdm.write when available),
    with control characters escaped."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = printable(self.format(record))
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=self.stream)
            except ImportError:
                self.stream.write(msg + "\n")
                self.stream.flush()
        except Exception:  # pragma: no cover - logging must not raise
            self.handleError(record)


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
    root = logging.getLogger("capshap")
    old = root.level
    root.addHandler(handler)
    root.setLevel(level)
    return handler, old


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
        if args.command == "explain":
            from capshap.cli.explain import cmd_explain as cmd
        else:
            from capshap.cli import commands

            cmd = {"show": commands.cmd_show, "evaluate": commands.cmd_evaluate, "version": commands.cmd_version}[args.command]
        return cmd(args)
    except UsageError as e:
        print(printable(f"capshap {args.command}: error: {e}"), file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # only RayUnavailable is handled here, the rest is raised again
        from capshap.runners.ray import RayUnavailable  # (the Ray runner's module)

        if not isinstance(e, RayUnavailable):
            raise
        print(printable(f"capshap {args.command}: error: {e}"), file=sys.stderr)  # an address, GPUs: one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        from capshap.cli.output import err

        err("capshap: interrupted")
        return EXIT_INTERRUPTED
    finally:
        root = logging.getLogger("capshap")
        root.removeHandler(handler)
        root.setLevel(old_level)
