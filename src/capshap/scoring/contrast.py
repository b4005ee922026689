"""Contrastive scoring: why does the model prefer its caption over another?

The explained score of an image is the whole-caption log-probability difference

    log p(caption | image) - log p(contrast | image)

(the sum of the teacher-forced log-probabilities of each caption's tokens), one column
named ``"<caption> | not <contrast>"``. Positive values mark regions that make the model
prefer its caption. Owen values are linear in the score, so these values are exactly the
caption's whole-sentence values minus the contrast's, and they sum to the difference of
the two log-likelihood ratios between the image and the all-masked image.

A whole-caption difference (rather than per word over the shared prefix) works for any
pair of captions, whatever their lengths and tokenizations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from capshap.interfaces import Scorer

__all__ = ["ContrastScorer"]


class ContrastScorer:
    """Factory: ``ContrastScorer(logprob_factory, contrast).bind(caption)``.

    logprob_factory: a scorer factory whose bound scorers return per-token log-probabilities
    (own head or surrogate with ``score="logprob"``). contrast: the other caption.
    """

    def __init__(self, logprob_factory: Any, contrast: str):
        if not isinstance(contrast, str) or not contrast.strip():
            raise ValueError("contrast caption is empty; give the caption to compare against")
        self.factory = logprob_factory
        self.contrast = contrast.strip()

    def bind(self, caption: str) -> Scorer:
        return _BoundContrast(self.factory.bind(caption), self.factory.bind(self.contrast), caption, self.contrast)


class _BoundContrast(Scorer):
    def __init__(self, ours: Scorer, theirs: Scorer, caption: str, contrast: str):
        self.ours, self.theirs = ours, theirs
        self.caption = caption
        self.contrast = contrast
        self.tokens = [f"{caption} | not {contrast}"]
        # it only calls the two scorers: concurrent where both are
        self.concurrent_calls = ours.concurrent_calls and theirs.concurrent_calls
        # it stacks where both scorers stack together (one model call for both captions)
        key = ours.stack_key
        self.stack_key = ("contrast", key) if key is not None and theirs.stack_key == key else None

    def score(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, 3) uint8 -> (N, 1) float64: log p(caption) - log p(contrast)."""
        return _difference(self.ours.score(images), self.theirs.score(images))

    def score_stacked(self, requests: Sequence[tuple[Scorer, np.ndarray]]) -> list[np.ndarray]:
        """Both captions of every (contrast scorer, images (N_i, H, W, 3)) request in the
        inner scorers' stacked calls; each request's (N_i, 1) float64 differences."""
        inner: list[tuple[Scorer, np.ndarray]] = []
        for sc, imgs in requests:
            assert isinstance(sc, _BoundContrast)
            inner += [(sc.ours, imgs), (sc.theirs, imgs)]
        outs = self.ours.score_stacked(inner)
        return [_difference(a, b) for a, b in zip(outs[::2], outs[1::2])]


def _difference(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """(N, T1) and (N, T2) per-token log-probabilities -> (N, 1) whole-caption difference."""
    a = np.asarray(ours, dtype=np.float64).sum(axis=1)
    b = np.asarray(theirs, dtype=np.float64).sum(axis=1)
    return (a - b)[:, None]
