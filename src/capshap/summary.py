"""Dataset summary: per-word statistics across the images of a run.

For every word that appears in the explained captions (lower case, punctuation dropped, as
:func:`capshap.text.words` splits text), across the images of a run:

* ``images``: how many captions name it, and ``mean_credit``: the mean of its total credit
  (f(image) - f(all masked) for the word, summed over its tokens: its evidence);
* grounding (see :mod:`capshap.grounding`): in how many images the word is ``grounded``
  (the image raises it), ``prior``-driven (said about as readily with the image masked) or
  ``contradicted`` (the image lowers it), with those images by name (``grounded_in``,
  ``prior_in``, ``contradicted_in``, the first :data:`MAX_LISTED` of each), and
  ``mean_prior``, the mean score with the image masked. A word's label in an image comes
  from its evidence and that explanation's thresholds (``Summary(thresholds=...)``
  overrides them). ``credit``: whether any pixel of any image gives the word credit;
* with regions per image (object boxes, or masks): ``mean_share_inside``, the mean share of
  the word's positive credit that falls inside the regions, and ``mostly_outside``, the
  images where less than half of it does (the captioner said the word for something else).
  Images without regions, or where the word has no positive credit, do not count there.

:class:`Summary` (``add(exp)`` as images finish) or :func:`summarize` computes it from
explanations, one at a time, so a run of thousands streams through; :func:`write_summary`
writes ``summary.json`` and a self-contained ``summary.html`` page (text escaped, no
scripts, styled like ``index.html`` and linked to it both ways, columns without data left
out). Words are sorted by what a user audits first: the hallucination candidates
(contradicted in most images, then prior-driven in most), then by how often they appear;
words that no region changes in any image come last. ``image_links`` maps image names to
their pictures in the run folder, where :meth:`Summary.add` was given them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capshap.atomic import atomic_write_text
from capshap.grounding import CONTRADICTED, GROUNDED, LABELS, PRIOR, Thresholds, label
from capshap.text import words

__all__ = ["WordStats", "Summary", "summarize", "write_summary", "box_regions", "mask_regions", "summary_html"]

#: Images listed by name per word and label in summary.json (the counts are always complete).
MAX_LISTED = 50

Regions = Callable[[Any], "np.ndarray | None"]
"""Explanation -> (H, W) bool mask of its given regions (boxes or masks), or None."""


@dataclass
class WordStats:
    """Running statistics of one word (see the module docstring)."""

    word: str
    images: int = 0
    credit_sum: float = 0.0
    share_sum: float = 0.0
    share_n: int = 0
    mostly_outside: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in LABELS})
    listed: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in LABELS})
    prior_sum: float = 0.0
    prior_n: int = 0
    credit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "images": self.images,
            "mean_credit": self.credit_sum / self.images if self.images else None,
            "mean_share_inside": self.share_sum / self.share_n if self.share_n else None,
            "images_with_regions": self.share_n,
            "mostly_outside": list(self.mostly_outside),
            "grounded": self.counts[GROUNDED],
            "prior": self.counts[PRIOR],
            "contradicted": self.counts[CONTRADICTED],
            "mean_prior": self.prior_sum / self.prior_n if self.prior_n else None,
            "credit": self.credit,
            "grounded_in": list(self.listed[GROUNDED]),
            "prior_in": list(self.listed[PRIOR]),
            "contradicted_in": list(self.listed[CONTRADICTED]),
        }

    def sort_key(self) -> tuple[Any, ...]:
        """Hallucination candidates first (see the module docstring)."""
        return (not self.credit, -self.counts[CONTRADICTED], -self.counts[PRIOR], -self.images, self.word)


def _token_maps(exp: Any) -> np.ndarray:
    """(H, W, T) float64 credit maps (channel mode summed over RGB)."""
    v = np.asarray(exp.values, dtype=np.float64)
    return v.sum(axis=2) if v.ndim == 4 else v


def box_regions(boxes: Mapping[str, Any]) -> Regions:
    """Regions from a boxes mapping (as ``capshap evaluate --boxes`` reads it): the
    explanation's boxes, scaled to the explained image, as an (H, W) bool mask."""
    from capshap.metrics.pointing import _box_mask, boxes_for, lookup_boxes

    def regions(exp: Any) -> np.ndarray | None:
        hit = lookup_boxes(boxes, exp)
        if hit is None:
            return None
        return _box_mask(boxes_for(exp, hit[1]), tuple(exp.image.shape[:2]))

    return regions


def mask_regions(folder: str | os.PathLike[str]) -> Regions:
    """Regions from a mask folder, as ``--tree masks:FOLDER`` reads it: FOLDER/NAME/*.png and
    FOLDER/NAME_*.png (non-zero = inside) for image NAME.jpg, their union, at the
    explanation's size (masks may have the stored or the explained size)."""
    from capshap.regions.user import TreeSource

    src = TreeSource(f"masks:{os.fspath(folder)}", "masks", Path(folder))

    def regions(exp: Any) -> np.ndarray | None:
        if not src.mask_files(str(exp.name)):
            return None
        orig = exp.params.get("original_size") if isinstance(getattr(exp, "params", None), dict) else None
        masks = src.for_image(str(exp.name), np.asarray(exp.image), tuple(orig) if orig else None)
        return np.logical_or.reduce([np.asarray(m, bool) for m in masks])

    return regions


class Summary:
    """Per-word statistics built one explanation at a time (a run of thousands streams
    through: only the per-word totals are kept). ``add(exp)``, then :meth:`to_dict`.

    regions and outside_below: as in :func:`summarize`.
    """

    def __init__(self, regions: Regions | None = None, *, outside_below: float = 0.5,
                 thresholds: Thresholds | None = None):
        self.regions = regions
        self.outside_below = float(outside_below)
        self.thresholds = thresholds
        self.images = 0
        self.stats: dict[str, WordStats] = {}
        self.links: dict[str, str] = {}

    def add(self, exp: Any, link: str | None = None) -> None:
        """Count one explanation's words (ValueError when its regions do not fit it).

        link: the image's picture relative to the summary (e.g. ``"cat.png"`` in the run
        folder); summary.html links the image's name to it (unsafe paths are left out)."""
        maps = _token_maps(exp)
        T = maps.shape[-1]
        region = self.regions(exp) if self.regions is not None else None
        if region is not None and region.shape != maps.shape[:2]:
            raise ValueError(f"{exp.name}: regions cover {region.shape} pixels, the explanation {maps.shape[:2]}")
        self.images += 1
        name = str(exp.name)
        if link is not None:
            from capshap.viz.report import safe_href

            href = safe_href(link)
            if href is not None:
                self.links[name] = href
        g = _grounding(exp, self.thresholds)
        th = self.thresholds or getattr(exp, "grounding_thresholds", None) or Thresholds()
        per_word: dict[str, np.ndarray] = {}
        evidence: dict[str, float] = {}
        prior: dict[str, float] = {}
        for t, tok in enumerate(exp.tokens[:T]):
            for w in words(tok):
                per_word[w] = per_word.get(w, 0) + maps[..., t]
                if g is not None:
                    evidence[w] = evidence.get(w, 0.0) + g[t].evidence
                    prior[w] = prior.get(w, 0.0) + g[t].prior
        for w, m in per_word.items():
            st = self.stats.setdefault(w, WordStats(w))
            st.images += 1
            st.credit_sum += float(m.sum())
            st.credit = st.credit or bool(np.any(m != 0))
            if w in evidence:
                lab = label(evidence[w], th)
                st.counts[lab] += 1
                if len(st.listed[lab]) < MAX_LISTED:
                    st.listed[lab].append(name)
                st.prior_sum += prior[w]
                st.prior_n += 1
            if region is None:
                continue
            pos = np.clip(m, 0, None)
            total = float(pos.sum())
            if total <= 0:
                continue
            share = float(pos[region].sum()) / total
            st.share_sum += share
            st.share_n += 1
            if share < self.outside_below:
                st.mostly_outside.append(str(exp.name))

    def to_dict(self) -> dict[str, Any]:
        """``{"images": N, "words": [...], "image_links": {name: href}}``: words with credit
        first, then most often contradicted, then most often prior-driven, then most frequent
        (ties: alphabetical)."""
        ordered = sorted(self.stats.values(), key=WordStats.sort_key)
        return {"images": self.images, "words": [s.to_dict() for s in ordered], "image_links": dict(self.links)}


def _grounding(exp: Any, thresholds: Thresholds | None) -> list[Any] | None:
    """The explanation's per-token grounding (None for objects without scores)."""
    if not callable(getattr(exp, "grounding", None)):
        return None
    if thresholds is None:
        return exp.grounding()
    return exp.grounding(thresholds.grounded_above, thresholds.contradicted_below)


def summarize(explanations: Iterable[Any], regions: Regions | None = None, *, outside_below: float = 0.5,
              thresholds: Thresholds | None = None) -> dict:
    """Per-word statistics of a run.

    Parameters
    ----------
    explanations : iterable of Explanation
        Read one at a time.
    regions : function, optional
        Explanation -> (H, W) bool mask of its boxes or masks (None: none for that image);
        see :func:`box_regions` and :func:`mask_regions`.
    outside_below : float
        An image counts as "mostly outside" for a word when the share of the word's positive
        credit inside the regions is below this.
    thresholds : Thresholds, optional
        Grounding thresholds for every image (default: each explanation's own).

    Returns
    -------
    dict
        ``{"images": N, "words": [WordStats.to_dict(), ...], "image_links": {}}``, in the
        order of :meth:`Summary.to_dict`.
    """
    acc = Summary(regions, outside_below=outside_below, thresholds=thresholds)
    for exp in explanations:
        acc.add(exp)
    return acc.to_dict()


#: Image names shown per word and label in summary.html (the rest are counted).
SHOWN_PER_LABEL = 8


def summary_html(summary: Mapping[str, Any], title: str = "capshap: words across the run",
                 index_href: str | None = None) -> str:
    """A static HTML page of a :func:`summarize` result (all text escaped, no scripts).

    Styled like ``index.html``; ``index_href`` (a relative path, e.g. ``"index.html"``)
    adds a link back to it. Columns no word has data for are left out; words that no
    region changes in any image are listed in one line under the table.
    """
    from capshap.viz.marks import BACKGROUND, BORDER, MEANING, SYMBOL
    from capshap.viz.report import safe_href, text

    words_ = list(summary.get("words") or [])
    links = summary.get("image_links") or {}
    table = [w for w in words_ if w.get("credit", True)]
    silent = [w for w in words_ if not w.get("credit", True)]
    has_regions = any(w.get("images_with_regions") for w in words_)
    has_labels = any(w.get(k) for w in words_ for k in LABELS)
    label_cols = [k for k in LABELS if any(w.get(k) for w in table)]  # all-zero label columns are left out
    totals = {k: sum(int(w.get(k) or 0) for w in words_) for k in LABELS}
    has_prior = any(w.get("mean_prior") is not None for w in words_)

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    def image(name: str) -> str:
        href = links.get(name)
        return f'<a href="{text(href)}">{text(name)}</a>' if href else text(name)

    def names(w: Mapping[str, Any]) -> str:
        out = []
        for k in LABELS:
            listed = list(w.get(f"{k}_in") or [])
            if not listed:
                continue
            more = int(w.get(k) or 0) - min(len(listed), SHOWN_PER_LABEL)
            tail = f" &hellip; +{more}" if more > 0 else ""
            out.append(f'<span class="in" data-grounding="{k}" title="{text(k)}">{SYMBOL[k]} '
                       + ", ".join(image(n) for n in listed[:SHOWN_PER_LABEL]) + tail + "</span>")
        return " ".join(out)

    head = ["word", "images"]
    if has_labels:
        head += [f'<span title="{text(MEANING[k])}">{SYMBOL[k]} {k}</span>' for k in label_cols]
    if has_prior:
        head.append('<span title="mean score with the image all masked">mean prior</span>')
    head.append('<span title="mean score on the image minus the prior; the values sum to it">mean evidence</span>')
    if has_regions:
        head += ["mean share inside", "images with regions", "mostly outside"]
    if has_labels:
        head.append("which images")
    rows = []
    for w in table:
        cells = [f'<td class="word">{text(w["word"])}</td>', f'<td class="n">{int(w.get("images") or 0)}</td>']
        if has_labels:
            for k in label_cols:
                c = int(w.get(k) or 0)
                cells.append(f'<td class="n c" data-grounding="{k if c else ""}">{c}</td>')
        if has_prior:
            cells.append(f'<td class="n">{num(w.get("mean_prior"), "+.3g")}</td>')
        cells.append(f'<td class="n">{num(w.get("mean_credit"), "+.3g")}</td>')
        if has_regions:
            outside = list(w.get("mostly_outside") or [])
            shown = ", ".join(image(x) for x in outside[:20]) + (f" &hellip; (+{len(outside) - 20})" if len(outside) > 20 else "")
            cells += [f'<td class="n">{num(w.get("mean_share_inside"), ".0%")}</td>',
                      f'<td class="n">{int(w.get("images_with_regions") or 0)}</td>', f"<td>{shown}</td>"]
        if has_labels:
            cells.append(f'<td class="imgs">{names(w)}</td>')
        audit = ' class="audit"' if has_labels and (w.get(CONTRADICTED) or w.get(PRIOR)) else ""
        rows.append(f"<tr{audit}>{''.join(cells)}</tr>")
    back = safe_href(index_href) if index_href else None
    nav = f'<nav class="pages"><a href="{text(back)}">&larr; every image (index.html)</a></nav>' if back else ""
    n = int(summary.get("images") or 0)
    intro = [f"{n} image{'s' if n != 1 else ''}, {len(words_)} words."]
    if has_labels:
        intro.append(
            "Per word, in how many images it is "
            + ", ".join(f'<span class="g" data-grounding="{k}">{SYMBOL[k]} {k}</span> ({text(MEANING[k])})' for k in LABELS)
            + ". Across the run: "
            + ", ".join(f"{totals[k]} {k}" for k in LABELS)
            + " (a word counted once per image). Evidence is the score on the image minus the score with it "
            "all masked (the prior). "
            "Words contradicted or prior-driven in the most images come first: those are the ones to audit."
        )
    if has_regions:
        intro.append("Share inside: the part of a word's positive credit inside the given boxes or masks.")
    tail = ""
    if silent:
        tail = (f'<p class="silent">{len(silent)} word{"s" if len(silent) != 1 else ""} no region changes in any image '
                f'(left out of the table): {", ".join(text(w["word"]) for w in silent[:200])}'
                + (f" &hellip; (+{len(silent) - 200})" if len(silent) > 200 else "") + "</p>")
    css = _SUMMARY_CSS
    for k in LABELS:
        css += (f'[data-grounding="{k}"].g,[data-grounding="{k}"].in{{background:{BACKGROUND[k]};border-color:{BORDER[k]}}}'
                f'td.c[data-grounding="{k}"]{{background:{BACKGROUND[k]}}}')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{css}</style></head><body>"
        f"<header><h1>{text(title)}</h1>{nav}<p class=\"summary\">{' '.join(intro)}</p></header><main>"
        f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody></table>{tail}</main>{nav}</body></html>"
    )


_SUMMARY_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fafafa}
body{margin:0 auto;max-width:1200px;padding:0 16px 40px}
header{position:sticky;top:0;background:#fafafaee;padding:8px 0 10px;border-bottom:1px solid #ddd;z-index:5}
h1{font-size:1.4em;margin:.3em 0}
.summary{margin:.2em 0;color:#555;font-size:.92em;line-height:1.6}
nav.pages{margin:10px 0;font-size:.95em}nav.pages a{color:#357}
main{margin-top:16px}
table{border-collapse:separate;border-spacing:0;background:#fff;border:1px solid #e2e2e2;border-radius:8px;
 font-size:.92em;width:100%}
th,td{padding:5px 9px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}
th{position:sticky;top:0;background:#f4f4f4;font-weight:600;color:#444}
tbody tr:last-child td{border-bottom:none}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.word{font-weight:600}
tr.audit td.word{color:#111}
.g,.in{display:inline-block;padding:0 6px;border:1px solid #ccc;border-radius:4px;margin:1px 2px}
[data-grounding="prior"].g,[data-grounding="prior"].in{border-style:dashed}
td.imgs{font-size:.9em}
a{color:#357}
.silent{font-size:.85em;color:#777;margin:.8em 0;overflow-wrap:anywhere}
"""


def write_summary(summary: Mapping[str, Any], folder: str | os.PathLike[str], index: str | None = "index.html") -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.html`` into ``folder``; returns both paths.

    index: the run's page next to them, linked from summary.html (None: no link)."""
    out = Path(folder)
    j, h = out / "summary.json", out / "summary.html"
    atomic_write_text(j, json.dumps(summary, indent=1, allow_nan=False))
    atomic_write_text(h, summary_html(summary, index_href=index))
    return j, h
