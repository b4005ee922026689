"""The interfaces capshap's roles implement: captioners, scorers and maskers.

A :class:`Captioner` turns a batch of images into captions. A captioner with a language
head it can teacher-force (:class:`OwnHeadCaptioner`) also scores a given caption. A
:class:`Scorer` is bound to one target caption: it exposes that caption's tokens and maps a
batch of N masked images to an (N, T) float array, one column per token. A
:class:`ScorerFactory` (anything with ``bind(caption) -> Scorer``) makes bound scorers.
A :class:`MaskerLike` renders coalitions of region-tree nodes as masked images.

Optional abilities are declared here, with defaults, and read as plain attributes by the
runners and the masker (never discovered with ``getattr``):

* a captioner's ``input_size`` / :meth:`Captioner.input_size_for` (the size its model sees,
  for rendering masks at that size), ``limits`` (what it accepts, checked at load time) and
  ``concurrent_calls`` (it may be called from several threads at once);
* a scorer's ``stack_key`` / :meth:`Scorer.score_stacked` (several scorers' batches share
  one model call) and ``concurrent_calls``.

Wrappers (the caption cache, the in-flight runner's routed parts, contrast and presence
scorers) forward these declarations from what they wrap.

Images everywhere are uint8 RGB arrays: one image is (H, W, 3), a batch is (N, H, W, 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Captioner",
    "OwnHeadCaptioner",
    "ImageLimits",
    "FunctionCaptioner",
    "as_captioner",
    "Scorer",
    "FunctionScorer",
    "ScorerFactory",
    "MaskerLike",
]


@dataclass(frozen=True)
class ImageLimits:
    """What a captioner accepts: sides in pixels (inclusive) and encoded bytes.

    Checked when images are loaded, before any work, so that a run does not fail on the
    first call (Azure refuses images under 50x50 px).
    """

    min_side: int = 1
    max_side: int | None = None
    max_bytes: int | None = None

    def check(self, shape: tuple[int, ...], who: str) -> str | None:
        """The reason an image of ``shape`` (H, W, ...) is refused by ``who``, or None."""
        h, w = int(shape[0]), int(shape[1])
        if min(h, w) < self.min_side:
            return f"{w}x{h} px is smaller than {who} accepts (at least {self.min_side}x{self.min_side} px)"
        if self.max_side is not None and max(h, w) > self.max_side:
            return f"{w}x{h} px is larger than {who} accepts (at most {self.max_side} px a side)"
        return None


class Captioner(ABC):
    """Turns images into captions.

    Subclasses implement :meth:`caption`, which takes a sequence of uint8 RGB arrays
    (each (H, W, 3)) and returns one caption string per image, in order.
    """

    @abstractmethod
    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """Caption a batch of images: a list of N uint8 (H, W, 3) arrays -> N strings."""

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        return self.caption(images)

    @property
    def name(self) -> str:
        return type(self).__name__

    #: (height, width) the captioner resizes every image to before its model sees it, or
    #: None where unknown (cloud captioners, plain functions). Maskers may render at it.
    input_size: tuple[int, int] | None = None

    #: What the captioner accepts (checked at load time), or None for anything.
    limits: ImageLimits | None = None

    #: True when the captioner may be called from several threads at once: a client of a
    #: server, whose requests share one connection pool and one concurrency limit. Runners
    #: then call it from the image threads directly; a local model (False) is called from
    #: one model thread only.
    concurrent_calls: bool = False

    #: The registry spec that rebuilds this captioner (set by the captioner registry),
    #: e.g. "hf:Salesforce/blip-image-captioning-base"; None for objects made by hand.
    spec: str | None = None

    def provenance(self) -> dict[str, Any]:
        """Facts about the model behind the captions, recorded in each explanation's
        ``params`` (e.g. a server's software version and the model id it served). Keys
        must be JSON-ready; the default records nothing."""
        return {}

    def input_size_for(self, image_shape: Sequence[int]) -> tuple[int, int] | None:
        """The (h, w) an image of ``image_shape`` (H, W, ...) can be resized to before this
        captioner sees it, or None where unknown (then masks are rendered at full size).

        The default is :attr:`input_size`, a plain resize of the whole image (aspect ratio
        not kept). Captioners that keep the aspect ratio or crop override it.
        """
        return self.input_size


@runtime_checkable
class OwnHeadCaptioner(Protocol):
    """A captioner whose own language head can be teacher-forced on a caption."""

    def own_scorer(self, caption: str, score: str = "logodds", merge_words: bool = False) -> "Scorer": ...


class FunctionCaptioner(Captioner):
    """Wraps a plain Python function as a captioner.

    ``fn`` takes one image (H, W, 3) uint8 and returns a string, or, with ``batched=True``,
    takes a list of images and returns a list of strings. With ``paths=True`` it takes the
    path of an image file instead, as the SHAP notebook's ``get_caption(path)`` does: each
    (masked) image is written to a temporary PNG, the function is called on its path, and
    the file is removed.

    Examples
    --------
    >>> cap = FunctionCaptioner(get_caption, paths=True)   # doctest: +SKIP
    """

    def __init__(self, fn: Callable[..., Any], batched: bool = False, name: str | None = None, paths: bool = False):
        if batched and paths:
            raise ValueError("paths=True takes one path at a time; it cannot be combined with batched=True")
        self.fn = fn
        self.batched = batched
        self.paths = paths
        self._name = name or getattr(fn, "__name__", "function")

    @property
    def name(self) -> str:
        return self._name

    def _call(self, image: np.ndarray) -> Any:
        if self.paths:
            import os
            import tempfile

            from PIL import Image

            fd, path = tempfile.mkstemp(prefix="capshap-", suffix=".png")
            try:
                with os.fdopen(fd, "wb") as f:
                    Image.fromarray(image).save(f, format="PNG")
                return self.fn(path)
            finally:
                os.unlink(path)
        try:
            return self.fn(image)
        except (TypeError, AttributeError, OSError) as e:
            if "str" in str(e) or "path" in str(e).lower() or "ndarray" in str(e):
                raise TypeError(
                    f"captioner function {self._name!r} failed on an image array ({e}); it receives a uint8 "
                    "(H, W, 3) numpy array. If it takes a file path (like the SHAP notebook's get_caption(path)), "
                    "wrap it: capshap.FunctionCaptioner(fn, paths=True)"
                ) from e
            raise

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        if self.batched:
            out = list(self.fn(list(images)))
            if len(out) != len(images):
                raise ValueError(
                    f"captioner function {self._name!r} returned {len(out)} captions for "
                    f"{len(images)} images; a batched captioner must return one string per image"
                )
        else:
            out = [self._call(im) for im in images]
        for c in out:
            if not isinstance(c, str):
                raise TypeError(
                    f"captioner function {self._name!r} returned {type(c).__name__}, expected str"
                )
        return out


def as_captioner(obj: Any, batched: bool | None = None) -> Captioner:
    """Return ``obj`` as a :class:`Captioner`.

    Accepts a Captioner, or a plain function of one image (or, with ``batched=True``, of a
    list of images). Whether a function is batched can also be declared by giving it an
    attribute ``batched = True``.
    """
    if isinstance(obj, Captioner):
        return obj
    if callable(obj):
        if batched is None:
            batched = bool(getattr(obj, "batched", False))
        return FunctionCaptioner(obj, batched=batched)
    raise TypeError(
        f"expected a Captioner or a function image -> str, got {type(obj).__name__}"
    )


class Scorer(ABC):
    """Scores masked images against one fixed target caption.

    Attributes
    ----------
    caption : str
        The target caption.
    tokens : list[str]
        The T tokens of the caption that get a score column each.
    stack_key : hashable or None
        Scorers with equal, non-None keys can share one model call
        (:meth:`score_stacked`); None (the default) means this scorer is called alone.
    concurrent_calls : bool
        True when :meth:`score` may be called from several threads at once (it talks to a
        server); default False (a local model, called from one thread).
    """

    caption: str
    tokens: list[str]

    stack_key: Hashable | None = None
    concurrent_calls: bool = False

    @abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: images (N, H, W, 3) uint8 -> (N, T) float64."""

    def score_stacked(self, requests: Sequence[tuple["Scorer", np.ndarray]]) -> list[np.ndarray]:
        """Score several (scorer, images (N_i, H_i, W_i, 3)) requests, all of scorers with
        this scorer's :attr:`stack_key`, in as few model calls as the model allows; returns
        each request's (N_i, T_i) float64 scores, in order.

        The default scores them one by one; scorers with a ``stack_key`` override it.
        """
        return [sc.score(imgs) for sc, imgs in requests]

    def score_with_captions(self, images: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        """Like :meth:`score`, also returning the caption made of each masked image where
        the scorer captions them (surrogate and presence scorers), else None."""
        return self.score(images), None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.score(images)


@runtime_checkable
class ScorerFactory(Protocol):
    """Anything that binds a target caption to a :class:`Scorer`."""

    def bind(self, caption: str) -> Scorer: ...


@runtime_checkable
class MaskerLike(Protocol):
    """Renders coalitions (tuples of tree node ids kept visible) as masked images.

    ``image`` is the (H, W, 3) uint8 image and ``tree`` its region tree;
    ``render(coalitions)`` returns an (N, h, w, 3) uint8 batch, one image per coalition.
    """

    image: np.ndarray
    tree: Any

    def render(self, coalitions: Sequence[tuple[int, ...]]) -> np.ndarray: ...


class FunctionScorer(Scorer):
    """A scorer from a plain function images (N, H, W, 3) -> (N, T) and a list of tokens."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], tokens: Sequence[str], caption: str | None = None):
        self.fn = fn
        self.tokens = list(tokens)
        self.caption = caption if caption is not None else " ".join(self.tokens)

    def score(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(images), dtype=np.float64)
