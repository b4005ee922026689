"""The two small interfaces capshap explains: captioners and scorers.

A :class:`Captioner` turns a batch of images into captions. A :class:`Scorer` is bound to
one target caption: it exposes that caption's tokens and maps a batch of N masked images
to an (N, T) float array, one column per token. A *scorer factory* (anything with a
``bind(caption) -> Scorer`` method) makes bound scorers; :class:`OwnHead` and
:class:`PresenceScorer` are factories, and so are the surrogate scorers.

Images everywhere are uint8 RGB arrays: one image is (H, W, 3), a batch is (N, H, W, 3).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Captioner",
    "FunctionCaptioner",
    "as_captioner",
    "Scorer",
    "FunctionScorer",
    "ScorerFactory",
    "OwnHead",
    "PresenceScorer",
    "words",
]


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


class FunctionCaptioner(Captioner):
    """Wraps a plain Python function as a captioner.

    ``fn`` takes one image (H, W, 3) uint8 and returns a string, or, with ``batched=True``,
    takes a list of images and returns a list of strings.
    """

    def __init__(self, fn: Callable[..., Any], batched: bool = False, name: str | None = None):
        self.fn = fn
        self.batched = batched
        self._name = name or getattr(fn, "__name__", "function")

    @property
    def name(self) -> str:
        return self._name

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        if self.batched:
            out = list(self.fn(list(images)))
            if len(out) != len(images):
                raise ValueError(
                    f"captioner function {self._name!r} returned {len(out)} captions for "
                    f"{len(images)} images; a batched captioner must return one string per image"
                )
        else:
            out = [self.fn(im) for im in images]
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
    """

    caption: str
    tokens: list[str]

    @abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: images (N, H, W, 3) uint8 -> (N, T) float64."""

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


class FunctionScorer(Scorer):
    """A scorer from a plain function images (N, H, W, 3) -> (N, T) and a list of tokens."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], tokens: Sequence[str], caption: str | None = None):
        self.fn = fn
        self.tokens = list(tokens)
        self.caption = caption if caption is not None else " ".join(self.tokens)

    def score(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(images), dtype=np.float64)


class OwnHead:
    """Factory for white-box scoring with the captioner's own language head.

    ``OwnHead(captioner, **options).bind(caption)`` calls ``captioner.own_scorer(caption,
    **options)``; captioners that can teacher-force their decoder implement that method.
    """

    def __init__(self, captioner: Captioner, **options: Any):
        if not callable(getattr(captioner, "own_scorer", None)):
            raise TypeError(
                f"captioner {getattr(captioner, 'name', type(captioner).__name__)!r} has no "
                "language head to score with (no own_scorer method); use a surrogate scorer "
                "(SurrogateScorer) or the model-free PresenceScorer instead"
            )
        self.captioner = captioner
        self.options = options

    def bind(self, caption: str) -> Scorer:
        return self.captioner.own_scorer(caption, **self.options)  # type: ignore[attr-defined]


_WORD = re.compile(r"[\w']+", re.UNICODE)


def words(text: str) -> list[str]:
    """Split a caption into lower-case words, dropping punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


class PresenceScorer:
    """Model-free scoring: 1 where a word of the original caption appears in the masked
    image's caption, 0 where it does not. Needs no language model, so it suits cloud
    captioners used offline. ``PresenceScorer(captioner).bind(caption)`` gives the scorer.
    """

    def __init__(self, captioner: Any):
        self.captioner = as_captioner(captioner)

    def bind(self, caption: str) -> Scorer:
        return _BoundPresence(self.captioner, caption)


class _BoundPresence(Scorer):
    def __init__(self, captioner: Captioner, caption: str):
        self.captioner = captioner
        self.caption = caption
        self.tokens = words(caption)
        if not self.tokens:
            raise ValueError(f"caption {caption!r} has no words to score")

    def score_with_captions(self, images: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        caps = self.captioner.caption(list(images))
        out = np.zeros((len(caps), len(self.tokens)), dtype=np.float64)
        for i, c in enumerate(caps):
            present = set(words(c))
            out[i] = [t in present for t in self.tokens]
        return out, caps

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.score_with_captions(images)[0]


