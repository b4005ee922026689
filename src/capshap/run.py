"""The run: one per-image job, shared by the Python API, the CLI and the runners.

The path one image takes is written once, in :func:`explain_input`::

    caption (or the given caption) -> bind the scorer -> region tree -> masker -> Owen values
    -> Explanation (values, settings, provenance)

:func:`prepare` turns :class:`~capshap.settings.Settings` (plus any objects passed by hand)
into the parts a run needs, after validating every setting, so that a bad setting raises
``ValueError`` naming it before any image is loaded or captioned. :func:`run_serial` runs
the job over many inputs, turning one image's failure into an :class:`Outcome` with the
reason while the others go on. :func:`explain` is the public API on top of both, and the
CLI drives the same two functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from capshap import images as _images
from capshap.explanation import Explanation
from capshap.interfaces import Captioner, ImageLimits, MaskerLike, Scorer, as_captioner
from capshap.masking import Fill, Masker, render_shape
from capshap.owen import check_params, owen
from capshap.progress import Bars, wants_bars
from capshap.regions import TREES, TreeSpec, make_tree
from capshap.regions.user import TreeSource
from capshap.scoring import bind_scorer, build_scorer, scorer_options
from capshap.scoring.contrast import ContrastScorer
from capshap.settings import SettingError, Settings

logger = logging.getLogger(__name__)

__all__ = [
    "explain",
    "explain_image",
    "make_scorer",
    "make_tree",
    "prepare",
    "Parts",
    "ImageInput",
    "Outcome",
    "explain_input",
    "outcome_of",
    "run_serial",
    "run_images",
    "runner_options",
    "RUNNERS",
    "inputs_from",
    "within_limits",
    "limits_of",
]

RUNNERS = ("serial", "in_flight", "ray")
"""How :func:`run_images` runs: one image after another, several at once on this machine,
or sharded over a Ray cluster."""

_SETTING_NAMES = {f.name for f in fields(Settings)}


def make_scorer(scorer: Any, captioner: Captioner | None, caption: str) -> Scorer:
    """Bind a scorer to ``caption``: None or "own" is the captioner's own head (kept for
    0.1 callers; :func:`capshap.scoring.bind_scorer` is the general form)."""
    return bind_scorer("own" if scorer is None else scorer, captioner, caption)


# ----------------------------------------------------------------------------- inputs


@dataclass
class ImageInput:
    """One image to explain: its name, pixels (or why it could not be loaded) and origin.

    array: (H, W, 3) uint8 after fitting to ``max_side``, or None when ``error`` is set.
    original_size: (height, width) before fitting. source: the file path, where there is one.
    """

    name: str
    array: np.ndarray | None
    source: str | None = None
    original_size: tuple[int, int] | None = None
    error: Exception | None = None


def _is_path_list(images: Any) -> bool:
    return isinstance(images, (str, Path)) or (
        isinstance(images, (list, tuple)) and bool(images) and all(isinstance(p, (str, Path)) for p in images)
    )


def inputs_from(
    images: Any, settings: Settings, recursive: bool = False, limits: ImageLimits | None = None,
    who: str = "the captioner",
) -> Iterator[ImageInput]:
    """:class:`ImageInput` per image: from paths (files and folders, loaded lazily, one at a
    time), arrays (H, W, 3) or PIL images. A file that fails to load, or that ``limits``
    (the captioner's) refuse, becomes an input with ``error`` set, so the caller can report
    it and go on before any work is spent on it."""
    return within_limits(_inputs(images, settings, recursive), limits, who)


def within_limits(items: Iterable[ImageInput], limits: ImageLimits | None, who: str) -> Iterator[ImageInput]:
    """``items``, with those that ``limits`` refuse turned into error inputs naming ``who``."""
    for item in items:
        if limits is not None and item.array is not None:
            reason = limits.check(item.array.shape, who)
            if reason is not None:
                item = ImageInput(item.name, None, item.source, item.original_size, _images.ImageError(item.name, reason))
        yield item


def _inputs(images: Any, settings: Settings, recursive: bool) -> Iterator[ImageInput]:
    if _is_path_list(images):
        records = _images.iter_images(images, max_side=settings.max_side, recursive=recursive,
                                       max_pixels=settings.max_pixels)
        for rec in records:
            yield ImageInput(
                rec.name, rec.array, str(rec.path), rec.original_size, rec.error,
            )
        return
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    seq = images if isinstance(images, (list, tuple)) else [images]
    for i, im in enumerate(seq):
        name = f"image{i}"
        try:
            size = tuple(np.asarray(im).shape[:2]) if isinstance(im, np.ndarray) else None
            arr = _images.load_image(im, max_side=settings.max_side, name=name, max_pixels=settings.max_pixels)
            yield ImageInput(name, arr, None, size or arr.shape[:2])
        except _images.ImageError as e:
            yield ImageInput(name, None, None, None, e)


# ------------------------------------------------------------------------------ parts


@dataclass
class Parts:
    """What a run needs, built once from its settings.

    captioner: the captioner (None only when ``settings.caption`` is given and the scorer
    needs none). scorer: a factory with ``bind(caption)`` (or a bound Scorer). trees: a
    :class:`TreeSource` for a tree spec, or None when ``tree`` holds an object.
    tree: a :class:`Tree`, label map or mask list passed by hand. fill: the fill (a spec
    or a background image). masker: a masker object passed by hand (one image).
    """

    settings: Settings
    captioner: Captioner | None
    scorer: Any
    trees: TreeSource | None = None
    tree: Any = None
    fill: Fill = "inpaint_ns"
    masker: MaskerLike | None = None

    def tree_for(self, item: ImageInput, n_images: int) -> TreeSpec:
        """The tree spec of one image (a method name, a Tree, a label map or masks)."""
        if self.tree is not None:
            return self.tree
        assert self.trees is not None
        return self.trees.for_image(item.name, item.array, item.original_size, n_images=n_images)


def prepare(
    settings: Settings,
    *,
    captioner: Any = None,
    scorer: Any = None,
    tree: Any = None,
    mask: Any = None,
    masker: MaskerLike | None = None,
) -> Parts:
    """Validate ``settings`` and build the captioner, scorer and tree source of a run.

    Objects passed here take the place of the matching spec in ``settings`` (which then
    records ``None`` / ``"custom"`` / ``"image"``). Raises ValueError (a
    :class:`~capshap.registry.SpecError` for specs) naming the bad setting, before any
    image is touched; building a model can take a while, but captioning starts later.
    """
    changes: dict[str, Any] = {}
    if captioner is not None:
        changes["captioner"] = None
    if scorer is not None and not isinstance(scorer, str):
        changes["scorer"] = None
    elif isinstance(scorer, str):
        changes["scorer"] = scorer
    if tree is not None and not isinstance(tree, str):
        changes["tree"] = "custom"
    elif isinstance(tree, str):
        changes["tree"] = tree
    fill: Fill = settings.mask
    if mask is not None:
        if isinstance(mask, np.ndarray) and mask.ndim == 3:
            changes["mask"] = "image"
            fill = mask
        else:
            from capshap.masking import parse_fill

            parse_fill(mask)  # raises ValueError naming the option
            changes["mask"] = mask if isinstance(mask, str) else _fill_text(mask)
            fill = mask
    if masker is not None:
        if not isinstance(masker, MaskerLike):
            raise TypeError(f"masker must have image, tree and render(coalitions); got {type(masker).__name__}")
        changes["tree"] = "custom"
        changes["mask"] = "custom" if settings.mask != "image" else "image"
    settings = settings.replace(**changes) if changes else settings
    _validate(settings, skip_mask=masker is not None or isinstance(fill, np.ndarray))

    cap: Captioner | None
    if captioner is not None:
        cap = as_captioner(captioner)
    elif settings.captioner is not None:
        from capshap.captioners import build_captioner

        cap = build_captioner(
            settings.captioner, settings.captioner_options, device=settings.device, cache_dir=settings.cache_dir,
            batch_size=settings.batch_size_model, prompt=settings.prompt, generate=settings.generate,
        )
    else:
        cap = None
    if scorer is None or isinstance(scorer, str):
        if cap is None:
            raise ValueError("scorer specs need a captioner: pass captioner= or settings.captioner")
        opts = scorer_options(settings, cap)
        if settings.contrast is not None:  # whole-caption log-probabilities of both captions
            opts.update(score="logprob", merge_words=False)
        factory: Any = build_scorer(settings.scorer, cap, opts, device=settings.device)
        if settings.contrast is not None:
            from capshap.scoring.presence import PresenceScorer

            if isinstance(factory, PresenceScorer):  # what "auto" gives a captioner with no head
                raise SettingError("contrast", settings.contrast,
                                   "needs log-probabilities, and this captioner has no language head: "
                                   "use --scorer surrogate:LM")
            factory = ContrastScorer(factory, settings.contrast)
    else:
        factory = scorer if settings.contrast is None else ContrastScorer(scorer, settings.contrast)
    trees = TREES.create(settings.tree) if tree is None and masker is None else None
    return Parts(settings, cap, factory, trees, tree, fill, masker)


def limits_of(parts: Parts) -> tuple[ImageLimits | None, str]:
    """The captioner's input limits (None when the caption is given and nothing is captioned
    whole) and its name, for load-time checks."""
    cap = parts.captioner
    if cap is None:
        return None, "the captioner"
    return getattr(cap, "limits", None), getattr(cap, "name", type(cap).__name__)


def _fill_text(mask: Any) -> str:
    if isinstance(mask, (tuple, list)):
        return ",".join(str(v) for v in mask)
    return str(mask)


def _validate(settings: Settings, skip_mask: bool) -> None:
    s = settings.replace(mask="inpaint_ns") if skip_mask or settings.mask in ("image", "custom") else settings
    s = s.replace(tree="axis") if s.tree == "custom" else s
    s.validate()


# ------------------------------------------------------------------------ one image


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
    masker: MaskerLike | None = None,
    settings: Settings | None = None,
    render_size: tuple[int, int] | None = None,
    tolerance: float = 0.0,
) -> Explanation:
    """Explain the caption a bound ``scorer`` holds on one image.

    Parameters
    ----------
    image : (H, W, 3) uint8
    scorer : Scorer
        Bound to the caption to explain; ``score(images (N, H, W, 3)) -> (N, T)``.
    mask, max_evals, batch_size, fixed_context, tree, channels, n_segments, seed
        As in :class:`~capshap.settings.Settings`; ``tree`` may also be a :class:`Tree`,
        an (H, W) label map or a list of masks.
    masker : optional
        Your own masker (``image``, ``tree``, ``render(coalitions)``); then ``mask`` and
        ``tree`` are ignored and the masker's tree is used.
    settings : Settings, optional
        Stored in the explanation (the API and CLI pass the run's settings).
    render_size : (h, w), optional
        Render masked images at this size (the captioner's input size) instead of the
        image's; the tree and the values stay at full size. None: full size (shap parity).
    tolerance : float
        Adaptive budget (see :func:`capshap.owen.owen`); ``max_evals`` is then the cap.

    Returns
    -------
    Explanation
        values (H, W, T) float32, or (H, W, 3, T) with ``channels=True`` on the axis tree.
    """
    check_params(max_evals, batch_size, fixed_context, tolerance)
    image = _images.to_rgb_uint8(image)
    t0 = time.perf_counter()
    if masker is not None:
        region_tree = masker.tree
        if tuple(region_tree.shape[:2]) != image.shape[:2]:
            raise ValueError(f"the masker's tree covers {region_tree.shape[:2]} pixels but the image is {image.shape[:2]}")
    else:
        region_tree = make_tree(tree, image, channels=channels, n_segments=n_segments)
        masker = Masker(image, region_tree, mask, threads=threads, render_size=render_size)
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
        tolerance=tolerance,
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
    fill_name = getattr(masker, "fill", mask)
    params = {
        "max_evals": int(max_evals),
        "batch_size": int(batch_size),
        "fixed_context": fixed_context,
        "tolerance": float(tolerance),
        "mask": "background image" if isinstance(fill_name, np.ndarray) else (
            fill_name if isinstance(fill_name, (str, int, float)) else _fill_text(fill_name)),
        "tree": region_tree.kind,
        "channels": bool(region_tree.channels),
        "n_segments": int(n_segments) if region_tree.kind != "axis" else None,
        "seed": seed,
        "scorer": type(scorer).__name__,
        "render_size": list(masker.render_size) if getattr(masker, "render_size", None) else None,
    }
    if settings is None:
        settings = Settings(
            captioner=None, scorer=None,
            mask="image" if isinstance(fill_name, np.ndarray) else (
                fill_name if isinstance(fill_name, str) else _fill_text(fill_name)),
            max_evals=int(max_evals), batch_size=int(batch_size), fixed_context=fixed_context, seed=seed,
            tolerance=float(tolerance), tree=tree if isinstance(tree, str) else "custom", n_segments=int(n_segments), channels=bool(channels),
        )
    return Explanation(
        values=values,
        base_values=res.base_values,
        outputs=res.outputs,
        tokens=list(scorer.tokens),
        caption=scorer.caption,
        image=image,
        params=params,
        settings=settings,
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
        info={"n_calls": res.n_calls, "budget_used": res.budget_used, "n_evals": res.n_evals, "stopped": res.stopped},
    )


@dataclass
class Outcome:
    """What happened to one input: its explanation, or the stage that failed and why."""

    name: str
    source: str | None = None
    explanation: Explanation | None = None
    error: str | None = None
    stage: str = ""
    caption: str = ""
    seconds: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class ImageFailure(Exception):
    """One image failed at one stage; ``stage`` says which (captioning, scoring, ...)."""

    def __init__(self, stage: str, error: BaseException):
        self.stage, self.error = stage, error
        super().__init__(f"{stage} failed: {_reason(error)}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 400 else first[:397] + "..."


def explain_input(
    item: ImageInput,
    parts: Parts,
    *,
    n_images: int = 2,
    bars: Bars | None = None,
) -> Explanation:
    """The per-image job: caption, bind the scorer, build the tree and masker, explain.

    Raises :class:`ImageFailure` naming the stage that failed.
    """
    s = parts.settings
    assert item.array is not None
    stage = "captioning"
    try:
        t0 = time.perf_counter()
        if s.caption is not None:
            caption = s.caption
        else:
            if parts.captioner is None:
                raise ValueError("no captioner to write the caption; pass captioner= or caption=")
            caption = parts.captioner.caption([item.array])[0]
        t_cap = time.perf_counter() - t0
        if bars is not None:
            bars.status(caption)
        stage = "scoring"
        bound = bind_scorer(parts.scorer, parts.captioner, caption)
        stage = "building the region tree"
        tree = parts.tree_for(item, n_images) if parts.masker is None else None
        stage = "explaining"
        exp = explain_image(
            item.array, bound, mask=parts.fill, max_evals=s.max_evals, batch_size=s.batch_size,
            fixed_context=s.fixed_context, tree=tree if tree is not None else "axis", channels=s.channels,
            n_segments=s.n_segments, seed=s.seed, name=item.name, masker=parts.masker, settings=s,
            progress=bars.advance if bars is not None else None,
            render_size=render_shape(item.array.shape, s.render_size, parts.captioner),
            tolerance=s.tolerance,
        )
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise ImageFailure(stage, e) from e
    exp.timings["caption"] = t_cap
    cap = parts.captioner
    exp.params.update(
        captioner=getattr(cap, "name", type(cap).__name__) if cap is not None else None,
        captioner_spec=s.captioner,
        generate_kwargs=s.generate,
        prompt=s.prompt,
        scorer_spec=s.scorer,
        tree_spec=s.tree,
        device=s.device,
        max_side=s.max_side,
        original_size=list(item.original_size) if item.original_size else None,
        source=item.source,
    )
    return exp


def outcome_of(item: ImageInput, parts: Parts, *, n_images: int = 2, bars: Any = None) -> Outcome:
    """The per-image job as an :class:`Outcome`: the explanation, or the failed stage and why."""
    t0 = time.perf_counter()
    try:
        exp = explain_input(item, parts, n_images=n_images, bars=bars)
    except ImageFailure as f:
        return Outcome(item.name, item.source, error=str(f), stage=f.stage, seconds=time.perf_counter() - t0,
                       exception=f.error)
    return Outcome(item.name, item.source, exp, caption=exp.caption, seconds=time.perf_counter() - t0)


def run_serial(
    items: Iterable[ImageInput],
    parts: Parts,
    *,
    n_images: int | None = None,
    bars: Bars | None = None,
) -> Iterator[Outcome]:
    """Explain ``items`` one after another, yielding an :class:`Outcome` per input.

    An input that failed to load, or whose caption, scoring or explanation fails, gives an
    Outcome with ``error`` set; the run goes on. KeyboardInterrupt stops it.
    """
    n = n_images if n_images is not None else 2
    for i, item in enumerate(items):
        if item.error is not None or item.array is None:
            reason = getattr(item.error, "reason", None) or _reason(item.error or ValueError("not loaded"))
            yield Outcome(item.name, item.source, error=reason, stage="loading", exception=item.error)
            if bars is not None:
                bars.image_done()
            continue
        if bars is not None:
            total = n_images if n_images is not None else "?"
            bars.start_image(f"[{i + 1}/{total}] {item.name}", parts.settings.max_evals)
            bars.status("captioning")
        try:
            yield outcome_of(item, parts, n_images=n, bars=bars)
        finally:
            if bars is not None:
                bars.image_done()


def run_images(
    items: Iterable[ImageInput],
    parts: Parts,
    *,
    n_images: int | None = None,
    bars: Bars | None = None,
    runner: str = "serial",
    in_flight: int | None = None,
    ray_address: str | None = None,
    gpus_per_worker: float = 0,
    workers: int | None = None,
) -> Iterator[Outcome]:
    """Explain ``items`` with the chosen runner; yields an :class:`Outcome` per input.

    runner: ``"serial"`` (:func:`run_serial`, in input order), ``"in_flight"`` (up to
    ``in_flight`` images at once on this machine, :mod:`capshap.flight`) or ``"ray"``
    (sharded over ``workers`` Ray actors at ``ray_address``, each running the in-flight
    runner, :mod:`capshap.ray`). The two parallel runners yield in completion order; match
    Outcomes to inputs by ``name`` / ``source``. Values equal a serial run's.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}; got {runner!r}")
    if in_flight is not None and (isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1):
        raise ValueError(f"in_flight must be an integer >= 1, got {in_flight!r}")
    if runner == "serial":
        return run_serial(items, parts, n_images=n_images, bars=bars)
    if runner == "in_flight":
        from capshap.flight import run_in_flight

        return run_in_flight(items, parts, in_flight=in_flight, n_images=n_images, bars=bars)
    from capshap.ray import run_ray

    return run_ray(items, parts, address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                   in_flight=in_flight, n_images=n_images, bars=bars)


def runner_options(
    n_images: int | None,
    *,
    in_flight: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    device: str | None = None,
    captioner: Any = None,
) -> dict[str, Any]:
    """The :func:`run_images` keywords for the command line's ``--in-flight N``, ``--ray
    [ADDRESS]``, ``--workers`` and ``--gpus-per-worker``: Ray when asked; else in flight when
    more than one image is run (``in_flight`` default from the device, 1 means serial)."""
    if ray is not None:
        return {"runner": "ray", "ray_address": ray, "workers": workers, "gpus_per_worker": gpus_per_worker,
                "in_flight": in_flight}
    from capshap.flight import default_in_flight

    k = in_flight if in_flight is not None else default_in_flight(device, captioner)
    if k <= 1 or (n_images is not None and n_images <= 1):
        return {"runner": "serial"}
    return {"runner": "in_flight", "in_flight": k}


# -------------------------------------------------------------------------------- API


def explain(
    images: Any,
    captioner: Any = None,
    scorer: Any = None,
    *,
    settings: Settings | None = None,
    tree: Any = None,
    mask: Any = None,
    masker: MaskerLike | None = None,
    progress: bool | None = None,
    on_error: str = "skip",
    recursive: bool = False,
    runner: str = "serial",
    in_flight: int | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    **options: Any,
) -> list[Explanation]:
    """Caption and explain images; the defaults are the SHAP notebook's.

    Parameters
    ----------
    images
        A path (file or folder), a list of paths, arrays (H, W, 3) or PIL images.
    captioner
        A :class:`~capshap.interfaces.Captioner`, a function image -> str, or None for
        ``settings.captioner`` (default: the embedded offline EfficientNet-Lite0
        "a photo of a {label}").
    scorer
        A spec (``"auto"``, ``"own"``, ``"presence"``, ``"surrogate:LM"``), a factory with
        ``bind(caption)``, or a bound :class:`~capshap.interfaces.Scorer`. None: ``auto``,
        the captioner's own head where it has one, else word presence.
    settings
        A :class:`~capshap.settings.Settings`; keyword ``options`` (``max_evals=100``,
        ``mask="blur(16,16)"``, ``fixed_context=0``, ``caption="a dog"``, ...) override it.
    tree, mask, masker
        Objects instead of specs: a :class:`~capshap.regions.tree.Tree`, label map or mask
        list; a background image (H, W, 3); your own masker (one image).
    progress
        Progress bars: True, False, or None (only when a person is watching: a terminal or
        a notebook).
    on_error
        "skip" (default) logs an image that cannot be loaded, captioned or scored with its
        name and the reason and goes on with the others; "raise" stops at it.
    runner, in_flight, ray_address, workers
        ``"serial"`` (default), ``"in_flight"`` (``in_flight`` images at once on this
        machine) or ``"ray"`` (``workers`` Ray actors at ``ray_address``; None starts a local
        Ray). See :func:`run_images`; the values are the same, the list keeps input order.

    Returns
    -------
    list[Explanation]
        One per image explained, in order (``exp.name`` says which).

    Raises
    ------
    ValueError
        A bad setting (naming it), before any image is loaded or captioned.

    Examples
    --------
    >>> exps = capshap.explain("examples/", max_evals=100)            # doctest: +SKIP
    >>> exps = capshap.explain(img, captioner=lambda im: "a cat")     # doctest: +SKIP
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}; got {runner!r}")
    unknown = sorted(set(options) - _SETTING_NAMES)
    if unknown:
        raise TypeError(f"explain() got unknown settings {', '.join(unknown)}; see capshap.Settings")
    base = settings or Settings()
    s = base.replace(**options) if options else base
    if captioner is None and s.captioner is None and s.caption is None:
        raise ValueError("captioner=None and settings.captioner=None: name a captioner or give caption=")
    parts = prepare(s, captioner=captioner, scorer=scorer, tree=tree, mask=mask, masker=masker)
    limits, who = limits_of(parts)
    source: Iterable[ImageInput] = inputs_from(images, parts.settings, recursive, limits, who)
    if _is_path_list(images):  # files load lazily, one at a time; count them without loading
        n = len(_images.image_names(images, recursive))
    else:
        source = list(source)
        n = len(source)
    bars = Bars(n, wants_bars(progress))
    out: list[tuple[int, Explanation]] = []
    position: dict[str, int] = {}

    def tagged() -> Iterator[ImageInput]:
        for i, item in enumerate(source):
            position[f"{item.source}\0{item.name}"] = i
            yield item

    try:
        for res in run_images(tagged(), parts, n_images=n, bars=bars, runner=runner, in_flight=in_flight,
                              ray_address=ray_address, workers=workers):
            if res.ok:
                assert res.explanation is not None
                out.append((position.get(f"{res.source}\0{res.name}", len(position)), res.explanation))
                continue
            if on_error == "raise":
                raise res.exception if res.exception is not None else ValueError(f"{res.name}: {res.error}")
            logger.error("skipped %s: %s", res.name, res.error)
    finally:
        bars.close()
    return [exp for _, exp in sorted(out, key=lambda t: t[0])]
