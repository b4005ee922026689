"""One image's job, written once: caption -> bind the scorer -> tree -> masker -> Owen values.

Every runner (serial, in flight, Ray, or one you register) calls :func:`outcome_of` per
image; nothing here knows how images are dispatched. The pieces, in the order a run uses
them:

* :class:`Plan` -- what a run is asked to do: its :class:`~capshap.settings.Settings` plus
  any objects passed by hand (a captioner, a scorer, a tree, a background image, a masker),
  validated by :meth:`Plan.of` before any model is built or any image is loaded. A plan is
  what a distributed runner ships to its workers.
* :class:`Parts` -- the plan built once (:meth:`Plan.build`): the captioner, the scorer
  factory, the tree source. Building can take a while (models load); it checks a given
  ``caption`` against the scorer, so a caption the scorer cannot score fails here, before
  any image is captioned.
* :class:`ImageInput` -> :func:`outcome_of` -> :class:`Outcome` -- one image in, its
  explanation (or the stage that failed and why) out. A :class:`Route` lets a runner send
  the model calls elsewhere (the in-flight runner's one model thread) without the job
  knowing.
* :func:`explain_array` -- the engine part of the job on one array (tree, masker, Owen),
  taking the settings, not loose keywords.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capshap import images as _images
from capshap.explanation import Explanation
from capshap.grounding import Thresholds
from capshap.interfaces import Captioner, MaskerLike, Scorer, as_captioner
from capshap.masking import Fill, Masker, render_shape
from capshap.owen import owen_values
from capshap.regions import TreeSpec, make_tree
from capshap.regions.user import TreeSource
from capshap.scoring import bind_scorer, build_scorer, scorer_options
from capshap.settings import SettingError, Settings

logger = logging.getLogger(__name__)

__all__ = [
    "ImageInput",
    "Outcome",
    "ImageFailure",
    "Plan",
    "Parts",
    "Prepared",
    "Route",
    "DIRECT",
    "MAX_TOKENS",
    "explain_array",
    "explain_input",
    "outcome_of",
    "inputs_from",
    "is_path_list",
    "reason_of",
    "params_of",
]

#: Most scored tokens a caption may have; longer ones fail that image with a clear error
#: (a server that returns a 100k-character caption must not stall the run).
MAX_TOKENS = 512
#: Longest caption (characters) handed to a scorer at all.
MAX_CAPTION_CHARS = 16 * MAX_TOKENS


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


def is_path_list(images: Any) -> bool:
    """True for a path or a non-empty list of paths (files load lazily, one at a time)."""
    return isinstance(images, (str, Path)) or (
        isinstance(images, (list, tuple)) and bool(images) and all(isinstance(p, (str, Path)) for p in images)
    )


def inputs_from(images: Any, settings: Settings, recursive: bool = False) -> Iterator[ImageInput]:
    """:class:`ImageInput` per image: from paths (files and folders, loaded lazily, one at a
    time), arrays (H, W, 3) or PIL images. A file that fails to load becomes an input with
    ``error`` set, so the runner reports it and goes on."""
    if is_path_list(images):
        for rec in _images.iter_images(images, max_side=settings.max_side, recursive=recursive,
                                       max_pixels=settings.max_pixels):
            yield ImageInput(rec.name, rec.array, str(rec.path), rec.original_size, rec.error)
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


# ------------------------------------------------------------------------ the plan


def _fill_text(mask: Any) -> str:
    if isinstance(mask, (tuple, list)):
        return ",".join(str(v) for v in mask)
    return str(mask)


@dataclass(frozen=True)
class Plan:
    """A run's settings and the objects passed by hand, validated; nothing built yet.

    settings: the run's :class:`Settings` as recorded (an object passed by hand shows as
    ``None`` / ``"custom"`` / ``"image"`` in its spec). captioner, scorer, tree, masker: the
    objects passed by hand, or None. fill: the fill spec, or a background image (H, W, 3).
    """

    settings: Settings
    captioner: Captioner | None = None
    scorer: Any = None
    tree: Any = None
    fill: Fill = "inpaint_ns"
    masker: MaskerLike | None = None

    @classmethod
    def of(
        cls,
        settings: Settings,
        *,
        captioner: Any = None,
        scorer: Any = None,
        tree: Any = None,
        mask: Any = None,
        masker: MaskerLike | None = None,
    ) -> "Plan":
        """Validate ``settings`` with the objects that replace its specs.

        Raises ValueError (a :class:`SettingError` or a registry ``SpecError``) naming the
        bad setting, before any model is built or any image is loaded.
        """
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a capshap.Settings, got {type(settings).__name__}")
        changes: dict[str, Any] = {}
        if captioner is not None:
            changes["captioner"] = None
        if scorer is not None:
            changes["scorer"] = scorer if isinstance(scorer, str) else None
        if tree is not None:
            changes["tree"] = tree if isinstance(tree, str) else "custom"
        fill: Fill = settings.mask
        if mask is not None:
            if isinstance(mask, np.ndarray) and mask.ndim == 3:
                changes["mask"], fill = "image", mask
            else:
                from capshap.masking import parse_fill

                parse_fill(mask)  # raises ValueError naming the option
                changes["mask"] = mask if isinstance(mask, str) else _fill_text(mask)
                fill = mask
        if masker is not None:
            if not isinstance(masker, MaskerLike):
                raise TypeError(f"masker must have image, tree and render(coalitions); got {type(masker).__name__}")
            changes["tree"] = "custom"
            changes["mask"] = "image" if settings.mask == "image" else "custom"
        s = settings.replace(**changes) if changes else settings
        checked = s
        if masker is not None or isinstance(fill, np.ndarray) or s.mask in ("image", "custom"):
            checked = checked.replace(mask="inpaint_ns")
        if checked.tree == "custom":
            checked = checked.replace(tree="axis")
        checked.validate()
        if s.captioner is None and captioner is None and s.caption is None:
            raise SettingError("captioner", None, "no captioner and no caption: name a captioner or give caption=")
        if (scorer is None or isinstance(scorer, str)) and s.captioner is None and captioner is None:
            raise SettingError("scorer", s.scorer, "scorer specs need a captioner: pass captioner= or settings.captioner")
        return cls(s, as_captioner(captioner) if captioner is not None else None,
                   scorer if not isinstance(scorer, str) else None, tree if not isinstance(tree, str) else None,
                   fill if mask is not None else s.mask, masker)

    def tree_source(self) -> TreeSource | None:
        """The tree source of a tree spec (cheap: no image is read), or None for objects."""
        if self.tree is not None or self.masker is not None:
            return None
        from capshap.regions import TREES

        return TREES.create(self.settings.tree)

    def check_inputs(self, names: Sequence[str]) -> None:
        """Check that a user tree (labels:FOLDER, masks:FOLDER) has an entry per input name."""
        trees = self.tree_source()
        if trees is not None and trees.is_user:
            trees.check_names(list(names))

    def build(self) -> "Parts":
        """Build the captioner, scorer factory and tree source once.

        A given ``settings.caption`` is bound to the scorer here (no image needed), so a
        caption the scorer cannot score -- the builtin captioner's head scores only its own
        template -- fails now, naming the setting.
        """
        s = self.settings
        cap: Captioner | None = self.captioner
        if cap is None and s.captioner is not None:
            from capshap.captioners import build_captioner

            cap = build_captioner(
                s.captioner, dict(s.captioner_options), device=s.device, cache_dir=s.cache_dir,
                batch_size=s.batch_size_model, prompt=s.prompt,
                generate=dict(s.generate) if s.generate is not None else None,
            )
        factory = self._scorer_factory(cap)
        parts = Parts(s, cap, factory, self.tree_source(), self.tree, self.fill, self.masker)
        if s.caption is not None:
            try:
                bind_scorer(factory, cap, s.caption)
            except (ValueError, TypeError) as e:
                raise SettingError("caption", s.caption, f"the scorer cannot score it: {reason_of(e)}") from None
        return parts

    def _scorer_factory(self, cap: Captioner | None) -> Any:
        from capshap.scoring.contrast import ContrastScorer

        s = self.settings
        if self.scorer is not None:
            return self.scorer if s.contrast is None else ContrastScorer(self.scorer, s.contrast)
        if cap is None:
            raise SettingError("scorer", s.scorer, "scorer specs need a captioner: pass captioner= or settings.captioner")
        opts = scorer_options(s, cap)
        if s.contrast is not None:  # whole-caption log-probabilities of both captions
            opts.update(score="logprob", merge_words=False)
        factory: Any = build_scorer(s.scorer, cap, opts, device=s.device)
        if s.contrast is None:
            return factory
        from capshap.scoring.presence import PresenceFactory

        if isinstance(factory, PresenceFactory):  # what "auto" gives a captioner with no head
            raise SettingError("contrast", s.contrast, "needs log-probabilities, and this captioner has no language "
                               "head: use --scorer surrogate:LM")
        return ContrastScorer(factory, s.contrast)


@dataclass
class Parts:
    """A :class:`Plan`, built: what the per-image job needs.

    captioner: the captioner (None only when ``settings.caption`` is given and the scorer
    needs none). scorer: a factory with ``bind(caption)`` (or a bound Scorer). trees: a
    :class:`TreeSource` for a tree spec, or None when ``tree`` holds an object. tree: a
    :class:`Tree`, label map or mask list passed by hand. fill: the fill (a spec or a
    background image). masker: a masker object passed by hand (one image).
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
        if self.trees is None:
            raise ValueError("no tree: give a tree spec or a tree object")
        return self.trees.for_image(item.name, item.array, item.original_size, n_images=n_images)


class Prepared:
    """The prepared run a runner is handed: the validated :class:`Plan`, and its
    :class:`Parts` built on first use and then kept (so a runner that delegates to another
    builds nothing twice, and a runner that builds on its workers -- Ray -- builds nothing
    here)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self._parts: Parts | None = None

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            self._parts = self.plan.build()
        return self._parts


# ------------------------------------------------------------------------ routes


class Route:
    """Where the job's model calls go. The default calls the model directly; the in-flight
    runner's route sends them to its one model thread. Override both methods."""

    def caption(self, captioner: Captioner, images: list[np.ndarray]) -> list[str]:
        """Caption ``images`` with ``captioner``."""
        return captioner.caption(images)

    def scorer(self, bound: Scorer) -> Scorer:
        """The bound scorer whose ``score_with_captions`` the engine will call."""
        return bound


DIRECT = Route()


# ------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What happened to one input: its explanation, or the stage that failed and why.

    notes: things the user should know about a good result (e.g. a word that never
    appears in the masked images' captions, so its values are all zero).
    """

    name: str
    source: str | None = None
    explanation: Explanation | None = None
    error: str | None = None
    stage: str = ""
    caption: str = ""
    seconds: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class ImageFailure(Exception):
    """One image failed at one stage; ``stage`` says which (captioning, scoring, ...)."""

    def __init__(self, stage: str, error: BaseException):
        self.stage, self.error = stage, error
        super().__init__(f"{stage} failed: {reason_of(error)}")


def reason_of(exc: BaseException) -> str:
    """The first line of an exception's message (at most 400 characters), for one-line reports."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 400 else first[:397] + "..."


# ------------------------------------------------------------------------- the engine


def params_of(settings: Settings, *, tree: Any, masker: Any, scorer: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` record of an explanation, derived from its settings and what this
    image's run used (the tree's kind, the masker's fill and render size, the scorer's
    class). Kept with the keys capshap 0.1 and 0.2 wrote, for readers of those files."""
    fill = getattr(masker, "fill", settings.mask)
    render = getattr(masker, "render_size", None)
    return {
        "max_evals": int(settings.max_evals),
        "tolerance": float(settings.tolerance),
        "batch_size": int(settings.batch_size),
        "fixed_context": settings.fixed_context,
        "mask": "background image" if isinstance(fill, np.ndarray) else (
            fill if isinstance(fill, (str, int, float)) else _fill_text(fill)),
        "tree": tree.kind,
        "channels": bool(tree.channels),
        "n_segments": int(settings.n_segments) if tree.kind != "axis" else None,
        "seed": settings.seed,
        "scorer": scorer,
        "render_size": list(render) if render else None,
        "captioner_spec": settings.captioner,
        "generate_kwargs": None if settings.generate is None else dict(settings.generate),
        "prompt": settings.prompt,
        "scorer_spec": settings.scorer,
        "tree_spec": settings.tree,
        "device": settings.device,
        "max_side": settings.max_side,
        **facts,
    }


def explain_array(
    image: np.ndarray,
    scorer: Scorer,
    settings: Settings,
    *,
    tree: TreeSpec | None = None,
    fill: Fill | None = None,
    masker: MaskerLike | None = None,
    render_size: tuple[int, int] | None = None,
    name: str = "image",
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    scorer_name: str | None = None,
    facts: dict[str, Any] | None = None,
) -> Explanation:
    """Explain the caption a bound ``scorer`` holds on one image, with ``settings``.

    Parameters
    ----------
    image : (H, W, 3) uint8
    scorer : Scorer
        Bound to the caption to explain; ``score(images (N, H, W, 3)) -> (N, T)``.
    settings : Settings
        The engine's budget, batch, context, seed, tree spec, channels and segments.
    tree : optional
        A :class:`Tree`, (H, W) label map or mask list (default: ``settings.tree``).
    fill : optional
        The fill (default: ``settings.mask``), or a background image (H, W, 3).
    masker : optional
        Your own masker; then ``tree`` and ``fill`` are ignored and its tree is used.
    render_size : (h, w), optional
        Render masked images at this size; values stay per pixel of ``image``.
    scorer_name, facts
        Recorded in ``params`` (the scorer's class name; per-image provenance).

    Returns
    -------
    Explanation
        values (H, W, T) float32, or (H, W, 3, T) with ``channels=True`` on the axis tree.
    """
    s = settings
    image = _images.to_rgb_uint8(image)
    t0 = time.perf_counter()
    if masker is not None:
        region_tree = masker.tree
        if tuple(region_tree.shape[:2]) != image.shape[:2]:
            raise ValueError(f"the masker's tree covers {region_tree.shape[:2]} pixels but the image is {image.shape[:2]}")
    else:
        region_tree = make_tree(tree if tree is not None else s.tree, image, channels=s.channels,
                                n_segments=s.n_segments)
        masker = Masker(image, region_tree, fill if fill is not None else s.mask, threads=threads,
                        render_size=render_size)
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
    res = owen_values(region_tree, evaluate, max_evals=s.max_evals, batch_size=s.batch_size,
                      fixed_context=s.fixed_context, seed=s.seed, progress=progress, tolerance=s.tolerance)
    t_owen = time.perf_counter() - t1
    T = res.node_values.shape[1] if res.node_values.size else len(scorer.tokens)
    if T != len(scorer.tokens):
        raise ValueError(
            f"the scorer returned {T} scores per image but its caption has {len(scorer.tokens)} tokens "
            f"({scorer.tokens!r}); a scorer must return one column per token"
        )
    values = region_tree.lower_nodes(res.nodes, res.node_values.reshape(len(res.nodes), T)).astype(np.float32)
    total = time.perf_counter() - t0
    params = params_of(s, tree=region_tree, masker=masker, scorer=scorer_name or type(scorer).__name__,
                       facts=facts or {})
    return Explanation(
        values=values,
        base_values=res.base_values,
        outputs=res.outputs,
        tokens=list(scorer.tokens),
        caption=scorer.caption,
        image=image,
        params=params,
        settings=s,
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
        info={"n_calls": res.n_calls, "budget_used": res.budget_used, "n_evals": res.n_evals,
              "stopped": res.stopped},
    )


# ------------------------------------------------------------------------ one image


def _check_tokens(bound: Scorer) -> None:
    n = len(bound.tokens)
    if n > MAX_TOKENS:
        raise ValueError(f"the caption has {n} tokens; capshap explains at most {MAX_TOKENS} a caption "
                         "(shorten it: --caption, or --generate max_new_tokens=N)")


def _silent_words(exp: Explanation) -> list[str]:
    """Words a presence-type scorer never saw in any masked caption (all scores 0)."""
    if exp.captions is None or exp.scores.size == 0:
        return []
    dead = np.all(exp.scores == 0, axis=0)
    return [t for t, d in zip(exp.tokens, dead.tolist()) if d]


def explain_input(
    item: ImageInput,
    parts: Parts,
    *,
    n_images: int = 2,
    bars: Any = None,
    route: Route = DIRECT,
) -> Explanation:
    """The per-image job: check the captioner's limits, caption, bind the scorer, build
    the tree and masker, explain. Raises :class:`ImageFailure` naming the stage that failed."""
    s = parts.settings
    if item.array is None:
        raise ImageFailure("loading", item.error or ValueError("not loaded"))
    cap = parts.captioner
    stage = "loading"
    try:
        if cap is not None and cap.limits is not None:
            why = cap.limits.check(item.array.shape, cap.name)
            if why is not None:
                raise _images.ImageError(item.name, why)
        stage = "captioning"
        t0 = time.perf_counter()
        if s.caption is not None:
            caption = s.caption
        else:
            if cap is None:
                raise ValueError("no captioner to write the caption; pass captioner= or caption=")
            caption = route.caption(cap, [item.array])[0]
        if not isinstance(caption, str):
            raise TypeError(f"the captioner returned {type(caption).__name__}, expected a caption (str)")
        if len(caption) > MAX_CAPTION_CHARS:
            raise ValueError(f"the caption is {len(caption)} characters long; capshap explains at most "
                             f"{MAX_CAPTION_CHARS} (shorten it: --generate max_new_tokens=N)")
        t_cap = time.perf_counter() - t0
        if bars is not None:
            bars.status(caption)
        stage = "scoring"
        bound = bind_scorer(parts.scorer, cap, caption)
        _check_tokens(bound)
        stage = "building the region tree"
        tree = parts.tree_for(item, n_images) if parts.masker is None else None
        stage = "explaining"
        facts = {
            "captioner": cap.name if cap is not None else None,
            "original_size": list(item.original_size) if item.original_size else None,
            "source": item.source,
        }
        served = cap.provenance() if cap is not None else {}
        if served:  # e.g. the vLLM version and the model a server served
            facts["server"] = served
        exp = explain_array(
            item.array, route.scorer(bound), s, tree=tree, fill=parts.fill, masker=parts.masker,
            name=item.name, progress=bars.advance if bars is not None else None,
            render_size=render_shape(item.array.shape, s.render_size, cap),
            scorer_name=type(bound).__name__, facts=facts,
        )
    except KeyboardInterrupt:
        raise
    except ImageFailure:
        raise
    except Exception as e:
        raise ImageFailure(stage, e) from e
    exp.timings["caption"] = t_cap
    exp.grounding_thresholds = Thresholds(s.grounded_above, s.contradicted_below)
    return exp


def outcome_of(
    item: ImageInput,
    parts: Parts,
    *,
    n_images: int = 2,
    bars: Any = None,
    route: Route = DIRECT,
) -> Outcome:
    """The per-image job as an :class:`Outcome`: the explanation, or the failed stage and
    why (an input that did not load is a ``"loading"`` failure). The one outcome builder
    every runner uses."""
    t0 = time.perf_counter()
    if item.error is not None or item.array is None:
        reason = getattr(item.error, "reason", None) or reason_of(item.error or ValueError("not loaded"))
        return Outcome(item.name, item.source, error=reason, stage="loading", exception=item.error)
    try:
        exp = explain_input(item, parts, n_images=n_images, bars=bars, route=route)
    except ImageFailure as f:
        reason = getattr(f.error, "reason", None) if f.stage == "loading" else None
        return Outcome(item.name, item.source, error=reason or str(f), stage=f.stage,
                       seconds=time.perf_counter() - t0, exception=f.error)
    notes = []
    silent = _silent_words(exp)
    if silent:
        shown = ", ".join(repr(w) for w in silent[:5]) + (" ..." if len(silent) > 5 else "")
        notes.append(f"{shown} never appear(s) in the masked images' captions, so their values are all 0 "
                     "(the scorer credits a word only where the captioner writes it)")
    return Outcome(item.name, item.source, exp, caption=exp.caption, seconds=time.perf_counter() - t0, notes=notes)

