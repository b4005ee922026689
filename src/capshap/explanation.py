"""The result of explaining one caption: per-pixel, per-token Owen values and their context."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .partition import Tree

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
        The parameters (max_evals, batch_size, fixed_context, mask, tree, seed, ...).
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
    """

    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    tokens: list[str]
    caption: str
    image: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    coalitions: list[tuple[int, ...]] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    captions: list[str] | None = None
    tree: Tree | None = None
    name: str = "image"
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

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
        return stem.with_suffix(".npz"), stem.with_suffix(".json")

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``PATH.npz`` (arrays) and ``PATH.json`` (everything else); no pickle.

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
        if self.tree is not None:
            arrays.update(self.tree.to_arrays())
        tmp = npz.with_name(npz.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, npz)
        meta = {
            "format": "capshap.explanation",
            "version": FORMAT_VERSION,
            "name": self.name,
            "caption": self.caption,
            "tokens": list(self.tokens),
            "base_values": [float(v) for v in self.base_values],
            "outputs": [float(v) for v in self.outputs],
            "params": _jsonable(self.params),
            "captions": self.captions,
            "timings": _jsonable(self.timings),
            "info": _jsonable(self.info),
            "tree": None if self.tree is None else {"kind": self.tree.kind, "params": _jsonable(self.tree.params)},
        }
        tmpj = js.with_name(js.name + ".tmp")
        tmpj.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmpj, js)
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Explanation":
        """Read an explanation written by :meth:`save` (give either file, or the stem)."""
        npz, js = cls._paths(path)
        for p in (npz, js):
            if not p.exists():
                raise FileNotFoundError(f"{p}: no such file; an explanation is saved as NAME.npz + NAME.json")
        meta = json.loads(js.read_text(encoding="utf-8"))
        if meta.get("format") != "capshap.explanation":
            raise ValueError(f"{js}: not a capshap explanation (format={meta.get('format')!r})")
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        ends = np.cumsum(arrays["coalition_lengths"])
        starts = ends - arrays["coalition_lengths"]
        flat = arrays["coalition_nodes"]
        coalitions = [tuple(int(n) for n in flat[s:e]) for s, e in zip(starts, ends)]
        tree = None
        if meta.get("tree") is not None and "tree_linkage" in arrays:
            tree = Tree.from_arrays(arrays, kind=meta["tree"]["kind"], params=meta["tree"].get("params"))
        return cls(
            values=arrays["values"],
            base_values=arrays["base_values"],
            outputs=arrays["outputs"],
            tokens=list(meta["tokens"]),
            caption=meta["caption"],
            image=arrays["image"],
            params=meta.get("params", {}),
            nodes=arrays["nodes"],
            node_values=arrays["node_values"],
            coalitions=coalitions,
            scores=arrays["scores"],
            captions=meta.get("captions"),
            tree=tree,
            name=meta.get("name", npz.stem),
            timings=meta.get("timings", {}),
            info=meta.get("info", {}),
        )

    # -- shap interop -------------------------------------------------------------------
    def to_shap(self) -> Any:
        """A ``shap.Explanation`` (needs shap), so that ``shap.image_plot`` works on it.

        Values are given per channel, (1, H, W, 3, T); in pixel mode each pixel's value is
        split evenly over its three channels, so sums are kept.
        """
        try:
            import shap
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_shap() needs shap: pip install shap") from e
        v = self.values.astype(np.float64)
        if v.ndim == 3:
            v = np.repeat(v[:, :, None, :] / 3.0, 3, axis=2)
        return shap.Explanation(
            values=v[None],
            base_values=np.asarray(self.base_values)[None],
            data=self.image[None].astype(np.float64),
            output_names=list(self.tokens),
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
