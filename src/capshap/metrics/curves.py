"""Deletion and insertion curves (Petsiuk et al., RISE 2018) against random orders.

For one token, pixels are ranked by that token's value, most positive first (ties broken by
one seeded random key shared by all tokens, so tokens that rank pixels alike share images).
The image is re-scored with the same scorer and the same mask fill as the explanation at
 ``steps + 1`` equal pixel fractions ``x = 0, 1/steps, ..., 1``:

- deletion: start from the full image and hide the first ``x`` of the ranked pixels;
- insertion: start from the fully masked image and reveal the first ``x`` of them.

Curves are reported twice:

- raw: the scorer's score of the token (log-odds by default) at each fraction, and the area
  under it (``*_auc_raw``, trapezoid rule over x in [0, 1], so in score units);
- normalised: ``(score - empty) / (full - empty)`` clipped to [0, 1], where ``full`` is the
  token's score on the unmasked image and ``empty`` on the fully masked one: the share of the
  way from the empty image's score to the full image's that a partly masked image reaches. A
  normalised curve runs from 1 to 0 (deletion) or 0 to 1 (insertion) and its area
  (``*_auc``) lies in [0, 1] whatever the token's scale, so tokens and images can be
  compared. A partly masked image can score beyond the full image or below the empty one;
  those points count as 1 or 0 here (the raw curves keep them). Where
  ``|full - empty| <= 1e-8`` the token does not depend on the image and normalised values
  are NaN (``null`` in JSON).

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
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from capshap.explanation import Explanation
from capshap.interfaces import Scorer
from capshap.masking import Fill, Masker
from capshap.metrics.tokens import TokenSpec, pixel_values, token_indices
from capshap.regions.axis import axis_aligned

logger = logging.getLogger(__name__)

__all__ = ["deletion_insertion", "check_curve_params", "explanation_fill", "nanmean"]

_EPS = 1e-8


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid-rule area under y(x)."""
    return float(np.sum((y[1:] + y[:-1]) * 0.5 * np.diff(x)))


def nanmean(a: Sequence[float]) -> float:
    """Mean of the finite entries of ``a``; NaN when there are none."""
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

    def score(
        self, masker: Masker, scorer: Scorer, batch_size: int, T: int, threads: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, int]:
        """Render and score every mask: returns ((U, T) float64 scores, number of scorer calls).
        ``progress(done, total)`` is called after each batch."""
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
                if progress is not None:
                    progress(s + len(ids), U)
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


def check_curve_params(
    *, steps: Any = 20, batch_size: Any = 50, random_orders: Any = 5, block: Any = 8, seed: Any = 0
) -> None:
    """Raise ValueError naming the first parameter of :func:`deletion_insertion` that is
    not an integer in its range (seed: an integer >= 0 or None)."""
    checks = (("steps", steps, 1), ("batch_size", batch_size, 1), ("random_orders", random_orders, 0), ("block", block, 1))
    for name, val, lo in checks:
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None, got {seed!r}")


def explanation_fill(exp: Explanation) -> Fill:
    """The fill an explanation was masked with: ``exp.settings.mask``, or for an explanation
    made in memory without settings the ``mask`` its engine recorded in ``exp.params``.

    Raises ValueError when it was a background image (not saved with the explanation).
    """
    if exp.settings is not None:
        fill: Any = exp.settings.mask
    else:
        fill = exp.params.get("mask", "inpaint_ns")
    if isinstance(fill, str) and fill in ("image", "background image"):
        raise ValueError(
            f"explanation {exp.name!r} was masked with a background image, which is not saved; "
            "pass the same background as mask="
        )
    return fill


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
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Deletion and insertion curves of an explanation, against random orders.

    Parameters
    ----------
    exp : the explanation (its ``image`` (H, W, 3) uint8 and ``values`` (H, W, T)).
    scorer : a Scorer bound to ``exp.caption``: images (N, H, W, 3) uint8 -> (N, T).
    mask : the fill for hidden pixels (see :mod:`capshap.masking`); default: the
        explanation's own (see :func:`explanation_fill`).
    steps : curve points are at pixel fractions 0, 1/steps, ..., 1.
    batch_size : images per scorer call.
    token : None (all), an index, a token string, or a list of them.
    random_orders : how many seeded random orders make the baseline (0: none).
    seed : seeds tie-breaking and the random orders; same seed, same result.
    block : side in pixels of the random-order units when the tree has no segments.
    threads : threads for rendering masks (default: CPU count).
    progress : called as ``progress(done, total)`` after each scorer call, with the number
        of masked images scored so far and in all.

    Returns
    -------
    dict with ``fractions`` (steps + 1 floats), ``tokens`` (one dict per token, see below),
    ``summary`` (means over tokens and the share of tokens beating random),
    ``n_images`` / ``n_calls`` (images scored, scorer calls) and the settings.
    Per token: ``full_score`` / ``empty_score`` (raw scores on the unmasked / fully masked
    image); ``deletion_scores`` / ``insertion_scores`` (raw curves); ``deletion_curve`` /
    ``insertion_curve`` (normalised: in [0, 1], see the module docstring);
    ``deletion_auc`` / ``insertion_auc`` (normalised areas, in [0, 1])
    and ``*_auc_raw`` (raw areas); ``random_deletion_auc`` / ``random_insertion_auc`` and
    their ``_std``, ``_raw`` and ``_raw_std`` variants; ``random_deletion_curve`` /
    ``random_insertion_curve`` (mean normalised curves); ``deletion_beats_random`` (deletion
    area below the random mean) and ``insertion_beats_random`` (insertion area above it),
    None where either area is undefined.
    """
    check_curve_params(steps=steps, batch_size=batch_size, random_orders=random_orders, block=block, seed=seed)
    image = np.asarray(exp.image)
    H, W = image.shape[:2]
    n = H * W
    values = pixel_values(exp)
    T = values.shape[2]
    if T != len(exp.tokens):
        raise ValueError(f"explanation {exp.name!r} has {T} value columns but {len(exp.tokens)} tokens")
    idx = token_indices(exp, token)
    fill = explanation_fill(exp) if mask is None else mask
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

    scores, n_calls = plan.score(masker, scorer, int(batch_size), T, threads, progress)
    logger.info(
        "%s: scored %d masked images in %d calls for %d tokens", exp.name, len(plan), n_calls, len(idx)
    )

    per_token = []
    for t in idx:
        f_s, e_s = float(scores[full, t]), float(scores[empty, t])
        d = f_s - e_s
        ok = abs(d) > _EPS

        def norm(y: np.ndarray, e_s: float = e_s, d: float = d, ok: bool = ok) -> np.ndarray:
            return np.clip((y - e_s) / d, 0.0, 1.0) if ok else np.full_like(y, np.nan)

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
            "random_deletion_auc": nanmean(r_del_auc),
            "random_deletion_auc_std": _nanstd(r_del_auc),
            "random_insertion_auc": nanmean(r_ins_auc),
            "random_insertion_auc_std": _nanstd(r_ins_auc),
            "random_deletion_auc_raw": nanmean(r_del_raw),
            "random_deletion_auc_raw_std": _nanstd(r_del_raw),
            "random_insertion_auc_raw": nanmean(r_ins_raw),
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
            f"mean_{k}": nanmean([r[k] for r in per_token])
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


