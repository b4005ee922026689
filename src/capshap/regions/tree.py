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

__all__ = ["Tree"]


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

    def visible(self, coalition: Iterable[int]) -> np.ndarray:
        """Visibility of a coalition: bool array of ``shape``, True where an element is in one
        of the nodes (kept visible); the rest is hidden and filled by the masker."""
        return self.visible_positions(coalition)[self.element_pos]

    def node_region(self, node: int) -> np.ndarray:
        """The elements a node covers: bool array of ``shape``."""
        return self.visible((node,))

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
