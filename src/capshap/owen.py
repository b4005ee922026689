"""Budgeted, best-first Owen values over a binary region tree.

This is the recursion of shap's Partition explainer (``PartitionExplainer.owen``), rebuilt
around three savings: the full and the empty coalition are evaluated inside the first
batch, a coalition is never evaluated twice, and coalitions are tuples of tree nodes
rather than full masks, so memory grows with the nodes expanded, not with max_evals x
pixels. It knows nothing about images or text: it sees a :class:`~capshap.regions.tree.Tree`
and a function from a list of coalitions to an (N, T) array.

Given the same tree, batch size and budget, and a model without priority ties, the values
equal ``shap.PartitionExplainer``'s (the expansion order, batching, budget accounting and
arithmetic are the same); ties are broken by a private, seeded random stream instead of
numpy's global one.

Adaptive budget (``tolerance > 0``). A queued split's priority is shap's: the largest
change, over the words, that the split's node makes in its context, times its Owen weight.
Left unsplit, the node keeps that change as one uniform credit; splitting it can only
redistribute it among the node's parts. So once the largest priority left in the queue is
below ``tolerance`` times the largest word total (``max_t |f(image)_t - f(all masked)_t|``),
no split left can move more than that fraction of a word's credit within its node, and the
expansion stops, ``max_evals`` being the cap. The check is made before every expansion,
so a batch is cut short rather than filled with splits below the line; the splits that
batch queues are checked in turn (a part can change more than its whole), so the run
ends only when everything left is below the line. Priorities are maxima over words, so a
word with no credit (a template word that scores a constant) never makes the engine
expand; the line is relative to the largest word, so a word with little credit cannot
make it spend budget either. The order of expansion is the fixed budget's: the calls
are the fixed run's up to the first one the line cuts short (with one split per call, an
adaptive run is exactly the fixed run with the budget it used), and with
``tolerance=0`` (the default) the values are the fixed budget's bit for bit.
"""

from __future__ import annotations

import heapq
import logging
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only; keeps ``import capshap`` light
    from capshap.regions.tree import Tree

logger = logging.getLogger(__name__)

__all__ = ["owen_values", "OwenResult", "check_params", "Coalition"]

Coalition = tuple[int, ...]
"""A coalition: the tree nodes kept visible, as a tuple of node ids (disjoint regions)."""


@dataclass
class OwenResult:
    """What :func:`owen` returns.

    Attributes
    ----------
    nodes : (K,) int64
        Nodes that received credit, ascending.
    node_values : (K, T) float64
        Their credit; ``tree.lower`` spreads it over pixels. Sums to outputs - base_values.
    base_values : (T,) float64
        f(all masked).
    outputs : (T,) float64
        f(image).
    coalitions : list of tuple[int, ...]
        Every coalition evaluated, in evaluation order (row i of ``scores``); the first two
        are the empty coalition () and the full one (root,).
    scores : (K_eval, T) float64
        The model's output for each evaluated coalition.
    n_calls : int
        Number of calls of the model function.
    budget_used : int
        Evaluations counted against max_evals, as shap counts them.
    stopped : str
        Why the expansion stopped: ``"budget"`` (max_evals reached), ``"tolerance"`` (the
        largest priority left fell below the tolerance line) or ``"complete"`` (every
        node split down to the leaves).
    priority_left : float
        The largest priority left unexpanded when it stopped (0.0 when complete), in
        score units.
    """

    nodes: np.ndarray
    node_values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    coalitions: list[Coalition]
    scores: np.ndarray
    n_calls: int
    budget_used: int
    stopped: str = "complete"
    priority_left: float = 0.0

    @property
    def n_evals(self) -> int:
        """Distinct coalitions evaluated (model evaluations)."""
        return len(self.coalitions)


def check_params(max_evals: int, batch_size: int, fixed_context: object, tolerance: object = 0.0) -> None:
    """Raise a ValueError that names the value for bad engine parameters."""
    if isinstance(max_evals, bool) or not isinstance(max_evals, (int, np.integer)) or max_evals < 3:
        raise ValueError(
            f"max_evals must be an integer >= 3 (f(image), f(all masked) and at least one "
            f"split), got {max_evals!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if fixed_context is not None and (isinstance(fixed_context, bool) or fixed_context not in (0, 1)):
        raise ValueError(f"fixed_context must be None, 0 or 1, got {fixed_context!r}")
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float, np.integer, np.floating))
        or not 0 <= float(tolerance) < 1
    ):
        raise ValueError(
            f"tolerance must be a number in [0, 1) (a fraction of the largest word total; "
            f"0: spend the whole max_evals), got {tolerance!r}"
        )


def _checked(out: object, n: int, T: int | None) -> np.ndarray:
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == 1 and T in (None, 1) and arr.shape[0] == n:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n or (T is not None and arr.shape[1] != T):
        want = f"({n}, {T if T is not None else 'T'})"
        raise ValueError(
            f"the model returned an array of shape {tuple(np.shape(out))} for a batch of {n} "
            f"masked images; expected {want}: one row per image, one column per token"
        )
    if arr.shape[1] == 0:
        raise ValueError("the model returned 0 scores per image; it must score at least one token")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"the model returned a non-finite score ({arr[bad[0], bad[1]]!r} at row {bad[0]}, "
            f"column {bad[1]}); scores must be finite (use log-odds computed from log-softmax)"
        )
    return arr


def owen_values(
    tree: Tree,
    evaluate: Callable[[list[Coalition]], np.ndarray],
    *,
    max_evals: int = 300,
    batch_size: int = 50,
    fixed_context: int | None = None,
    seed: int | None = 0,
    progress: Callable[[int], None] | None = None,
    tolerance: float = 0.0,
) -> OwenResult:
    """Estimate Owen values of every tree node, best first, within ``max_evals``.

    Parameters
    ----------
    tree : Tree
        The region hierarchy.
    evaluate : function
        Takes a list of N coalitions (tuples of node ids kept visible) and returns an
        (N, T) float array. It is called with at most ``batch_size`` coalitions, plus the
        empty and the full coalition in the first call.
    max_evals : int
        Evaluation budget, counted as shap counts it (f(image) and f(all masked) included).
    batch_size : int
        Coalitions per call (node expansions add two each, as in shap).
    fixed_context : None, 0 or 1
        None: exact Owen values where the budget reaches; 0 / 1: one-sided variants that
        evaluate each split against the all-masked / all-visible context only.
    seed : int or None
        Seed of the private random stream that breaks priority ties.
    progress : function, optional
        Called with the number of new evaluations after each call.
    tolerance : float in [0, 1)
        Adaptive budget: stop expanding once the largest priority left is below this
        fraction of the largest word total ``max_t |f(image)_t - f(all masked)_t|``;
        ``max_evals`` stays the cap. 0 (default): spend the whole budget, as shap does.
    """
    check_params(max_evals, batch_size, fixed_context, tolerance)
    rng = np.random.default_rng(seed)
    M = tree.n_leaves
    root = tree.root
    children = tree.children
    budget = int(max_evals) - 2

    coalitions: list[Coalition] = []
    rows: dict[Coalition, int] = {}
    blocks: list[np.ndarray] = []
    n_rows = 0
    T: int | None = None
    n_calls = 0
    hits = 0

    def run(batch: Sequence[Coalition]) -> list[int]:
        """Evaluate the coalitions not seen before; return the row of each."""
        nonlocal n_rows, T, n_calls, hits
        new: list[Coalition] = []
        for c in batch:
            if c not in rows:
                rows[c] = n_rows + len(new)
                new.append(c)
            else:
                hits += 1
        if new:
            out = _checked(evaluate(list(new)), len(new), T)
            T = out.shape[1]
            blocks.append(out)
            coalitions.extend(new)
            n_rows += len(new)
            n_calls += 1
            if progress is not None:
                progress(len(new))
        return [rows[c] for c in batch]

    def scores() -> np.ndarray:
        if len(blocks) > 1:
            blocks[:] = [np.concatenate(blocks)]
        return blocks[0]

    dvalues: dict[int, np.ndarray] = {}

    def credit(ind: int, v: np.ndarray) -> None:
        if ind in dvalues:
            dvalues[ind] += v
        else:
            dvalues[ind] = v.copy()

    empty: Coalition = ()
    full: Coalition = (root,)
    counter = 0
    # queue items: (priority, tie-break, counter, (m00, row00, row11, node, weight))
    heap: list = [(0.0, 0.0, counter, (empty, 0, 1, root, 1.0))]

    def push(f_lo: np.ndarray, f_hi: np.ndarray, item: tuple) -> None:
        """Queue a node to split, largest weighted change first (shap's priority)."""
        nonlocal counter
        counter += 1
        heapq.heappush(heap, (-np.max(np.abs(f_hi - f_lo)) * item[4], rng.standard_normal(), counter, item))

    first = True
    eval_count = 0
    S = None
    line = 0.0  # the tolerance line, in score units; set after the first call
    line_set = tolerance == 0
    stopped = "complete"
    priority_left = 0.0

    def below_line() -> bool:
        return line > 0.0 and -heap[0][0] < line

    while heap:
        if eval_count >= budget or below_line():
            stopped = "budget" if eval_count >= budget else "tolerance"
            priority_left = float(-heap[0][0])
            S = scores()
            while heap:
                _, _, _, (m00, r00, r11, ind, weight) = heapq.heappop(heap)
                credit(ind, (S[r11] - S[r00]) * weight)
            break

        batch_args = []
        batch_masks: list[Coalition] = []
        while heap and len(batch_masks) < batch_size and eval_count + len(batch_masks) < budget:
            if below_line():
                break
            _, _, _, (m00, r00, r11, ind, weight) = heapq.heappop(heap)
            if ind < M:
                if first:  # a one-leaf tree: nothing to split
                    run([empty, full])
                    first = False
                S = scores()
                credit(ind, (S[r11] - S[r00]) * weight)
                continue
            lind = int(children[ind - M, 0])
            rind = int(children[ind - M, 1])
            m10 = m00 + (lind,)
            m01 = m00 + (rind,)
            batch_args.append((m00, r00, r11, ind, lind, rind, weight))
            batch_masks.append(m10)
            batch_masks.append(m01)

        if not batch_args:
            continue
        if first:
            out_rows = run([empty, full] + batch_masks)[2:]
            first = False
        else:
            out_rows = run(batch_masks)
        eval_count += len(batch_masks)
        S = scores()
        if not line_set:  # S[0] = f(all masked), S[1] = f(image): both in the first call
            line = float(tolerance) * float(np.max(np.abs(S[1] - S[0])))
            line_set = True

        for i, (m00, r00, r11, ind, lind, rind, weight) in enumerate(batch_args):
            r10 = out_rows[2 * i]
            r01 = out_rows[2 * i + 1]
            f00, f11, f10, f01 = S[r00], S[r11], S[r10], S[r01]
            m10 = m00 + (lind,)
            m01 = m00 + (rind,)

            new_weight = weight
            if fixed_context is None:
                new_weight /= 2
            elif fixed_context == 0:
                credit(ind, (f11 - f10 - f01 + f00) * weight)
            else:
                credit(ind, -((f11 - f10 - f01 + f00) * weight))

            if fixed_context is None or fixed_context == 0:
                push(f00, f10, (m00, r00, r10, lind, new_weight))
                push(f00, f01, (m00, r00, r01, rind, new_weight))
            if fixed_context is None or fixed_context == 1:
                push(f01, f11, (m01, r01, r11, lind, new_weight))
                push(f10, f11, (m10, r10, r11, rind, new_weight))

    S = scores()
    nodes = np.array(sorted(dvalues), dtype=np.int64)
    vals = np.array([dvalues[n] for n in nodes], dtype=np.float64).reshape(len(nodes), S.shape[1])
    if hits:
        logger.debug("owen: %d repeated coalitions answered from the cache", hits)
    if stopped == "tolerance":
        logger.debug("owen: stopped at %d evaluations, largest priority left %.3g < line %.3g",
                     eval_count + 2, priority_left, line)
    return OwenResult(
        nodes=nodes,
        node_values=vals,
        base_values=S[0].copy(),
        outputs=S[1].copy(),
        coalitions=coalitions,
        scores=S,
        n_calls=n_calls,
        budget_used=eval_count + 2,
        stopped=stopped,
        priority_left=priority_left,
    )


class _CallableModule(types.ModuleType):
    """``capshap.owen(...)``, the 0.2 name of :func:`owen_values`, keeps working for one
    release with a DeprecationWarning (the module is ``capshap.owen``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> OwenResult:
        warnings.warn("capshap.owen(...) is deprecated and goes in 0.4; use capshap.owen_values(...)",
                      DeprecationWarning, stacklevel=2)
        return owen_values(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "owen":  # from capshap.owen import owen (0.2)
        warnings.warn("capshap.owen.owen is deprecated and goes in 0.4; use capshap.owen_values",
                      DeprecationWarning, stacklevel=2)
        return owen_values
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _CallableModule
