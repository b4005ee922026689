"""What the CLI writes: per-image files, the summary table, and messages on stderr.

Everything shown on the terminal goes through :func:`capshap.text.printable`, so captions
from a remote captioner and file names cannot drive the terminal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capshap.grounding import LABELS
from capshap.text import printable

__all__ = ["Row", "err", "print_summary", "grounding_of"]

#: Words named per grounding label on an image's line of the terminal summary.
WORDS_PER_LABEL = 8


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    caption: str = ""
    seconds: float = 0.0
    evals: int = 0
    error: str | None = None
    earlier: bool = False  # explained by an earlier run into the same folder (skipped now)
    #: label -> the image's words with that grounding label (see :func:`grounding_of`)
    grounding: dict[str, list[str]] | None = None


def grounding_of(exp: Any) -> dict[str, list[str]]:
    """An explanation's tokens by grounding label (``contradicted``, ``prior``,
    ``grounded``; see :mod:`capshap.grounding`), for :attr:`Row.grounding`."""
    out: dict[str, list[str]] = {k: [] for k in LABELS}
    for g in exp.grounding():
        out[g.label].append(g.token.strip() or repr(g.token))
    return out


def _grounding_line(g: dict[str, list[str]], width: int) -> str:
    parts = []
    for k in LABELS:
        ws = g.get(k) or []
        if ws:
            more = f" +{len(ws) - WORDS_PER_LABEL}" if len(ws) > WORDS_PER_LABEL else ""
            parts.append(f"{k}: {', '.join(printable(w, 24) for w in ws[:WORDS_PER_LABEL])}{more}")
    line = "  " + "; ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def err(msg: str) -> None:
    """Print a message on stderr (above any progress bars), control characters escaped."""
    text = printable(msg)
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)


def print_summary(rows: list[Row], out: Path, page: Path | None, wall: float, total: int | None = None) -> None:
    """The table of images, captions, seconds and evaluations, and where the outputs are.

    ``total``: the number of inputs, when the run stopped before reaching them all (an
    image counts as explained only when all its files are written)."""
    if not rows:
        return

    def cut(s: str, n: int) -> str:
        return s if len(s) <= n else s[: n - 1] + "…"

    names = [printable(r.name) for r in rows]
    shown = [
        (printable(r.caption) + (" (earlier run)" if r.earlier else "")) if r.error is None
        else f"FAILED: {printable(r.error)}" for r in rows
    ]
    w_name = min(32, max(5, *(len(n) for n in names)))
    w_cap = min(60, max(7, *(len(c) for c in shown)))
    lines = [f"{'image':<{w_name}}  {'caption':<{w_cap}}  {'seconds':>7}  {'evals':>5}"]
    lines.append("-" * len(lines[0]))
    counts = {k: 0 for k in LABELS}
    for r, name, cap in zip(rows, names, shown):
        lines.append(f"{cut(name, w_name):<{w_name}}  {cut(cap, w_cap):<{w_cap}}  {r.seconds:7.1f}  {r.evals:5d}")
        if r.grounding and r.error is None:
            lines.append(_grounding_line(r.grounding, max(100, len(lines[0]))))
            for k in LABELS:
                counts[k] += len(r.grounding.get(k) or [])
    ok = sum(r.error is None for r in rows)
    earlier = sum(r.earlier and r.error is None for r in rows)
    lines.append("-" * len(lines[0]))
    n = max(len(rows), total or 0)
    tail = f"{ok} of {n} images explained"
    notes = [f"{earlier} by an earlier run, skipped"] if earlier else []
    if n > len(rows):
        notes.append(f"{n - len(rows)} not reached")
    if notes:
        tail += f" ({'; '.join(notes)})"
    tail += f" in {wall:.1f} s; outputs in {printable(out)}"
    if page is not None:
        tail += f" (open {printable(page)})"
    if any(counts.values()):
        lines.append("words: " + ", ".join(f"{counts[k]} {k}" for k in reversed(LABELS))
                     + " (grounded: the image raises the word; prior: said as readily without it; "
                     "contradicted: the image lowers it)")
    lines.append(tail)
    print("\n".join(lines), flush=True)
