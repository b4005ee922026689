"""The pointing game (Zhang et al., 2016), energy share, and the boxes they are played on.

A hit when the token's top-attributed pixel lies within ``tolerance`` pixels (15 by default)
of one of the boxes. Where several pixels share the top value (common where the budget ended
and a node's credit was spread evenly), the tied pixel nearest their centroid is the point.
The energy share is the fraction of the token's positive attribution inside the union of the
boxes; ``box_fraction`` (the share of the image the boxes cover) is its random baseline.

Boxes are ``[x0, y0, x1, y1]`` in pixels of the explained image: x to the right, y down,
continuous coordinates, so pixel (column c, row r) is the point (c + 0.5, r + 0.5) and box
``[0, 0, W, H]`` covers the whole image. :func:`scale_boxes` maps boxes drawn on the original
image onto a resized one.

A boxes file (:func:`load_boxes`) maps image names to boxes drawn on the original image;
:func:`lookup_boxes` finds an explanation's entry and :func:`boxes_for` scales it to the
explained image.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capshap.explanation import Explanation
from capshap.metrics.tokens import pixel_values, token_index

__all__ = [
    "Box",
    "check_boxes",
    "check_tolerance",
    "scale_boxes",
    "default_token",
    "pointing_game",
    "load_boxes",
    "lookup_boxes",
    "original_size",
    "boxes_for",
]

#: ``[x0, y0, x1, y1]`` in pixels.
Box = list[float]


def check_boxes(boxes: Any, where: str) -> list[Box]:
    """Validate boxes ``[[x0, y0, x1, y1], ...]`` (a single flat box is accepted too).

    Returns new lists of floats; raises ValueError starting with ``where`` and naming the
    bad box."""
    if isinstance(boxes, np.ndarray):
        boxes = boxes.tolist()
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"{where}: boxes must be a list of [x0, y0, x1, y1], got {type(boxes).__name__}")
    if len(boxes) == 4 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in boxes):
        boxes = [boxes]
    out = []
    for i, b in enumerate(boxes):
        if isinstance(b, np.ndarray):
            b = b.tolist()
        if (
            not isinstance(b, (list, tuple))
            or len(b) != 4
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in b)
        ):
            raise ValueError(f"{where}: box {i} is {b!r}; a box is 4 numbers [x0, y0, x1, y1] in pixels")
        x0, y0, x1, y1 = (float(c) for c in b)
        if not all(math.isfinite(c) for c in (x0, y0, x1, y1)):
            raise ValueError(f"{where}: box {i} {b!r} has a non-finite coordinate")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}: box {i} {b!r} is empty; a box is [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        out.append([x0, y0, x1, y1])
    return out


def check_tolerance(tolerance: Any) -> float:
    """``tolerance`` as a float: a finite number of pixels >= 0; ValueError naming it otherwise
    (NaN would make every comparison false, infinity every point a hit)."""
    ok = isinstance(tolerance, (int, float, np.integer, np.floating)) and not isinstance(tolerance, (bool, np.bool_))
    if not ok or not math.isfinite(float(tolerance)) or float(tolerance) < 0:
        raise ValueError(
            f"tolerance={tolerance!r} must be a finite number of pixels >= 0 "
            "(the pointing game's distance from the top pixel to a box), e.g. 15"
        )
    return float(tolerance)


def scale_boxes(
    boxes: Sequence[Sequence[float]], original_size: Sequence[int], new_size: Sequence[int]
) -> list[Box]:
    """Map boxes drawn on an image of ``original_size`` onto the same image resized to ``new_size``.

    Sizes are (height, width) in pixels, numpy order (like ``array.shape[:2]`` and
    ``LoadedImage.original_size``). Boxes are ``[x0, y0, x1, y1]``; x scales by the width
    ratio and y by the height ratio. Returns new lists of floats.
    """
    oh, ow = (float(v) for v in original_size[:2])
    nh, nw = (float(v) for v in new_size[:2])
    if min(oh, ow, nh, nw) <= 0:
        raise ValueError(f"image sizes must be positive, got original {original_size!r} and new {new_size!r}")
    sx, sy = nw / ow, nh / oh
    return [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in check_boxes(list(boxes), "scale_boxes")]


def _top_point(v: np.ndarray) -> tuple[int, int]:
    """(row, col) of the top value; among ties, the tied pixel nearest the ties' centroid."""
    top = v.max()
    ys, xs = np.nonzero(v >= top)
    if ys.size == 1:
        return int(ys[0]), int(xs[0])
    cy, cx = ys.mean(), xs.mean()
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(ys[k]), int(xs[k])


def _box_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    H, W = shape
    yc = np.arange(H) + 0.5
    xc = np.arange(W) + 0.5
    m = np.zeros((H, W), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        m |= ((yc >= y0) & (yc <= y1))[:, None] & ((xc >= x0) & (xc <= x1))[None, :]
    return m


def default_token(exp: Explanation) -> int:
    """The token with the largest total positive attribution."""
    v = pixel_values(exp)
    return int(np.argmax(np.clip(v, 0, None).sum(axis=(0, 1))))


def pointing_game(
    exp: Explanation, boxes: Sequence[Sequence[float]], token: int | str | None = None, tolerance: float = 15
) -> dict[str, Any]:
    """Pointing game and energy share of one token against boxes.

    boxes: ``[[x0, y0, x1, y1], ...]`` in the explained image's pixels (see the module
    docstring; use :func:`scale_boxes` for boxes drawn on the original image). token: an
    index or token string; None takes the token with the largest total positive attribution.
    tolerance: pixels, finite and >= 0 (0: the top pixel must lie inside a box).

    Returns a dict: ``token``, ``index``, ``point`` ([x, y] pixel centre of the top pixel),
    ``distance`` (pixels from the point to the nearest box, 0 inside), ``hit`` (distance <=
    tolerance), ``energy_share`` (positive attribution inside the boxes over all positive
    attribution; NaN when there is none), ``box_fraction`` (share of pixels inside the boxes),
    ``tolerance`` and ``boxes``. A token with no credit anywhere (an all-zero map, such as a
    template word's) has no top pixel: ``point``, ``distance`` and ``hit`` are then None
    ("n/a" in metrics.md), and it is left out of the pointing accuracy.
    """
    bx = check_boxes(boxes, "pointing_game")
    if not bx:
        raise ValueError("pointing_game: no boxes given")
    tolerance = check_tolerance(tolerance)
    v_all = pixel_values(exp)
    t = default_token(exp) if token is None else token_index(exp, token)
    v = v_all[..., t]
    inside = _box_mask(bx, v.shape)
    if not np.any(v):  # no credit anywhere: nothing points, so no hit and no miss
        return {"token": exp.tokens[t], "index": t, "point": None, "distance": None, "hit": None,
                "energy_share": float("nan"), "box_fraction": float(inside.mean()),
                "tolerance": float(tolerance), "boxes": bx}
    r, c = _top_point(v)
    px, py = c + 0.5, r + 0.5
    dist = min(
        math.hypot(max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1)) for x0, y0, x1, y1 in bx
    )
    pos = np.clip(v, 0, None)
    total = float(pos.sum())
    return {
        "token": exp.tokens[t],
        "index": t,
        "point": [px, py],
        "distance": float(dist),
        "hit": bool(dist <= tolerance),
        "energy_share": float(pos[inside].sum() / total) if total > 0 else float("nan"),
        "box_fraction": float(inside.mean()),
        "tolerance": float(tolerance),
        "boxes": bx,
    }


# ------------------------------------------------------------------------------ boxes file


def load_boxes(path: str | os.PathLike) -> dict[str, list[Box]]:
    """Read a boxes file: JSON ``{"image": [[x0, y0, x1, y1], ...], ...}``.

    Keys are image names (as in the run, e.g. ``cat`` or ``cat.jpg``); values are lists of
    boxes in the original image's pixels (a single flat box is accepted too). Raises
    FileNotFoundError or ValueError naming the file and the bad entry.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"boxes file {p}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"boxes file {p}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"boxes file {p}: not UTF-8 text ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"boxes file {p}: expected an object {{\"image name\": [[x0, y0, x1, y1], ...]}}, "
            f"got a JSON {type(data).__name__}"
        )
    return {str(k): check_boxes(v, f"boxes file {p}, entry {k!r}") for k, v in data.items()}


# ------------------------------------------------------------------------ box matching


def _provenance(exp: Explanation, key: str) -> Any:
    """A provenance field the CLI records in ``exp.params`` (``source``, ``original_size``);
    ``exp.info`` is read as well for explanations that keep it there."""
    for src in (exp.params, exp.info):
        if isinstance(src, dict) and src.get(key) is not None:
            return src[key]
    return None


def lookup_boxes(
    boxes: Mapping[str, list[Box]], exp: Explanation, stem: Path | None = None, run_dir: Path | None = None
) -> tuple[str, list[Box]] | None:
    """The boxes entry of an explanation as ``(key, boxes)``, or None.

    Keys tried, in order: the explanation's name, its file name and stem, the saved file's
    stem and its path relative to ``run_dir`` (without suffix), and the source image path
    the CLI records (``params["source"]``), its file name and stem.
    """
    cands = [exp.name, Path(exp.name).name, Path(exp.name).stem]
    if stem is not None:
        cands.append(stem.name)
        if run_dir is not None:
            try:
                cands.append(stem.relative_to(run_dir).as_posix())
            except ValueError:
                pass
    src = _provenance(exp, "source")
    if isinstance(src, str) and src:
        cands += [src, Path(src).name, Path(src).stem]
    for c in dict.fromkeys(cands):
        if c in boxes:
            return c, boxes[c]
    return None


def original_size(exp: Explanation) -> tuple[int, int] | None:
    """(height, width) of the image before it was resized for explaining, where recorded
    (``params["original_size"]``); None when unknown."""
    v = _provenance(exp, "original_size")
    if isinstance(v, (list, tuple)) and len(v) >= 2:
        try:
            h, w = int(v[0]), int(v[1])
        except (TypeError, ValueError):
            return None
        if h > 0 and w > 0:
            return h, w
    return None


def boxes_for(exp: Explanation, boxes: list[Box]) -> list[Box]:
    """Boxes drawn on the original image, in the explained image's pixels: scaled when the
    explanation records its :func:`original_size`, else taken as they are."""
    orig = original_size(exp)
    new = tuple(exp.image.shape[:2])
    if orig is not None and orig != new:
        return scale_boxes(boxes, orig, new)
    return check_boxes(boxes, f"boxes of {exp.name!r}")
