"""Model-free scoring: is each word of the caption in the masked image's caption?"""

from __future__ import annotations

from typing import Any

import numpy as np

from capshap.interfaces import Captioner, Scorer, as_captioner
from capshap.text import words

__all__ = ["PresenceFactory"]


class PresenceFactory:
    """Model-free scoring: 1 where a word of the original caption appears in the masked
    image's caption, 0 where it does not. Needs no language model, so it suits cloud
    captioners used offline. ``PresenceFactory(captioner).bind(caption)`` gives the scorer.
    """

    def __init__(self, captioner: Any):
        self.captioner = as_captioner(captioner)

    def bind(self, caption: str) -> Scorer:
        return _BoundPresence(self.captioner, caption)


class _BoundPresence(Scorer):
    def __init__(self, captioner: Captioner, caption: str):
        self.captioner = captioner
        self.concurrent_calls = captioner.concurrent_calls  # it only calls the captioner
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
