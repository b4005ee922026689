"""Known-answer scores for the grounding tests: three words whose relation to the image is
known in advance.

``a`` ignores the image (its score is 2.0 whatever is shown: a prior-driven word);
``bird`` rises with the top-left quarter's brightness (grounded there); ``dog`` falls with
the bottom-right quarter's brightness (contradicted there).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TOKENS = ["a", "bird", "dog"]
CAPTION = "a bird dog"


def word_scores(size: int, *, scale: float, bird: float, dog: float) -> Callable[[np.ndarray], np.ndarray]:
    """f(images (N, size, size, 3)) -> (N, 3): ``2``, ``bird * tl - 1``, ``1 - dog * br``,
    where tl and br are the mean brightness / ``scale`` of the top-left and bottom-right
    quarters."""
    half = size // 2

    def f(batch: np.ndarray) -> np.ndarray:
        b = np.asarray(batch, dtype=np.float64) / scale
        tl = b[:, :half, :half].mean(axis=(1, 2, 3))
        br = b[:, half:, half:].mean(axis=(1, 2, 3))
        return np.stack([np.full(len(b), 2.0), bird * tl - 1.0, 1.0 - dog * br], axis=1)

    return f
