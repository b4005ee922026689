"""The path one image takes: caption -> bound scorer -> tree -> masker -> Owen values."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capshap import images as _images
from capshap.explanation import Explanation
from capshap.masking import Fill, Masker
from capshap.interfaces import Captioner, Scorer, as_captioner
from capshap.regions import TreeSpec, make_tree
from capshap.scoring import bind_scorer
from capshap.owen import check_params, owen

logger = logging.getLogger(__name__)

__all__ = ["explain", "explain_image", "make_tree", "make_scorer"]


def make_scorer(scorer: Any, captioner: Captioner | None, caption: str) -> Scorer:
    """Bind a scorer to ``caption``: None or "own" is the captioner's own head (kept for
    0.1 callers; :func:`capshap.scoring.bind_scorer` is the general form)."""
    return bind_scorer("own" if scorer is None else scorer, captioner, caption)


def explain_image(
    image: np.ndarray,
    scorer: Scorer,
    *,
    mask: Fill = "inpaint_ns",
    max_evals: int = 300,
    batch_size: int = 50,
    fixed_context: int | None = None,
    tree: TreeSpec = "axis",
    channels: bool = False,
    n_segments: int = 64,
    seed: int | None = 0,
    name: str = "image",
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> Explanation:
    """Explain the caption a bound ``scorer`` holds on one image.

    image: (H, W, 3) uint8. Returns an :class:`Explanation` with values (H, W, T) float32
    (or (H, W, 3, T) with ``channels=True`` on the axis tree).
    """
    check_params(max_evals, batch_size, fixed_context)
    image = _images.to_rgb_uint8(image)
    t0 = time.perf_counter()
    region_tree = make_tree(tree, image, channels=channels, n_segments=n_segments)
    masker = Masker(image, region_tree, mask, threads=threads)
    t_tree = time.perf_counter() - t0
    captions: list[str] = []
    made_captions = [False]
    timing = {"mask": 0.0, "model": 0.0}

    def evaluate(coalitions: list[tuple[int, ...]]) -> np.ndarray:
        a = time.perf_counter()
        batch = masker.render(coalitions)
        b = time.perf_counter()
        scores, caps = scorer.score_with_captions(batch)
        c = time.perf_counter()
        timing["mask"] += b - a
        timing["model"] += c - b
        if caps is not None:
            made_captions[0] = True
            captions.extend(caps)
        else:
            captions.extend([""] * len(coalitions))
        return scores

    t1 = time.perf_counter()
    res = owen(
        region_tree,
        evaluate,
        max_evals=max_evals,
        batch_size=batch_size,
        fixed_context=fixed_context,
        seed=seed,
        progress=progress,
    )
    t_owen = time.perf_counter() - t1
    T = res.node_values.shape[1] if res.node_values.size else len(scorer.tokens)
    if T != len(scorer.tokens):
        raise ValueError(
            f"the scorer returned {T} scores per image but its caption has {len(scorer.tokens)} tokens "
            f"({scorer.tokens!r}); a scorer must return one column per token"
        )
    values = region_tree.lower_nodes(res.nodes, res.node_values.reshape(len(res.nodes), T)).astype(np.float32)
    total = time.perf_counter() - t0
    params = {
        "max_evals": int(max_evals),
        "batch_size": int(batch_size),
        "fixed_context": fixed_context,
        "mask": mask if not isinstance(mask, np.ndarray) else "background image",
        "tree": region_tree.kind,
        "channels": bool(region_tree.channels),
        "n_segments": int(n_segments) if region_tree.kind != "axis" else None,
        "seed": seed,
        "scorer": type(scorer).__name__,
    }
    return Explanation(
        values=values,
        base_values=res.base_values,
        outputs=res.outputs,
        tokens=list(scorer.tokens),
        caption=scorer.caption,
        image=image,
        params=params,
        nodes=res.nodes,
        node_values=res.node_values,
        coalitions=res.coalitions,
        scores=res.scores,
        captions=captions if made_captions[0] else None,
        tree=region_tree,
        name=name,
        timings={
            "tree": t_tree,
            "owen": t_owen,
            "mask": timing["mask"],
            "model": timing["model"],
            "engine": t_owen - timing["mask"] - timing["model"],
            "total": total,
        },
        info={"n_calls": res.n_calls, "budget_used": res.budget_used, "n_evals": res.n_evals},
    )


def explain(
    images: Any,
    captioner: Any = None,
    scorer: Any = None,
    *,
    mask: Fill = "inpaint_ns",
    max_evals: int = 300,
    batch_size: int = 50,
    fixed_context: int | None = None,
    tree: TreeSpec = "axis",
    max_side: int | None = 500,
    seed: int | None = 0,
    channels: bool = False,
    n_segments: int = 64,
    progress: Callable[[int], None] | None = None,
    on_error: str = "skip",
) -> list[Explanation]:
    """Caption and explain images; the defaults are the SHAP notebook's.

    images: a path (file or folder), a list of paths, arrays (H, W, 3) or PIL images.
    captioner: a Captioner or a function image -> str; None gives the embedded offline
    default (EfficientNet-Lite0 "a photo of a {label}"). scorer: see :func:`make_scorer`.
    on_error: "skip" (default) logs an image that cannot be loaded, captioned or scored
    with its name and the reason and goes on with the others; "raise" stops at it.
    Returns one :class:`Explanation` per image explained, in order (``exp.name`` says
    which); bad parameters always raise.
    """
    check_params(max_evals, batch_size, fixed_context)
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    cap = _default_captioner() if captioner is None else as_captioner(captioner)
    out = []
    for name, img in _iter_inputs(images, max_side):
        if isinstance(img, Exception):
            if on_error == "raise":
                raise img
            logger.error("skipped %s: %s", name, img)
            continue
        try:
            exp = _explain_one(
                name, img, cap, scorer, mask=mask, max_evals=max_evals, batch_size=batch_size,
                fixed_context=fixed_context, tree=tree, channels=channels, n_segments=n_segments,
                seed=seed, progress=progress,
            )
        except Exception as e:  # one image's failure must not lose the others
            if on_error == "raise":
                raise
            logger.error("skipped %s: %s: %s", name, type(e).__name__, e)
            continue
        out.append(exp)
    return out


def _explain_one(name: str, img: np.ndarray, cap: Captioner, scorer: Any, **kw: Any) -> Explanation:
    t0 = time.perf_counter()
    caption = cap.caption([img])[0]
    t_cap = time.perf_counter() - t0
    bound = make_scorer(scorer, cap, caption)
    exp = explain_image(img, bound, name=name, **kw)
    exp.timings["caption"] = t_cap
    exp.params["captioner"] = getattr(cap, "name", type(cap).__name__)
    return exp


def _default_captioner() -> Captioner:
    from capshap.captioners.builtin import BuiltinCaptioner

    return BuiltinCaptioner()


def _iter_inputs(images: Any, max_side: int | None) -> Iterable[tuple[str, Any]]:
    """(name, array) per input; for files that fail to load, (name, the ImageError)."""
    if isinstance(images, (str, Path)) or (
        isinstance(images, (list, tuple)) and images and all(isinstance(p, (str, Path)) for p in images)
    ):
        for rec in _images.iter_images(images, max_side=max_side):
            yield rec.name, (rec.error if rec.error is not None else rec.array)
        return
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    for i, im in enumerate(images if isinstance(images, (list, tuple)) else [images]):
        try:
            yield f"image{i}", _images.load_image(im, max_side=max_side, name=f"image{i}")
        except _images.ImageError as e:
            yield f"image{i}", e
