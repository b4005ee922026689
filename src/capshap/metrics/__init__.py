"""Faithfulness metrics for explanations: deletion / insertion curves and the pointing game.

Deletion and insertion (Petsiuk et al., RISE 2018)
--------------------------------------------------
For one token, pixels are ranked by that token's value, most positive first (ties broken by
one seeded random key shared by all tokens, so tokens that rank pixels alike share images). The image is re-scored with the same scorer and the same mask fill as the
explanation at ``steps + 1`` equal pixel fractions ``x = 0, 1/steps, ..., 1``:

- deletion: start from the full image and hide the first ``x`` of the ranked pixels;
- insertion: start from the fully masked image and reveal the first ``x`` of them.

Curves are reported twice:

- raw: the scorer's score of the token (log-odds by default) at each fraction, and the area
  under it (``*_auc_raw``, trapezoid rule over x in [0, 1], so in score units);
- normalised: ``(score - empty) / (full - empty)``, where ``full`` is the token's score on the
  unmasked image and ``empty`` on the fully masked one. A normalised curve runs from 1 to 0
  (deletion) or 0 to 1 (insertion) and its area (``*_auc``) lies near [0, 1] whatever the
  token's scale, so tokens and images can be compared. Where ``|full - empty| <= 1e-8`` the
  token does not depend on the image and normalised values are NaN (``null`` in JSON).

A faithful explanation gives a *low* deletion area (the score falls as soon as the credited
pixels go) and a *high* insertion area. The baseline is a random ordering averaged over
``random_orders`` seeded orders (mean and standard deviation reported). Random orders shuffle
small units rather than single pixels, because a scattered salt-and-pepper mask is an easy
out-of-distribution case for a fill such as inpainting: the leaves of a segment tree
(superpixels) when the explanation's tree is a segment tree, else ``block`` x ``block`` pixel
blocks (8 x 8 by default; the axis tree's leaves are single pixels). Within a unit pixels go in
raster order, so every step still hides exactly its fraction of pixels.

All masked images of all tokens (and of the random orders, which serve every token) are
collected first, identical visibility masks are scored once, and the scorer is called in
batches of ``batch_size``.

Pointing game (Zhang et al., 2016)
----------------------------------
A hit when the token's top-attributed pixel lies within ``tolerance`` pixels (15 by default)
of one of the boxes. Where several pixels share the top value (common where the budget ended
and a node's credit was spread evenly), the tied pixel nearest their centroid is the point.
The energy share is the fraction of the token's positive attribution inside the union of the
boxes; ``box_fraction`` (the share of the image the boxes cover) is its random baseline.

Boxes are ``[x0, y0, x1, y1]`` in pixels of the explained image: x to the right, y down,
continuous coordinates, so pixel (column c, row r) is the point (c + 0.5, r + 0.5) and box
``[0, 0, W, H]`` covers the whole image. :func:`scale_boxes` maps boxes drawn on the original
image onto a resized one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Union

import numpy as np

from capshap.explanation import Explanation
from capshap.explanation import _jsonable as _clean
from capshap.masking import Fill, Masker
from capshap.interfaces import Scorer
from capshap.regions.tree import axis_aligned

logger = logging.getLogger(__name__)

__all__ = [
    "deletion_insertion",
    "pointing_game",
    "scale_boxes",
    "load_boxes",
    "evaluate_run",
]

TokenSpec = Union[None, int, str, Sequence[Union[int, str]]]
Box = list[float]

_EPS = 1e-8


# ------------------------------------------------------------------------------- helpers


def _token_index(exp: Explanation, token: int | str) -> int:
    T = len(exp.tokens)
    if isinstance(token, str):
        if token not in exp.tokens:
            raise ValueError(f"token {token!r} is not in the caption's tokens {exp.tokens!r}")
        return exp.tokens.index(token)
    if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
        raise TypeError(f"token must be an index or a token string, got {type(token).__name__}")
    t = int(token)
    if not -T <= t < T:
        raise ValueError(f"token index {t} is out of range for {T} tokens {exp.tokens!r}")
    return t % T


def _token_indices(exp: Explanation, token: TokenSpec) -> list[int]:
    if token is None:
        return list(range(len(exp.tokens)))
    if isinstance(token, (str, int, np.integer)):
        return [_token_index(exp, token)]
    out = [_token_index(exp, t) for t in token]
    if not out:
        raise ValueError("token list is empty; give None for all tokens")
    return list(dict.fromkeys(out))


def _pixel_values(exp: Explanation) -> np.ndarray:
    v = np.asarray(exp.pixel_values(), dtype=np.float64)
    if v.ndim != 3 or v.shape[:2] != exp.image.shape[:2]:
        raise ValueError(
            f"explanation {exp.name!r}: values of shape {np.shape(exp.values)} do not match "
            f"its image {exp.image.shape[:2]}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(f"explanation {exp.name!r} has non-finite values")
    return v


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid-rule area under y(x)."""
    return float(np.sum((y[1:] + y[:-1]) * 0.5 * np.diff(x)))


def _nanmean(a: Sequence[float]) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _nanstd(a: Sequence[float]) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.std()) if a.size else float("nan")


class _Plan:
    """Visibility masks to score, deduplicated by content.

    A mask is described lazily as ``rank < c`` (reveal) or ``rank >= c`` (hide), where
    ``rank`` (H*W,) gives each pixel's position in an order; it is materialised only to
    hash it and to render it.
    """

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.items: list[tuple[np.ndarray | None, int, bool]] = []
        self._index: dict[bytes, int] = {}

    def _mask(self, i: int) -> np.ndarray:
        rank, c, reveal = self.items[i]
        if rank is None:  # constant masks: reveal means all visible
            return np.full(self.shape, reveal)
        return (rank < c if reveal else rank >= c).reshape(self.shape)

    def add(self, rank: np.ndarray | None, c: int, reveal: bool) -> int:
        """Index of the mask (rank < c if reveal else rank >= c); rank None: all visible
        when reveal, else none."""
        n = self.shape[0] * self.shape[1]
        if rank is not None and (c <= 0 or c >= n):  # all or nothing visible
            reveal, rank = (reveal == (c >= n)), None
        if rank is None:
            key = b"all" if reveal else b"none"
        else:
            m = rank < c if reveal else rank >= c
            key = hashlib.blake2b(np.packbits(m).tobytes(), digest_size=16).digest()
        idx = self._index.get(key)
        if idx is None:
            idx = len(self.items)
            self.items.append((rank, c, reveal))
            self._index[key] = idx
        return idx

    def __len__(self) -> int:
        return len(self.items)

    def score(self, masker: Masker, scorer: Scorer, batch_size: int, T: int, threads: int) -> tuple[np.ndarray, int]:
        """Render and score every mask: returns ((U, T) float64 scores, number of scorer calls)."""
        U = len(self.items)
        out = np.empty((U, T), dtype=np.float64)
        calls = 0
        H, W = self.shape
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for s in range(0, U, batch_size):
                ids = range(s, min(U, s + batch_size))
                batch = np.empty((len(ids), H, W, 3), dtype=np.uint8)

                def one(j: int, i: int) -> None:
                    masker.apply(self._mask(i), batch[j])

                list(pool.map(one, range(len(ids)), ids))
                sc = np.asarray(scorer.score(batch), dtype=np.float64)
                calls += 1
                if sc.shape != (len(ids), T):
                    raise ValueError(
                        f"the scorer returned scores of shape {sc.shape} for {len(ids)} images, "
                        f"expected ({len(ids)}, {T}): one column per token of the explanation"
                    )
                out[s : s + len(ids)] = sc
        return out, calls


def _rank_of(order: np.ndarray) -> np.ndarray:
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


def _random_units(exp: Explanation, block: int) -> tuple[np.ndarray, str]:
    """(H, W) int unit labels for random orders, and a description."""
    H, W = exp.image.shape[:2]
    tree = exp.tree
    if tree is not None and tree.kind != "axis" and tree.leaf_map().shape == (H, W):
        return np.asarray(tree.leaf_map(), dtype=np.int64), "tree leaves"
    rows = np.arange(H) // block
    cols = np.arange(W) // block
    nb = (W + block - 1) // block
    return rows[:, None] * nb + cols[None, :], f"{block}x{block} px blocks"


# ------------------------------------------------------------------ deletion / insertion


def deletion_insertion(
    exp: Explanation,
    scorer: Scorer,
    *,
    mask: Fill | None = None,
    steps: int = 20,
    batch_size: int = 50,
    token: TokenSpec = None,
    random_orders: int = 5,
    seed: int | None = 0,
    block: int = 8,
    threads: int | None = None,
) -> dict[str, Any]:
    """Deletion and insertion curves of an explanation, against random orders.

    Parameters
    ----------
    exp : the explanation (its ``image`` (H, W, 3) uint8 and ``values`` (H, W, T)).
    scorer : a Scorer bound to ``exp.caption``: images (N, H, W, 3) uint8 -> (N, T).
    mask : the fill for hidden pixels (see :mod:`capshap.masking`); default
        ``exp.params["mask"]``, the explanation's own.
    steps : curve points are at pixel fractions 0, 1/steps, ..., 1.
    batch_size : images per scorer call.
    token : None (all), an index, a token string, or a list of them.
    random_orders : how many seeded random orders make the baseline (0: none).
    seed : seeds tie-breaking and the random orders; same seed, same result.
    block : side in pixels of the random-order units when the tree has no segments.
    threads : threads for rendering masks (default: CPU count).

    Returns
    -------
    dict with ``fractions`` (steps + 1 floats), ``tokens`` (one dict per token, see below),
    ``summary`` (means over tokens and the share of tokens beating random),
    ``n_images`` / ``n_calls`` (images scored, scorer calls) and the settings.
    Per token: ``full_score`` / ``empty_score`` (raw scores on the unmasked / fully masked
    image); ``deletion_scores`` / ``insertion_scores`` (raw curves); ``deletion_curve`` /
    ``insertion_curve`` (normalised); ``deletion_auc`` / ``insertion_auc`` (normalised areas)
    and ``*_auc_raw`` (raw areas); ``random_deletion_auc`` / ``random_insertion_auc`` and
    their ``_std``, ``_raw`` and ``_raw_std`` variants; ``random_deletion_curve`` /
    ``random_insertion_curve`` (mean normalised curves); ``deletion_beats_random`` (deletion
    area below the random mean) and ``insertion_beats_random`` (insertion area above it),
    None where either area is undefined.
    """
    checks = (("steps", steps, 1), ("batch_size", batch_size, 1), ("random_orders", random_orders, 0), ("block", block, 1))
    for name, val, lo in checks:
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
    image = np.asarray(exp.image)
    H, W = image.shape[:2]
    n = H * W
    values = _pixel_values(exp)
    T = values.shape[2]
    if T != len(exp.tokens):
        raise ValueError(f"explanation {exp.name!r} has {T} value columns but {len(exp.tokens)} tokens")
    idx = _token_indices(exp, token)
    fill = exp.params.get("mask", "inpaint_ns") if mask is None else mask
    if isinstance(fill, str) and fill == "background image":
        raise ValueError(
            f"explanation {exp.name!r} was masked with a background image, which is not saved; "
            "pass the same background as mask="
        )
    tree = exp.tree if exp.tree is not None and exp.tree.shape[:2] == (H, W) else axis_aligned(H, W)
    threads = max(1, threads if threads is not None else (os.cpu_count() or 1))
    masker = Masker(image, tree, fill, threads=1)

    counts = np.rint(np.linspace(0.0, 1.0, steps + 1) * n).astype(np.int64)
    counts[0], counts[-1] = 0, n
    x = counts / n

    plan = _Plan((H, W))
    full = plan.add(None, n, True)
    empty = plan.add(None, 0, False)

    def curves(rank: np.ndarray) -> tuple[list[int], list[int]]:
        dele = [plan.add(rank, int(c), False) for c in counts]
        ins = [plan.add(rank, int(c), True) for c in counts]
        return dele, ins

    ss = np.random.SeedSequence(seed)
    tie_seed, rand_seed = ss.spawn(2)
    # one tie-breaking key for all tokens, so that tokens with the same ranking share images
    tie = np.random.default_rng(tie_seed).random(n)
    token_ids: dict[int, tuple[list[int], list[int]]] = {}
    for t in idx:
        v = values[..., t].ravel()
        order = np.lexsort((tie, -v))
        token_ids[t] = curves(_rank_of(order))

    units, unit_kind = _random_units(exp, block)
    rrng = np.random.default_rng(rand_seed)
    random_ids = []
    flat_units = units.ravel()
    n_units = int(flat_units.max()) + 1
    for _ in range(random_orders):
        perm = rrng.permutation(n_units)
        order = np.argsort(perm[flat_units], kind="stable")
        random_ids.append(curves(_rank_of(order)))

    scores, n_calls = plan.score(masker, scorer, int(batch_size), T, threads)
    logger.info(
        "%s: scored %d masked images in %d calls for %d tokens", exp.name, len(plan), n_calls, len(idx)
    )

    per_token = []
    for t in idx:
        f_s, e_s = float(scores[full, t]), float(scores[empty, t])
        d = f_s - e_s
        ok = abs(d) > _EPS

        def norm(y: np.ndarray, e_s: float = e_s, d: float = d, ok: bool = ok) -> np.ndarray:
            return (y - e_s) / d if ok else np.full_like(y, np.nan)

        dele, ins = token_ids[t]
        del_raw, ins_raw = scores[dele, t], scores[ins, t]
        r_del = np.array([scores[a, t] for a, _ in random_ids]).reshape(len(random_ids), steps + 1)
        r_ins = np.array([scores[b, t] for _, b in random_ids]).reshape(len(random_ids), steps + 1)
        r_del_auc = [_auc(x, norm(c)) for c in r_del]
        r_ins_auc = [_auc(x, norm(c)) for c in r_ins]
        r_del_raw = [_auc(x, c) for c in r_del]
        r_ins_raw = [_auc(x, c) for c in r_ins]
        rec: dict[str, Any] = {
            "token": exp.tokens[t],
            "index": t,
            "full_score": f_s,
            "empty_score": e_s,
            "deletion_scores": del_raw,
            "insertion_scores": ins_raw,
            "deletion_curve": norm(del_raw),
            "insertion_curve": norm(ins_raw),
            "deletion_auc": _auc(x, norm(del_raw)),
            "insertion_auc": _auc(x, norm(ins_raw)),
            "deletion_auc_raw": _auc(x, del_raw),
            "insertion_auc_raw": _auc(x, ins_raw),
            "random_deletion_auc": _nanmean(r_del_auc),
            "random_deletion_auc_std": _nanstd(r_del_auc),
            "random_insertion_auc": _nanmean(r_ins_auc),
            "random_insertion_auc_std": _nanstd(r_ins_auc),
            "random_deletion_auc_raw": _nanmean(r_del_raw),
            "random_deletion_auc_raw_std": _nanstd(r_del_raw),
            "random_insertion_auc_raw": _nanmean(r_ins_raw),
            "random_insertion_auc_raw_std": _nanstd(r_ins_raw),
            "random_deletion_curve": norm(r_del.mean(0)) if len(random_ids) else np.full(steps + 1, np.nan),
            "random_insertion_curve": norm(r_ins.mean(0)) if len(random_ids) else np.full(steps + 1, np.nan),
        }
        # None where the comparison is undefined (a token whose score does not depend on
        # the image has no normalised curve), so summaries count comparable tokens only
        for kind, better in (("deletion", np.less), ("insertion", np.greater)):
            a, b = rec[f"{kind}_auc"], rec[f"random_{kind}_auc"]
            rec[f"{kind}_beats_random"] = bool(better(a, b)) if math.isfinite(a) and math.isfinite(b) else None
        per_token.append(rec)

    def share(key: str) -> float:
        usable = [r for r in per_token if math.isfinite(r["deletion_auc"]) and math.isfinite(r["random_deletion_auc"])]
        return float(np.mean([r[key] for r in usable])) if usable else float("nan")

    summary = {
        "n_tokens": len(per_token),
        **{
            f"mean_{k}": _nanmean([r[k] for r in per_token])
            for k in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc")
        },
        "deletion_beats_random": share("deletion_beats_random"),
        "insertion_beats_random": share("insertion_beats_random"),
    }
    return {
        "name": exp.name,
        "caption": exp.caption,
        "mask": fill if not isinstance(fill, np.ndarray) else "background image",
        "steps": int(steps),
        "fractions": x,
        "random_orders": int(random_orders),
        "random_unit": unit_kind,
        "seed": seed,
        "n_images": len(plan),
        "n_calls": n_calls,
        "tokens": per_token,
        "summary": summary,
    }


# ---------------------------------------------------------------------------- pointing


def _check_boxes(boxes: Any, where: str) -> list[Box]:
    """Validate boxes ``[[x0, y0, x1, y1], ...]`` (a single flat box is accepted too)."""
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
    return [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in _check_boxes(list(boxes), "scale_boxes")]


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
    v = _pixel_values(exp)
    return int(np.argmax(np.clip(v, 0, None).sum(axis=(0, 1))))


def pointing_game(
    exp: Explanation, boxes: Sequence[Sequence[float]], token: int | str | None = None, tolerance: float = 15
) -> dict[str, Any]:
    """Pointing game and energy share of one token against boxes.

    boxes: ``[[x0, y0, x1, y1], ...]`` in the explained image's pixels (see the module
    docstring; use :func:`scale_boxes` for boxes drawn on the original image). token: an
    index or token string; None takes the token with the largest total positive attribution.
    tolerance: pixels.

    Returns a dict: ``token``, ``index``, ``point`` ([x, y] pixel centre of the top pixel),
    ``distance`` (pixels from the point to the nearest box, 0 inside), ``hit`` (distance <=
    tolerance), ``energy_share`` (positive attribution inside the boxes over all positive
    attribution; NaN when there is none), ``box_fraction`` (share of pixels inside the boxes),
    ``tolerance`` and ``boxes``.
    """
    bx = _check_boxes(boxes, "pointing_game")
    if not bx:
        raise ValueError("pointing_game: no boxes given")
    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    v_all = _pixel_values(exp)
    t = default_token(exp) if token is None else _token_index(exp, token)
    v = v_all[..., t]
    r, c = _top_point(v)
    px, py = c + 0.5, r + 0.5
    dist = min(
        math.hypot(max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1)) for x0, y0, x1, y1 in bx
    )
    inside = _box_mask(bx, v.shape)
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
    return {str(k): _check_boxes(v, f"boxes file {p}, entry {k!r}") for k, v in data.items()}


# ------------------------------------------------------------------------------- runs


def _find_explanations(run_dir: Path, skip: set[Path]) -> list[Path]:
    """Stems (without suffix) of saved explanations under run_dir, sorted.

    JSON files without an .npz are reported, except ``metrics.json`` (this module's output)
    and the paths in ``skip``.
    """
    stems = []
    seen_json = set()
    for npz in sorted(run_dir.rglob("*.npz")):
        if npz.name.endswith(".tmp.npz"):
            logger.warning("Skipping %s: an unfinished temporary file", npz)
            continue
        js = npz.with_suffix(".json")
        if not js.is_file():
            logger.warning("Skipping %s: no matching %s, so not a saved explanation", npz, js.name)
            continue
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            logger.warning("Skipping %s: unreadable JSON (%s)", js, e)
            continue
        seen_json.add(js.resolve())
        if not isinstance(meta, dict) or meta.get("format") != "capshap.explanation":
            logger.warning("Skipping %s + %s: not a capshap explanation", npz, js.name)
            continue
        stems.append(npz.with_suffix(""))
    for js in sorted(run_dir.rglob("*.json")):
        r = js.resolve()
        if r not in seen_json and r not in skip and js.name != "metrics.json":
            logger.warning("Skipping %s: no matching .npz, so not a saved explanation", js)
    return stems


def _lookup_boxes(
    boxes: Mapping[str, list[Box]], exp: Explanation, stem: Path, run_dir: Path
) -> tuple[str, list[Box]] | None:
    """The boxes entry of an explanation: by its name, file name, stem, saved stem or source file."""
    cands = [exp.name, Path(exp.name).name, Path(exp.name).stem, stem.name]
    try:
        cands.append(stem.relative_to(run_dir).as_posix())
    except ValueError:
        pass
    for src in (exp.params, exp.info):
        for k in ("file", "path", "image", "source"):
            v = src.get(k) if isinstance(src, dict) else None
            if isinstance(v, str) and v:
                cands += [v, Path(v).name, Path(v).stem]
    for c in dict.fromkeys(cands):
        if c in boxes:
            return c, boxes[c]
    return None


def _original_size(exp: Explanation) -> tuple[int, int] | None:
    for src in (exp.params, exp.info):
        v = src.get("original_size") if isinstance(src, dict) else None
        if isinstance(v, (list, tuple)) and len(v) >= 2:
            try:
                h, w = int(v[0]), int(v[1])
            except (TypeError, ValueError):
                continue
            if h > 0 and w > 0:
                return h, w
    return None


def _scorer_for(
    exp: Explanation, scorer_factory: Any, cache: dict[str, Any], device: str | None, cache_dir: str | None
) -> Scorer:
    """A scorer bound to ``exp.caption``: from ``scorer_factory`` or rebuilt from the saved specs."""
    from capshap.run import make_scorer

    if scorer_factory is not None:
        if isinstance(scorer_factory, Scorer) or callable(getattr(scorer_factory, "bind", None)):
            return make_scorer(scorer_factory, None, exp.caption)
        if callable(scorer_factory):
            return make_scorer(scorer_factory(exp), None, exp.caption)
        raise TypeError(f"scorer_factory must be callable or have bind(caption), got {type(scorer_factory).__name__}")
    cspec = exp.params.get("captioner_spec")
    sspec = exp.params.get("scorer_spec")
    if cspec is None:
        raise ValueError(
            f"explanation {exp.name!r} records no captioner_spec in its params, so its scorer cannot be "
            "rebuilt; pass scorer_factory= (Python) or re-run the explanation with the capshap CLI"
        )
    from capshap.captioners import build_captioner
    from capshap.scoring import build_scorer, scorer_options

    gen, prompt = exp.params.get("generate_kwargs"), exp.params.get("prompt")
    key = json.dumps([cspec, gen, prompt], sort_keys=True, default=repr)
    if key not in cache:
        logger.info("Building captioner %s", key)
        cache[key] = build_captioner(cspec, None, device=device, cache_dir=cache_dir, generate=gen, prompt=prompt)
    captioner = cache[key]
    skey = key + "|" + json.dumps(sspec, sort_keys=True, default=repr)
    if skey not in cache:
        opts = scorer_options(exp.settings, captioner) if exp.settings is not None else None
        cache[skey] = build_scorer(sspec, captioner, opts)
    return make_scorer(cache[skey], captioner, exp.caption)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [
        "# capshap faithfulness metrics",
        "",
        f"Deletion / insertion: normalised areas under the curve over {settings['steps']} steps "
        "(deletion: lower is better; insertion: higher is better), in brackets the mean ± std "
        f"of {settings['random_orders']} random orders (seed {settings['seed']}). "
        f"Pointing game: top pixel within {_fmt(settings['tolerance'], 0)} px of a box. "
        "Energy share: positive attribution inside the boxes (in brackets: the boxes' share of the image).",
        "",
        "| image | token | deletion AUC (random) | insertion AUC (random) | pointing hit | energy share |",
        "|---|---|---|---|---|---|",
    ]

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    for r in rows:
        dele = f"{_fmt(r['deletion_auc'])} ({_fmt(r['random_deletion_auc'])} ± {_fmt(r['random_deletion_auc_std'])})"
        ins = f"{_fmt(r['insertion_auc'])} ({_fmt(r['random_insertion_auc'])} ± {_fmt(r['random_insertion_auc_std'])})"
        hit = "–" if r.get("pointing_hit") is None else ("yes" if r["pointing_hit"] else "no")
        en = "–" if r.get("energy_share") is None else f"{_fmt(r['energy_share'])} ({_fmt(r['box_fraction'])})"
        lines.append(f"| {cell(str(r['image']))} | {cell(str(r['token']))} | {dele} | {ins} | {hit} | {en} |")
    return "\n".join(lines) + "\n"


def evaluate_run(
    run_dir: str | os.PathLike,
    boxes: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    scorer_factory: Any = None,
    steps: int = 20,
    random_orders: int = 5,
    seed: int | None = 0,
    out: str | os.PathLike | None = None,
    batch_size: int = 50,
    tolerance: float = 15,
    device: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluate every saved explanation of a run and write ``metrics.json`` and ``metrics.md``.

    run_dir: a folder with explanations saved by :meth:`Explanation.save` (``NAME.npz`` +
    ``NAME.json``, searched recursively; other .npz / .json files are skipped with a warning).
    boxes: a boxes file (see :func:`load_boxes`) or an already loaded mapping; keys match an
    image's name, file name or stem. Boxes are taken to be in the original image's pixels and
    are scaled to the explained image when the explanation records ``original_size`` ((height,
    width)) in its params or info; otherwise they are taken as the explained image's pixels.
    scorer_factory: how to score masked images. None rebuilds each explanation's scorer from
    its saved ``params["captioner_spec"]`` / ``params["scorer_spec"]`` (captioners built once
    per spec, with ``device`` and ``cache_dir``). Otherwise a Scorer, an object with
    ``bind(caption)``, or a callable that receives the :class:`Explanation` and returns either.
    out: output folder (default: run_dir).

    Returns the metrics dict written to metrics.json: ``settings``, ``rows`` (one per image and
    token), ``images`` (per-image deletion/insertion results and the pointing game of the
    default token) and ``summary`` (means over rows; pointing accuracy over images).
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root}: no such folder")
    box_map: dict[str, list[Box]] | None
    if boxes is None:
        box_map = None
    elif isinstance(boxes, Mapping):
        box_map = {str(k): _check_boxes(v, f"boxes entry {k!r}") for k, v in boxes.items()}
    else:
        box_map = load_boxes(boxes)
    out_dir = Path(out) if out is not None else root
    skip = {(out_dir / "metrics.json").resolve()}
    if box_map is not None and not isinstance(boxes, Mapping):
        skip.add(Path(boxes).resolve())
    stems = _find_explanations(root, skip)
    if not stems:
        raise FileNotFoundError(f"run folder {root}: no saved explanations (NAME.npz + NAME.json) found")

    cache: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    used_keys: set[str] = set()
    for stem in stems:
        exp = Explanation.load(stem)
        label = stem.relative_to(root).as_posix()
        logger.info("Evaluating %s (%d tokens)", label, len(exp.tokens))
        scorer = _scorer_for(exp, scorer_factory, cache, device, cache_dir)
        di = deletion_insertion(
            exp, scorer, steps=steps, batch_size=batch_size, random_orders=random_orders, seed=seed
        )
        found = None if box_map is None else _lookup_boxes(box_map, exp, stem, root)
        pointing: dict[int, dict[str, Any]] = {}
        default_pg = None
        img_boxes = None
        if found is not None:
            key, img_boxes = found
            used_keys.add(key)
            orig = _original_size(exp)
            if orig is not None and orig != tuple(exp.image.shape[:2]):
                img_boxes = scale_boxes(img_boxes, orig, exp.image.shape[:2])
            if img_boxes:
                for rec in di["tokens"]:
                    pointing[rec["index"]] = pointing_game(exp, img_boxes, rec["index"], tolerance)
                default_pg = pointing_game(exp, img_boxes, None, tolerance)
        elif box_map is not None:
            logger.warning("No boxes for %s in the boxes file; pointing game skipped", label)
        for rec in di["tokens"]:
            pg = pointing.get(rec["index"])
            row = {"image": exp.name, "file": label, "token": rec["token"], "index": rec["index"]}
            for k in (
                "deletion_auc",
                "random_deletion_auc",
                "random_deletion_auc_std",
                "insertion_auc",
                "random_insertion_auc",
                "random_insertion_auc_std",
                "deletion_auc_raw",
                "random_deletion_auc_raw",
                "insertion_auc_raw",
                "random_insertion_auc_raw",
                "deletion_beats_random",
                "insertion_beats_random",
            ):
                row[k] = rec[k]
            row["pointing_hit"] = None if pg is None else pg["hit"]
            row["pointing_distance"] = None if pg is None else pg["distance"]
            row["energy_share"] = None if pg is None else pg["energy_share"]
            row["box_fraction"] = None if pg is None else pg["box_fraction"]
            rows.append(row)
        images.append(
            {
                "image": exp.name,
                "file": label,
                "caption": exp.caption,
                "boxes": img_boxes,
                "metrics": di,
                "pointing": default_pg,
            }
        )
    if box_map is not None:
        for k in sorted(set(box_map) - used_keys):
            logger.warning("Boxes entry %r matches no explanation in %s", k, root)

    def mean_of(key: str) -> float:
        return _nanmean([r[key] for r in rows if r[key] is not None])

    pg_images = [im["pointing"] for im in images if im["pointing"] is not None]
    summary = {
        "n_images": len(images),
        "n_rows": len(rows),
        **{
            f"mean_{k}": mean_of(k)
            for k in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc", "energy_share")
        },
        "deletion_beats_random": mean_of("deletion_beats_random"),
        "insertion_beats_random": mean_of("insertion_beats_random"),
        "pointing_accuracy": float(np.mean([p["hit"] for p in pg_images])) if pg_images else float("nan"),
        "pointing_accuracy_all_tokens": mean_of("pointing_hit"),
    }
    settings = {
        "run_dir": str(root),
        "boxes": None if boxes is None or isinstance(boxes, Mapping) else str(boxes),
        "steps": int(steps),
        "random_orders": int(random_orders),
        "seed": seed,
        "batch_size": int(batch_size),
        "tolerance": float(tolerance),
    }
    result = _clean({"settings": settings, "summary": summary, "rows": rows, "images": images})
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("metrics.json", json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False)),
        ("metrics.md", _markdown(result["rows"], settings)),
    ):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    logger.info("Wrote %s and %s", out_dir / "metrics.json", out_dir / "metrics.md")
    return result
