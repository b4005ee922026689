"""metrics.md: the metrics table of a run as Markdown, with text from files escaped.

Image names, tokens, captions and failure reasons come from files someone else may have
written. Rendered Markdown passes raw HTML through, so a token ``<script>`` would run in a
viewer, a ``|`` would break the table and a backtick open code. :func:`cell` escapes them.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from capshap.text import printable

__all__ = ["cell", "metrics_markdown"]

# Markdown punctuation that can start emphasis, code, links or tables, plus the escape itself
_MD = re.compile(r"([\\`*_\[\]|#])")


def cell(text: object, limit: int = 200) -> str:
    """``text`` safe inside a Markdown table cell: control characters escaped
    (:func:`capshap.text.printable`, newlines included), ``<``, ``>`` and ``&`` as HTML
    entities, and Markdown punctuation (``\\ ` * _ [ ] | #``) backslash-escaped. Cut to
    ``limit`` characters first."""
    s = printable(text, limit)
    s = html.escape(s, quote=False)
    return _MD.sub(r"\\\1", s)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def metrics_markdown(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    failures: Sequence[Mapping[str, Any]] = (),
    left_out: int = 0,
) -> str:
    """The text of metrics.md: a header explaining the columns, one table row per image
    and token, and a list of the files that were skipped with the reason. ``left_out``:
    how many words had no credit and were not evaluated (said under the header)."""
    lines = [
        "# capshap faithfulness metrics",
        "",
        f"Deletion / insertion: normalised areas under the curve over {int(settings['steps'])} steps, "
        "from 0 to 1 (the score as a share of the way from the fully masked image's to the full image's, "
        "clipped to [0, 1]; deletion: lower is better; insertion: higher is better), in brackets the mean ± std "
        f"of {int(settings['random_orders'])} random orders (seed {cell(settings['seed'])}). "
        f"Pointing game: top pixel within {_fmt(settings['tolerance'], 0)} px of a box (n/a: the word has no "
        "credit anywhere). "
        "Energy share: positive attribution inside the boxes (in brackets: the boxes' share of the image).",
        "",
    ]
    if left_out:
        lines += [f"{int(left_out)} word{'s' if left_out != 1 else ''} with no credit anywhere (such as template "
                  "words that do not depend on the image) left out.", ""]
    lines += [
        "| image | token | deletion AUC (random) | insertion AUC (random) | pointing hit | energy share |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        dele = f"{_fmt(r['deletion_auc'])} ({_fmt(r['random_deletion_auc'])} ± {_fmt(r['random_deletion_auc_std'])})"
        ins = f"{_fmt(r['insertion_auc'])} ({_fmt(r['random_insertion_auc'])} ± {_fmt(r['random_insertion_auc_std'])})"
        if r.get("pointing_hit") is None:  # no boxes for this image, or a map with no credit
            hit = "n/a" if r.get("box_fraction") is not None else "–"
        else:
            hit = "yes" if r["pointing_hit"] else "no"
        en = "–" if r.get("energy_share") is None else f"{_fmt(r['energy_share'])} ({_fmt(r['box_fraction'])})"
        lines.append(f"| {cell(r['image'])} | {cell(r['token'])} | {dele} | {ins} | {hit} | {en} |")
    if failures:
        lines += ["", f"## Skipped files ({len(failures)})", ""]
        lines += [f"- {cell(f['file'])}: {cell(f['reason'], 500)}" for f in failures]
    return "\n".join(lines) + "\n"
