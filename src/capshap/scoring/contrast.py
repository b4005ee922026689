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

    def score(self, images: np.ndarray) -> np.ndarray:
        a = np.asarray(self.ours.score(images), dtype=np.float64).sum(axis=1)
        b = np.asarray(self.theirs.score(images), dtype=np.float64).sum(axis=1)
        return (a - b)[:, None]
