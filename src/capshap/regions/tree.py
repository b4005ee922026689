"""Region trees: binary hierarchies of image regions that Owen values are computed over.

A :class:`Tree` has M leaves and M - 1 internal nodes, numbered as in scipy's linkage
format and ``shap.maskers.Image.clustering``: leaves are 0..M-1, internal node M + i has
the children ``linkage[i, :2]``, and the root is 2M - 2. Every element of the image grid
(a pixel, or a pixel channel in channel mode) belongs to exactly one leaf, given by
``leaf_index``.

Leaves are also laid out in depth-first order, so that every node covers one contiguous
range ``span[node] = [lo, hi)`` of leaf positions. A coalition (a set of nodes kept
visible) becomes a pixel mask with one gather, and values are lowered from nodes to pixels
with one cumulative sum; neither needs a per-node pixel mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

__all__ = ["Tree", "axis_aligned", "from_linkage", "segments"]


@dataclass(eq=False)
class Tree:
    """A binary tree over the elements of an image grid.

    Attributes
    ----------
    linkage : (M - 1, 4) float64
        Children (left, right), merge distance (>= 0) and leaf count per internal node,
        in scipy / shap order.
    leaf_index : int32 array of ``shape``
        The leaf each grid element belongs to.
    kind : str
        "axis" for axis-aligned trees, else the segmentation method.
    rects : (2M - 1, 6) int32 array-like, or None
        For axis-aligned trees, each node's box ``y0, y1, x0, x1, c0, c1`` (end exclusive);
        ``rects[node]`` is cheap, ``np.asarray(rects)`` gives the whole table.
    params : dict
        How the tree was made (JSON-serialisable).
    """

    linkage: np.ndarray
    leaf_index: np.ndarray
    kind: str = "custom"
    rects: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    _known: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.linkage = np.asarray(self.linkage, dtype=np.float64)
        self.leaf_index = np.asarray(self.leaf_index)
        if self.leaf_index.dtype.kind not in "iu":
            raise ValueError(f"leaf_index must be an integer array, got {self.leaf_index.dtype}")
        self.leaf_index = self.leaf_index.astype(np.int32, copy=False)
        M = self.n_leaves
        if self.linkage.ndim != 2 or self.linkage.shape[1] < 2:
            raise ValueError(f"linkage must be (M - 1, 4), got shape {self.linkage.shape}")
        if M < 1:
            raise ValueError("a tree needs at least one leaf")
        ch = self.linkage[:, :2].astype(np.int64)
        if ch.size and (ch.min() < 0 or ch.max() > 2 * M - 3 + (M == 1)):
            raise ValueError("linkage refers to nodes outside 0..2M-2")
        self.children = ch
        if self._known is not None:  # a trusted builder already laid the tree out
            self.sizes, lo = self._known
            self.span = np.stack([lo, lo + self.sizes], axis=1)
            self.leaf_pos = lo[:M]
            self._known = None
        else:
            self._layout()
        if self.leaf_index.size and (self.leaf_index.min() < 0 or self.leaf_index.max() >= M):
            raise ValueError(f"leaf_index refers to leaves outside 0..{M - 1}")
        self.element_pos = self.leaf_pos[self.leaf_index]
        if self.leaf_index.size == M:  # one element per leaf: counts are leaf counts
            self.counts = self.sizes
        else:
            counts = np.bincount(self.element_pos.ravel(), minlength=M)
            cum = np.concatenate([[0], np.cumsum(counts)])
            self.counts = cum[self.span[:, 1]] - cum[self.span[:, 0]]

    # -- structure --------------------------------------------------------------------
    @property
    def n_leaves(self) -> int:
        return int(self.linkage.shape[0]) + 1

    @property
    def n_nodes(self) -> int:
        return 2 * self.n_leaves - 1

    @property
    def root(self) -> int:
        return self.n_nodes - 1

    @property
    def shape(self) -> tuple[int, ...]:
        """The element grid: (H, W), or (H, W, C) in channel mode."""
        return tuple(self.leaf_index.shape)

    @property
    def channels(self) -> bool:
        return self.leaf_index.ndim == 3

    def is_leaf(self, node: int) -> bool:
        return node < self.n_leaves

    def left(self, node: int) -> int:
        return int(self.children[node - self.n_leaves, 0])

    def right(self, node: int) -> int:
        return int(self.children[node - self.n_leaves, 1])

    def _layout(self) -> None:
        """Depth-first leaf positions, node spans and leaf counts, vectorised by level."""
        M = self.n_leaves
        n = 2 * M - 1
        sizes = np.ones(n, dtype=np.int64)
        lo = np.zeros(n, dtype=np.int64)
        levels = []
        seen = 1
        frontier = np.array([n - 1], dtype=np.int64) if M > 1 else np.zeros(0, dtype=np.int64)
        while frontier.size:
            levels.append(frontier)
            ch = self.children[frontier - M]
            if np.any(ch.max(axis=1) >= frontier):
                raise ValueError("linkage is not in scipy order: a child has a larger id than its parent")
            seen += ch.size
            flat = ch.ravel()
            frontier = flat[flat >= M]
        if seen != n:
            raise ValueError("linkage does not form a single binary tree over all leaves")
        for lev in reversed(levels):
            ch = self.children[lev - M]
            sizes[lev] = sizes[ch[:, 0]] + sizes[ch[:, 1]]
        for lev in levels:
            ch = self.children[lev - M]
            lo[ch[:, 0]] = lo[lev]
            lo[ch[:, 1]] = lo[lev] + sizes[ch[:, 0]]
        self.sizes = sizes
        self.span = np.stack([lo, lo + sizes], axis=1)
        self.leaf_pos = lo[:M].copy()
        if M > 1 and np.bincount(self.children.ravel(), minlength=n).max() > 1:
            raise ValueError("linkage uses a node twice")

    # -- masks and values -------------------------------------------------------------
    def visible_positions(self, coalition: Iterable[int]) -> np.ndarray:
        """(M,) bool over depth-first leaf positions: True inside the coalition's nodes."""
        vis = np.zeros(self.n_leaves, dtype=bool)
        for node in coalition:
            lo, hi = self.span[node]
            vis[lo:hi] = True
        return vis

    def mask(self, coalition: Iterable[int]) -> np.ndarray:
        """Boolean mask of ``shape``: True where an element is in one of the nodes."""
        return self.visible_positions(coalition)[self.element_pos]

    def node_mask(self, node: int) -> np.ndarray:
        return self.mask((node,))

    def lower(self, node_values: np.ndarray) -> np.ndarray:
        """Spread node values evenly over each node's elements and sum per element.

        node_values: (2M - 1, T) -> (*shape, T) float64. An element's value is the sum, over
        the nodes containing it, of the node's value divided by its element count, so the
        total is preserved exactly (up to rounding). See :meth:`lower_nodes` for credit
        held on a few nodes only.
        """
        node_values = np.asarray(node_values, dtype=np.float64)
        nz = np.flatnonzero(np.any(node_values != 0, axis=1))
        return self.lower_nodes(nz, node_values[nz])

    def lower_nodes(self, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Like :meth:`lower` for credit on some nodes: nodes (K,) int, values (K, T)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64).reshape(len(nodes), -1)
        acc = np.zeros((self.n_leaves + 1, values.shape[1]), dtype=np.float64)
        dens = values / np.maximum(self.counts[nodes], 1)[:, None]
        np.add.at(acc, self.span[nodes, 0], dens)
        np.add.at(acc, self.span[nodes, 1], -dens)
        per_pos = np.cumsum(acc[:-1], axis=0)
        return per_pos[self.element_pos]

    def leaf_map(self) -> np.ndarray:
        """(H, W) int32: the leaf of each pixel (channel 0 in channel mode)."""
        return self.leaf_index if not self.channels else self.leaf_index[..., 0]

    # -- (de)serialisation ------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"tree_linkage": self.linkage, "tree_leaf_index": self.leaf_index}
        if self.rects is not None:
            out["tree_rects"] = np.asarray(self.rects)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, kind: str = "custom", params: dict[str, Any] | None = None) -> "Tree":
        rects = arrays["tree_rects"] if "tree_rects" in arrays else None
        return cls(
            np.asarray(arrays["tree_linkage"]),
            np.asarray(arrays["tree_leaf_index"]),
            kind=kind,
            rects=None if rects is None else np.asarray(rects),
            params=dict(params or {}),
        )


def from_linkage(linkage: np.ndarray, leaf_index: np.ndarray, kind: str = "custom", **params: Any) -> Tree:
    """Build a :class:`Tree` from a scipy-style linkage and a map element -> leaf."""
    return Tree(np.asarray(linkage), np.asarray(leaf_index), kind=kind, params=params)


def axis_aligned(h: int, w: int, channels: bool = False, c: int = 3) -> Tree:
    """The axis-aligned tree of ``shap.maskers.Image``: halve the longer side (rows when
    h >= w, the first half taking ``n // 2``), channels last.

    With ``channels=True`` the grid is (h, w, c) and ``tree.linkage`` equals
    ``shap.maskers.Image(..., (h, w, c)).clustering``; with ``channels=False`` (default)
    pixels are the leaves (the grid is (h, w)), as shap's tree for shape (h, w, 1).

    As in shap, leaf i is the grid element with flat index i while the numbering follows
    shap's construction, so a node's region is shap's geometric box reflected through the
    image centre; ``rects`` holds the reflected boxes, which is what gets masked.
    Vectorised: a 500x500 tree builds in a few tens of milliseconds.
    """
    h, w = int(h), int(w)
    C = int(c) if channels else 1
    if h < 1 or w < 1 or C < 1:
        raise ValueError(f"image size must be positive, got {h}x{w}x{C}")
    M = h * w * C
    # Generate all boxes level by level, as columns x0, x1, y0, y1, z0, z1 (x = rows, as in
    # shap), with each box's depth-first start position and the index of its first child
    # (children are generated next to each other, left then right).
    cols = [np.array([v], dtype=np.int32) for v in (0, h, 0, w, 0, C)]
    levels = [(cols, np.array([0], dtype=np.int64))]
    first_child = [np.full(1, -1, dtype=np.int64)]
    total = 1
    while True:
        x0, x1, y0, y1, z0, z1 = cols
        xw, yw, zw = x1 - x0, y1 - y0, z1 - z0
        idx = np.flatnonzero((xw.astype(np.int64) * yw * zw) > 1)
        if idx.size == 0:
            break
        x0, x1, y0, y1, z0, z1 = (a[idx] for a in cols)
        xw, yw, zw = xw[idx], yw[idx], zw[idx]
        sx = (xw >= yw) & (xw > 1)
        sy = ~sx & (yw > 1)
        sz = ~sx & ~sy
        xm = np.where(sx, x0 + xw // 2, x1)
        ym = np.where(sy, y0 + yw // 2, y1)
        zm = np.where(sz, z0 + zw // 2, z1)
        n2 = 2 * idx.size
        new = [np.empty(n2, dtype=np.int32) for _ in range(6)]
        for k, (lv, rv) in enumerate(
            (
                (x0, np.where(sx, xm, x0)),
                (xm, x1),
                (y0, np.where(sy, ym, y0)),
                (ym, y1),
                (z0, np.where(sz, zm, z0)),
                (zm, z1),
            )
        ):
            new[k][0::2] = lv
            new[k][1::2] = rv
        lsize = (xm - x0).astype(np.int64) * (ym - y0) * (zm - z0)
        plo = levels[-1][1][idx]
        lo = np.empty(n2, dtype=np.int64)
        lo[0::2] = plo
        lo[1::2] = plo + lsize
        first_child[-1][idx] = total + 2 * np.arange(idx.size)
        first_child.append(np.full(n2, -1, dtype=np.int64))
        levels.append((new, lo))
        total += n2
        cols = new
    B = [np.concatenate([lev[0][k] for lev in levels]) for k in range(6)]
    LO = np.concatenate([lev[1] for lev in levels])
    FC = np.concatenate(first_child)
    assert len(LO) == 2 * M - 1
    size = (B[1] - B[0]).astype(np.int64) * (B[3] - B[2]) * (B[5] - B[4])
    # shap pops nodes from a heap keyed by (-size, x0, x1, y0, y1, z0, z1); children always
    # sort after their parent, so the pop order is the global sort order of these keys.
    bh, bw, bc = (int(v).bit_length() for v in (h, w, C))
    if int(M).bit_length() + 2 * (bh + bw + bc) <= 63:
        key = M - size
        for col, bits in ((0, bh), (1, bh), (2, bw), (3, bw), (4, bc), (5, bc)):
            key <<= bits
            key |= B[col]
        order = np.argsort(key)  # keys are unique
    else:  # pragma: no cover - only for gigantic images
        order = np.lexsort((B[5], B[4], B[3], B[2], B[1], B[0], -size))
    g = order[::-1]  # node id -> generated box (shap numbers nodes in reverse pop order)
    ids = np.empty(len(LO), dtype=np.int64)  # generated box -> node id
    ids[g] = np.arange(2 * M - 1)
    sizes = size[g]
    lo = LO[g]
    fc = FC[g[M:]]
    linkage = np.empty((M - 1, 4), dtype=np.float64)
    linkage[:, 0] = ids[fc]
    linkage[:, 1] = ids[fc + 1]
    linkage[:, 2] = 0.0
    linkage[:, 3] = sizes[M:]
    # reflected boxes in node order (the element with flat index i is leaf i), looked up
    # per node on demand rather than gathered for all 2M - 1 nodes up front
    rects = _ReflectedBoxes(B, g, (h, w, C))
    shape = (h, w, C) if channels else (h, w)
    leaf_index = np.arange(M, dtype=np.int32).reshape(shape)
    return Tree(
        linkage, leaf_index, kind="axis", rects=rects, params={"channels": bool(channels)}, _known=(sizes, lo)
    )


class _ReflectedBoxes:
    """Node boxes ``y0, y1, x0, x1, c0, c1`` of an axis-aligned tree, computed on access.

    Indexing by node (an int or an index array) gives int32 rows; ``np.asarray`` gives
    the full (2M - 1, 6) array (computed once).
    """

    _COLS = ((0, 1), (0, 0), (1, 3), (1, 2), (2, 5), (2, 4))  # (extent, generated column)

    def __init__(self, cols: list[np.ndarray], node_to_box: np.ndarray, extent: tuple[int, int, int]):
        self._cols = cols
        self._g = node_to_box
        self._ext = extent
        self._full: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._g), 6)

    def __len__(self) -> int:
        return len(self._g)

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._full is not None:
            return self._full[index]
        if isinstance(index, tuple):
            return np.asarray(self)[index]
        b = self._g[index]
        return np.stack([self._ext[e] - self._cols[c][b] for e, c in self._COLS], axis=-1).astype(np.int32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._full is None:
            full = np.empty(self.shape, dtype=np.int32)
            for k, (e, c) in enumerate(self._COLS):
                full[:, k] = self._ext[e] - self._cols[c][self._g]
            self._full = full
        return self._full if dtype is None else self._full.astype(dtype)


def segments(image: np.ndarray, method: str = "slic", n_segments: int = 64, **kwargs: Any) -> Tree:
    """A tree whose leaves are superpixels merged bottom-up; see :func:`capshap.regions.segments.segments`."""
    from capshap.regions.segments import segments as _segments  # scikit-image loads only when used

    return _segments(image, method=method, n_segments=n_segments, **kwargs)
