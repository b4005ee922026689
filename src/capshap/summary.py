"""Dataset summary: per-word statistics across the images of a run.

For every word that appears in the explained captions (lower case, punctuation dropped, as
:func:`capshap.text.words` splits text), across the images of a run:

* ``images``: how many captions name it, and ``mean_credit``: the mean of its total credit
  (f(image) - f(all masked) for the word, summed over its tokens);
* with regions per image (object boxes, or masks): ``mean_share_inside``, the mean share of
  the word's positive credit that falls inside the regions, and ``mostly_outside``, the
  images where less than half of it does (the captioner said the word for something else).
  Images without regions, or where the word has no positive credit, do not count there.

:class:`Summary` (``add(exp)`` as images finish) or :func:`summarize` computes it from
explanations, one at a time, so a run of thousands streams through; :func:`write_summary` writes ``summary.json`` and a self-contained
``summary.html`` page (text escaped, no scripts) sorted by how often each word appears.
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
from capshap.text import words

__all__ = ["WordStats", "Summary", "summarize", "write_summary", "box_regions", "mask_regions", "summary_html"]

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "images": self.images,
            "mean_credit": self.credit_sum / self.images if self.images else None,
            "mean_share_inside": self.share_sum / self.share_n if self.share_n else None,
            "images_with_regions": self.share_n,
            "mostly_outside": list(self.mostly_outside),
        }


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

    def __init__(self, regions: Regions | None = None, *, outside_below: float = 0.5):
        self.regions = regions
        self.outside_below = float(outside_below)
        self.images = 0
        self.stats: dict[str, WordStats] = {}

    def add(self, exp: Any) -> None:
        """Count one explanation's words (ValueError when its regions do not fit it)."""
        maps = _token_maps(exp)
        T = maps.shape[-1]
        region = self.regions(exp) if self.regions is not None else None
        if region is not None and region.shape != maps.shape[:2]:
            raise ValueError(f"{exp.name}: regions cover {region.shape} pixels, the explanation {maps.shape[:2]}")
        self.images += 1
        per_word: dict[str, np.ndarray] = {}
        for t, tok in enumerate(exp.tokens[:T]):
            for w in words(tok):
                per_word[w] = per_word.get(w, 0) + maps[..., t]
        for w, m in per_word.items():
            st = self.stats.setdefault(w, WordStats(w))
            st.images += 1
            st.credit_sum += float(m.sum())
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
        """``{"images": N, "words": [...]}``, most frequent word first (ties: alphabetical)."""
        ordered = sorted(self.stats.values(), key=lambda s: (-s.images, s.word))
        return {"images": self.images, "words": [s.to_dict() for s in ordered]}


def summarize(explanations: Iterable[Any], regions: Regions | None = None, *, outside_below: float = 0.5) -> dict:
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

    Returns
    -------
    dict
        ``{"images": N, "words": [WordStats.to_dict(), ...]}``, most frequent word first
        (ties: alphabetical).
    """
    acc = Summary(regions, outside_below=outside_below)
    for exp in explanations:
        acc.add(exp)
    return acc.to_dict()


def summary_html(summary: Mapping[str, Any], title: str = "capshap: words across the run") -> str:
    """A static HTML page of a :func:`summarize` result (all text escaped, no scripts)."""
    from capshap.viz.report import text

    rows = []
    for w in summary["words"]:
        share = w["mean_share_inside"]
        outside = w["mostly_outside"]
        shown = ", ".join(text(x) for x in outside[:20]) + (f" … (+{len(outside) - 20})" if len(outside) > 20 else "")
        credit = "" if w["mean_credit"] is None else format(w["mean_credit"], ".3g")
        inside = "" if share is None else format(share, ".0%")
        rows.append(
            f"<tr><td>{text(w['word'])}</td><td>{w['images']}</td><td>{credit}</td>"
            f"<td>{inside}</td><td>{w['images_with_regions']}</td><td>{shown}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{text(title)}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "</style></head><body>"
        f"<h1>{text(title)}</h1><p>{summary['images']} images. Credit share: the part of a word's "
        "positive credit inside the given boxes or masks.</p>"
        "<table><thead><tr><th>word</th><th>images</th><th>mean credit</th><th>mean share inside</th>"
        "<th>images with regions</th><th>mostly outside</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>"
    )


def write_summary(summary: Mapping[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.html`` into ``folder``; returns both paths."""
    out = Path(folder)
    j, h = out / "summary.json", out / "summary.html"
    atomic_write_text(j, json.dumps(summary, indent=1, allow_nan=False))
    atomic_write_text(h, summary_html(summary))
    return j, h
