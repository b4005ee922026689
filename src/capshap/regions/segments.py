"""Region trees from real segments: superpixels or user masks merged into a hierarchy.

:func:`segments` over-segments an image with scikit-image (SLIC, Felzenszwalb or
quickshift), :func:`from_labels` takes a user's integer label map (from SAM, a detector,
a PNG) and :func:`from_masks` a list of boolean masks. Each returns a binary
:class:`~capshap.regions.tree.Tree` whose leaves are the segments, for the same Owen-value
engine as the axis-aligned tree.

How regions are merged
----------------------
Bottom-up and greedy: a priority queue holds one entry per pair of regions that touch
(4-connectivity, a region adjacency graph); the cheapest pair is merged, the merged region
gets fresh entries with its neighbours, stale entries are skipped. Only touching regions
are ever merged, so every internal node joins two adjacent regions. The cost of joining
regions ``a`` and ``b`` is::

    cost = (eps + w_colour * d_colour + w_texture * d_texture + w_shape * d_shape) * size

- ``d_colour``: distance between the mean CIE-Lab colours (Delta E 1976), divided by its
  median over the initial adjacent pairs (floored at 1 Delta E), so that typical
  neighbours are at distance ~1 whatever the image's contrast.
- ``d_texture``: half the L1 distance between the regions' normalised histograms of a
  texture code (gradient magnitude of L in 8 global quantile bins; for the 4 strongest
  bins also the gradient orientation in 4 bins: 20 codes), divided by its median over the
  initial pairs (floored at 0.05).
- ``d_shape``: ``1 - shared boundary / shorter perimeter``, in [0, 1]: regions that wrap
  around each other merge before regions that barely touch.
- ``size``: the Ward-like factor ``|a| |b| / (|a| + |b|)`` (pixel counts), divided by the
  mean leaf size. It grows with the smaller region, so small regions merge first and two
  large regions merge only when they are alike; ``eps`` (0.1) keeps this true between
  regions with identical appearance.

Balance. The Ward-like size factor already favours merging small regions first, which
keeps trees fairly balanced; as a guard against chains (a large homogeneous region
absorbing its neighbours one at a time) the cost is also multiplied by
``(max(La, Lb) / min(La, Lb)) ** balance``, where ``La``, ``Lb`` are the leaf counts of
the two regions (``balance=0.5`` by default): merging a region with something a quarter of
its (leaf) size costs twice as much. The depth (edges on the longest root-to-leaf path) is
logged and stored as ``tree.params["depth"]``. Measured with SLIC (``n_segments=100``):
astronaut at 500x500, 55 leaves, depth 7 (log2 M = 5.8; 9 with ``balance=0``); chelsea at
500x375, 88 leaves, depth 10 (6.5; 10 with ``balance=0``); astronaut with
``compactness=20``, 85 leaves, depth 11 (6.4). A tree of ~100 leaves has ~200 nodes, so a
budget of a few hundred evaluations can open most of it. Deep chains arise only where the
adjacency forces them: regions that touch nothing but one big region (islands in a
user's background mask) can only join it one by one.

Without an image (:func:`from_labels` / :func:`from_masks` with ``image=None``) colour and
texture are unknown; the cost is then ``(eps + w_shape * d_shape) * size * ratio ** balance``,
i.e. size and adjacency only.

If the adjacency graph ever runs out of pairs while several regions remain (it cannot for
a label map that covers the image, but the code does not rely on that), the remaining
regions are merged like a Huffman code: the two with the fewest pixels first (ties by id).

Determinism. No randomness is used (quickshift gets a fixed ``rng``); heap ties are broken
by region ids, and leaf ids are ordered by each leaf's first pixel in raster order. The
same image and parameters give the same arrays.

Merge heights in ``linkage[:, 2]`` are the running maximum of the merge costs along the
tree, so they never decrease towards the root (scipy's dendrogram convention).
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any, Sequence

import cv2
import numpy as np

from capshap.jsonable import jsonable
from capshap.regions.tree import Tree

__all__ = ["superpixel_tree", "from_labels", "from_masks", "oversegment", "METHODS"]

logger = logging.getLogger(__name__)

from capshap.regions import SEGMENT_METHODS as METHODS

_EPS = 0.1
_N_MAG = 8  # gradient-magnitude bins
_N_ORI = 4  # orientation bins, used for the strongest magnitude bins
_N_STRONG = 4  # how many of the top magnitude bins also carry orientation
_N_CODES = (_N_MAG - _N_STRONG) + _N_STRONG * _N_ORI


# -- input checks ---------------------------------------------------------------------
def _as_rgb(image: Any, what: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) from (H, W, 3), (H, W, 4) (alpha dropped), (H, W) or (H, W, 1)."""
    im = np.asarray(image)
    if im.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 RGB array (H, W, 3), got dtype {im.dtype}")
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    elif im.ndim == 3 and im.shape[2] in (1, 3, 4):
        im = np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im[:, :, :3]
    else:
        raise ValueError(f"{what} must be a uint8 RGB array (H, W, 3), got shape {im.shape}")
    if im.shape[0] < 1 or im.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {im.shape}")
    return np.ascontiguousarray(im)


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]} (H x W)"


# -- label maps -----------------------------------------------------------------------
def _raster_relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber an integer map to 0..K-1 by each label's first pixel in raster order."""
    flat = labels.ravel()
    uniq, inverse, first = _unique_first(flat)
    rank = np.empty(len(uniq), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq), dtype=np.int32)
    return rank[inverse].reshape(labels.shape), len(uniq)


def _unique_first(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return uniq, inverse.ravel(), first


def _split_connected(labels: np.ndarray) -> np.ndarray:
    """Give every 4-connected component of every label its own id (any ints; raster order)."""
    from skimage.measure import label as cc_label

    dense, _ = _raster_relabel(labels)
    comp = cc_label(dense + 1, background=0, connectivity=1)
    return _raster_relabel(comp)[0]


def _adjacency(leaf: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of 4-adjacent regions a < b and the length of their shared boundary."""
    keys = []
    for x, y in ((leaf[:, :-1], leaf[:, 1:]), (leaf[:-1, :], leaf[1:, :])):
        d = x != y
        a, b = x[d].astype(np.int64), y[d].astype(np.int64)
        keys.append(np.minimum(a, b) * K + np.maximum(a, b))
    k, length = np.unique(np.concatenate(keys), return_counts=True)
    return k // K, k % K, length.astype(np.float64)


# -- region statistics ------------------------------------------------------------------
def _texture_codes(lab_l: np.ndarray) -> np.ndarray:
    """(H, W) int: a texture code per pixel from the gradient of the L channel."""
    gx = cv2.Sobel(lab_l, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab_l, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    edges = np.quantile(mag, np.arange(1, _N_MAG) / _N_MAG)
    mbin = np.searchsorted(edges, mag, side="right")
    ori = np.arctan2(gy, gx) % np.pi
    obin = np.minimum((ori * (_N_ORI / np.pi)).astype(np.int64), _N_ORI - 1)
    weak = _N_MAG - _N_STRONG
    return np.where(mbin < weak, mbin, weak + (mbin - weak) * _N_ORI + obin)


class _Regions:
    """Per-region statistics for up to 2K - 1 regions (K leaves plus every merge)."""

    def __init__(self, leaf: np.ndarray, K: int, image: np.ndarray | None, weights: dict[str, float]):
        n_total = 2 * K - 1
        flat = leaf.ravel()
        H, W = leaf.shape
        self.w = weights
        self.n = np.zeros(n_total)
        self.n[:K] = np.bincount(flat, minlength=K)
        self.leaves = np.zeros(n_total)
        self.leaves[:K] = 1
        self.first = np.zeros(n_total, dtype=np.int64)
        self.first[:K] = _unique_first(flat)[2]
        self.nbar = leaf.size / K
        self.height = np.zeros(n_total)
        # perimeter = boundary with other regions + image border
        border = np.concatenate([leaf[0], leaf[-1], leaf[:, 0], leaf[:, -1]])
        self.perim = np.zeros(n_total)
        self.perim[:K] = np.bincount(border, minlength=K)
        self.has_image = image is not None
        if self.has_image:
            rgb = image.astype(np.float32) / 255.0
            lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)  # L in [0, 100], a, b in ~[-127, 127]
            self.colsum = np.zeros((n_total, 3))
            for c in range(3):
                self.colsum[:K, c] = np.bincount(flat, weights=lab[..., c].ravel(), minlength=K)
            codes = _texture_codes(lab[..., 0]).ravel()
            self.hist = np.zeros((n_total, _N_CODES))
            self.hist[:K] = np.bincount(flat * _N_CODES + codes, minlength=K * _N_CODES).reshape(K, _N_CODES)
        self.col_scale = 1.0
        self.tex_scale = 1.0

    def calibrate(self, a: np.ndarray, b: np.ndarray) -> None:
        """Set colour and texture scales to their medians over the initial pairs."""
        if not self.has_image or a.size == 0:
            return
        self.col_scale = max(float(np.median(self._d_colour(a, b))), 1.0)
        self.tex_scale = max(float(np.median(self._d_texture(a, b))), 0.05)

    def _d_colour(self, a: Any, b: np.ndarray) -> np.ndarray:
        ma = self.colsum[a] / self.n[a, None] if np.ndim(a) else self.colsum[a] / self.n[a]
        mb = self.colsum[b] / self.n[b, None]
        return np.sqrt(((ma - mb) ** 2).sum(axis=-1))

    def _d_texture(self, a: Any, b: np.ndarray) -> np.ndarray:
        ha = self.hist[a] / self.n[a, None] if np.ndim(a) else self.hist[a] / self.n[a]
        hb = self.hist[b] / self.n[b, None]
        return 0.5 * np.abs(ha - hb).sum(axis=-1)

    def costs(self, a: Any, b: np.ndarray, shared: np.ndarray) -> np.ndarray:
        """Merge costs of region(s) ``a`` with regions ``b`` (int array), shared boundary."""
        w = self.w
        app = _EPS + w["shape_weight"] * (1.0 - shared / np.minimum(self.perim[a], self.perim[b]))
        if self.has_image:
            app = app + w["colour_weight"] * self._d_colour(a, b) / self.col_scale
            app = app + w["texture_weight"] * self._d_texture(a, b) / self.tex_scale
        na, nb = self.n[a], self.n[b]
        size = na * nb / (na + nb) / self.nbar
        la, lb = self.leaves[a], self.leaves[b]
        ratio = np.maximum(la, lb) / np.minimum(la, lb)
        return np.maximum(app, 0.0) * size * ratio ** w["balance"]

    def merge(self, a: int, b: int, k: int, shared_ab: float) -> None:
        for arr in (self.n, self.leaves):
            arr[k] = arr[a] + arr[b]
        self.first[k] = min(self.first[a], self.first[b])
        self.perim[k] = self.perim[a] + self.perim[b] - 2.0 * shared_ab
        if self.has_image:
            self.colsum[k] = self.colsum[a] + self.colsum[b]
            self.hist[k] = self.hist[a] + self.hist[b]


def _agglomerate(
    leaf: np.ndarray, K: int, image: np.ndarray | None, weights: dict[str, float]
) -> tuple[np.ndarray, _Regions]:
    """Greedy merging of K adjacent regions into one: (K - 1, 3) rows (a, b, height)."""
    reg = _Regions(leaf, K, image, weights)
    ea, eb, elen = _adjacency(leaf, K)
    np.add.at(reg.perim, ea, elen)
    np.add.at(reg.perim, eb, elen)
    reg.calibrate(ea, eb)
    nbrs: list[dict[int, float]] = [dict() for _ in range(2 * K - 1)]
    for a, b, L in zip(ea.tolist(), eb.tolist(), elen.tolist()):
        nbrs[a][b] = L
        nbrs[b][a] = L
    c0 = reg.costs(ea, eb, elen) if ea.size else np.zeros(0)
    heap = list(zip(c0.tolist(), ea.tolist(), eb.tolist()))
    heapq.heapify(heap)
    alive = np.zeros(2 * K - 1, dtype=bool)
    alive[:K] = True
    rows = np.zeros((K - 1, 3))
    k = K
    while k < 2 * K - 1:
        if heap:
            cost, a, b = heapq.heappop(heap)
            if not (alive[a] and alive[b]):
                continue
        else:  # no touching pairs left: join the two smallest regions (Huffman order)
            ids = np.flatnonzero(alive)
            order = np.lexsort((ids, reg.n[ids]))
            a, b = sorted(int(i) for i in ids[order[:2]])
            cost = 0.0
        shared_ab = nbrs[a].pop(b, 0.0)
        nbrs[b].pop(a, None)
        reg.merge(a, b, k, shared_ab)
        merged = nbrs[a]
        for c, L in nbrs[b].items():
            merged[c] = merged.get(c, 0.0) + L
        nbrs[a] = nbrs[b] = {}
        nbrs[k] = merged
        for c, L in merged.items():
            nc = nbrs[c]
            nc.pop(a, None)
            nc.pop(b, None)
            nc[k] = L
        alive[a] = alive[b] = False
        alive[k] = True
        h = max(float(cost), reg.height[a], reg.height[b])
        reg.height[k] = h
        rows[k - K] = (a, b, h)
        if merged:
            cs = np.fromiter(merged.keys(), dtype=np.int64, count=len(merged))
            ls = np.fromiter(merged.values(), dtype=np.float64, count=len(merged))
            for cost_c, c in zip(reg.costs(k, cs, ls).tolist(), cs.tolist()):
                heapq.heappush(heap, (cost_c, c, k))
        k += 1
    return rows, reg


def _depth(linkage: np.ndarray) -> int:
    """Edges on the longest root-to-leaf path."""
    M = linkage.shape[0] + 1
    d = np.zeros(2 * M - 1, dtype=np.int64)
    ch = linkage[:, :2].astype(np.int64)
    for i in range(M - 1):
        d[M + i] = 1 + max(d[ch[i, 0]], d[ch[i, 1]])
    return int(d[-1])


def _build(
    leaf: np.ndarray,
    K: int,
    image: np.ndarray | None,
    weights: dict[str, float],
    kind: str,
    params: dict[str, Any],
    max_leaves: int | None = None,
) -> Tree:
    """Tree over a leaf map with ids 0..K-1 in raster order; merges below ``max_leaves``
    regions are folded into the leaves (over-segmentations)."""
    t0 = time.perf_counter()
    rows, reg = _agglomerate(leaf, K, image, weights)
    n_pre = 0 if max_leaves is None else max(K - max(int(max_leaves), 2), 0)
    M = K - n_pre
    n_all = 2 * K - 1
    # the leaves: regions alive after the first n_pre merges, numbered by first pixel
    target = np.arange(n_all)
    alive = np.zeros(n_all, dtype=bool)
    alive[: K + n_pre] = True
    ch_pre = rows[:n_pre, :2].astype(np.int64)
    alive[ch_pre.ravel()] = False
    snap = np.flatnonzero(alive)
    for i in range(n_pre - 1, -1, -1):
        target[ch_pre[i]] = target[K + i]
    new_id = np.full(n_all, -1, dtype=np.int64)
    new_id[snap[np.argsort(reg.first[snap], kind="stable")]] = np.arange(M)
    new_id[K + n_pre :] = np.arange(M, 2 * M - 1)
    leaf_map = new_id[target[:K]][leaf].astype(np.int32)
    linkage = np.zeros((M - 1, 4))
    top = rows[n_pre:]
    a, b = new_id[top[:, 0].astype(np.int64)], new_id[top[:, 1].astype(np.int64)]
    linkage[:, 0] = np.minimum(a, b)
    linkage[:, 1] = np.maximum(a, b)
    linkage[:, 2] = top[:, 2]
    cnt = np.ones(2 * M - 1)  # leaf counts in the new tree
    for i in range(M - 1):
        cnt[M + i] = cnt[int(linkage[i, 0])] + cnt[int(linkage[i, 1])]
    linkage[:, 3] = cnt[M:]
    depth = _depth(linkage)
    params = dict(params, n_leaves=int(M), depth=depth, **weights)
    logger.debug("segment tree: %d leaves, depth %d (log2 M = %.1f), merged in %.3f s",
                 M, depth, np.log2(max(M, 1)), time.perf_counter() - t0)
    return Tree(linkage, leaf_map, kind=kind, params=jsonable(params))


def _weights(
    colour_weight: float, texture_weight: float, shape_weight: float, balance: float
) -> dict[str, float]:
    w = {
        "colour_weight": float(colour_weight),
        "texture_weight": float(texture_weight),
        "shape_weight": float(shape_weight),
        "balance": float(balance),
    }
    for k, v in w.items():
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a finite number >= 0, got {v}")
    return w


def _need_two(K: int, what: str) -> None:
    if K < 2:
        raise ValueError(f"{what} has a single segment; a region tree needs at least 2 segments")


# -- public API -----------------------------------------------------------------------
def oversegment(
    image: np.ndarray, method: str = "slic", n_segments: int = 64, **method_kwargs: Any
) -> np.ndarray:
    """Segment an image with scikit-image: (H, W, 3) uint8 -> (H, W) int32 labels.

    Every label is one 4-connected component (disconnected segments are split) and labels
    are 0..K-1 in raster order of their first pixel. ``method`` is "slic" (``n_segments``
    passed on, ``start_label=0``), "felzenszwalb" (defaults ``scale=100, sigma=0.5,
    min_size=H*W // (4 n_segments)``) or "quickshift" (defaults ``kernel_size=5,
    max_dist=10, rng=0``; images over ``max_pixels=60000`` pixels are segmented on a
    downscaled copy whose labels are scaled back up, which keeps it under a second); ``method_kwargs`` override these defaults.
    """
    im = _as_rgb(image)
    n_segments = _check_n(n_segments)
    H, W = im.shape[:2]
    if method == "slic":
        from skimage.segmentation import slic

        kw = dict(n_segments=n_segments, start_label=0)
        kw.update(method_kwargs)
        lab = slic(im, **kw)
    elif method == "felzenszwalb":
        from skimage.segmentation import felzenszwalb

        kw = dict(scale=100.0, sigma=0.5, min_size=max(H * W // (4 * n_segments), 5))
        kw.update(method_kwargs)
        lab = felzenszwalb(im, **kw)
    elif method == "quickshift":
        from skimage.segmentation import quickshift

        kw = dict(kernel_size=5, max_dist=10, rng=0)
        kw.update(method_kwargs)
        # quickshift costs ~3 s on a 500x375 photo: run it on a copy of at most
        # ``max_pixels`` pixels and scale the labels back up (nearest neighbour)
        max_pixels = int(kw.pop("max_pixels", 60_000))
        scale = min(1.0, (max_pixels / (H * W)) ** 0.5)
        if scale < 1.0:
            size = (max(1, round(W * scale)), max(1, round(H * scale)))
            small = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
            lab = quickshift(small, **kw).astype(np.int32)
            lab = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST)
        else:
            lab = quickshift(im, **kw)
    else:
        raise ValueError(f"unknown segmentation method {method!r}; choose one of {', '.join(METHODS)}")
    return _split_connected(np.asarray(lab))


def _check_n(n_segments: Any) -> int:
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or n_segments < 2:
        raise ValueError(f"n_segments must be an integer >= 2, got {n_segments!r}")
    return int(n_segments)


def superpixel_tree(
    image: np.ndarray,
    method: str = "slic",
    n_segments: int = 64,
    *,
    colour_weight: float = 1.0,
    texture_weight: float = 1.0,
    shape_weight: float = 0.5,
    balance: float = 0.5,
    **method_kwargs: Any,
) -> Tree:
    """Region tree whose leaves are superpixels of ``image``.

    image: (H, W, 3) uint8 RGB. method: "slic", "felzenszwalb" or "quickshift"
    (scikit-image; ``method_kwargs`` go to it, see :func:`oversegment`). n_segments: the
    number of leaves wanted. SLIC takes it directly (the result is approximate: scikit-image
    often returns fewer, e.g. 55 for 100 on astronaut, more with a higher ``compactness``); for
    Felzenszwalb and quickshift, which have no such parameter, the over-segmentation is
    reduced to at most ``n_segments`` leaves by the same agglomerative merging that builds
    the tree, so each leaf is a union of touching segments.

    The weights set the merge cost (see the module docstring). Returns a Tree with
    ``leaf_index`` (H, W) int32, ``kind=method`` and ``params`` recording the settings,
    the number of leaves and the depth.
    """
    if method not in METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; choose one of {', '.join(METHODS)}")
    im = _as_rgb(image)
    w = _weights(colour_weight, texture_weight, shape_weight, balance)
    n_segments = _check_n(n_segments)
    leaf = oversegment(im, method, n_segments, **method_kwargs)
    K = int(leaf.max()) + 1
    _need_two(K, f"the {method} segmentation of the {_hw(im.shape)} image")
    reduce = method in ("felzenszwalb", "quickshift")
    params = dict(method=method, n_segments=n_segments, n_raw_segments=K, **method_kwargs)
    return _build(leaf, K, im, w, kind=method, params=params, max_leaves=n_segments if reduce else None)


def _label_array(label_map: Any) -> np.ndarray:
    lm = np.asarray(label_map)
    if lm.dtype == bool:
        lm = lm.astype(np.int64)
    if lm.dtype.kind == "f":
        if not np.all(np.isfinite(lm)) or not np.all(lm == np.round(lm)):
            raise ValueError("label map must hold integer labels; got non-integer floats")
        lm = lm.astype(np.int64)
    if lm.dtype.kind not in "iu":
        raise ValueError(f"label map must be an integer array (H, W), got dtype {lm.dtype}")
    if lm.ndim == 3:  # colour-coded labels, e.g. an RGB PNG: one label per distinct colour
        flat = lm.reshape(-1, lm.shape[2])
        _, inv = np.unique(flat, axis=0, return_inverse=True)
        lm = inv.reshape(lm.shape[:2])
    elif lm.ndim != 2:
        raise ValueError(f"label map must be (H, W) (or (H, W, C) colour-coded), got shape {lm.shape}")
    if lm.size == 0:
        raise ValueError(f"label map is empty: shape {lm.shape}")
    return lm


def from_labels(
    label_map: np.ndarray,
    image: np.ndarray | None = None,
    *,
    colour_weight: float = 1.0,
    texture_weight: float = 1.0,
    shape_weight: float = 0.5,
    balance: float = 0.5,
) -> Tree:
    """Region tree over a user's segmentation given as a label map.

    label_map: (H, W) integers (any values, e.g. SAM's ids with 0 as background), or
    (H, W, C) colour-coded (each distinct colour is one label). Each distinct label is one
    leaf, kept whole even if it is not connected (the user's object stays one region);
    leaves are numbered by their first pixel in raster order. image: (H, W, 3) uint8 of
    the same H, W, for the colour and texture terms; without it the merge cost uses size
    and adjacency only.
    """
    lm = _label_array(label_map)
    im = None
    if image is not None:
        im = _as_rgb(image)
        if im.shape[:2] != lm.shape[:2]:
            raise ValueError(
                f"label map is {_hw(lm.shape)} but the image is {_hw(im.shape)}; "
                "the label map must have the image's size (resize it with nearest-neighbour)"
            )
    w = _weights(colour_weight, texture_weight, shape_weight, balance)
    leaf, K = _raster_relabel(lm)
    _need_two(K, f"the label map ({_hw(lm.shape)})")
    return _build(leaf, K, im, w, kind="labels", params=dict(source="labels", n_labels=K))


def from_masks(
    masks: Sequence[np.ndarray] | np.ndarray,
    image: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
    *,
    colour_weight: float = 1.0,
    texture_weight: float = 1.0,
    shape_weight: float = 0.5,
    balance: float = 0.5,
) -> Tree:
    """Region tree over a user's segmentation given as boolean masks.

    masks: a list of K (H, W) arrays (bool, or numbers where non-zero means inside), or a
    (K, H, W) array. Their size must be the image's (or ``shape``, or else the first
    mask's). Overlaps: at a pixel covered by several masks the mask with the fewest pixels
    wins (so small objects stay visible), ties going to the earlier mask in the list. Each
    mask is one leaf, kept whole even if not connected; masks left with no pixels (empty,
    or wholly covered by smaller ones) are dropped and listed in
    ``tree.params["dropped_masks"]``. Pixels covered by no mask form the background:
    one leaf per 4-connected component.
    """
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise ValueError(f"masks as one array must be (K, H, W), got shape {masks.shape}")
        masks = list(masks)
    masks = list(masks)
    if not masks:
        raise ValueError("the mask list is empty; give at least one (H, W) boolean mask")
    im = _as_rgb(image) if image is not None else None
    if im is not None:
        target, ref = im.shape[:2], "the image"
    elif shape is not None:
        target, ref = (int(shape[0]), int(shape[1])), "shape"
    else:
        target, ref = None, "mask 0"
    ms = []
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[:, :, 0]
        if target is None and m.ndim == 2:
            target = m.shape
        if m.ndim != 2 or m.shape != tuple(target):
            raise ValueError(
                f"mask {i} has shape {m.shape} but {ref} is {_hw(target) if target else '?'}; "
                "every mask must be a 2-D array of the image's size"
            )
        if m.dtype != bool:
            if m.dtype.kind not in "iuf":
                raise ValueError(f"mask {i} must be boolean or numeric, got dtype {m.dtype}")
            m = m != 0
        ms.append(m)
    areas = np.array([int(m.sum()) for m in ms])
    if not areas.any():
        raise ValueError(f"all {len(ms)} masks are empty (no True pixels)")
    owner = np.full(target, -1, dtype=np.int64)
    # paint large to small; among equal areas the earlier mask is painted last and wins
    for i in np.lexsort((-np.arange(len(ms)), -areas)):
        owner[ms[i]] = i
    won = np.bincount(owner[owner >= 0], minlength=len(ms))
    dropped = [int(i) for i in np.flatnonzero(won == 0)]
    if dropped:
        logger.warning(
            "masks %s have no pixels of their own (empty or covered by smaller masks); dropped",
            dropped,
        )
    bg = owner < 0
    n_bg = 0
    if bg.any():
        n_bg, comp = cv2.connectedComponents(bg.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        n_bg -= 1
        owner[bg] = len(ms) + comp[bg] - 1
    leaf, K = _raster_relabel(owner)
    _need_two(K, f"the mask set ({len(ms)} masks, {n_bg} background regions)")
    w = _weights(colour_weight, texture_weight, shape_weight, balance)
    params = dict(source="masks", n_masks=len(ms), dropped_masks=dropped, n_background=int(n_bg))
    return _build(leaf, K, im, w, kind="masks", params=params)


def __getattr__(name: str) -> Any:
    if name == "segments":  # the 0.2 name, kept for one release
        import warnings

        warnings.warn("capshap.segments is deprecated and goes in 0.4; use capshap.superpixel_tree",
                      DeprecationWarning, stacklevel=2)
        return superpixel_tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
