"""Shared by the run-folder tests: small coloured images, and a registered captioner
(``--captioner counting``) that names an image's dominant colour and counts its calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capshap import FunctionCaptioner
from capshap.captioners import CAPTIONERS

FAST = ["--mask", "0", "--max-evals", "4", "--batch-size", "4", "--max-side", "48", "-q"]


def colour_image(path: Path, colour: tuple[int, int, int], seed: int = 0) -> Path:
    """A 48x48 image of ``colour`` with a little noise, saved at ``path``."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour)[None, None, :] + rng.integers(-20, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def colour_caption(img: np.ndarray) -> str:
    m = img.reshape(-1, 3).mean(0)
    return ("a red thing", "a green thing", "a blue thing")[int(np.argmax(m))]


class Counting:
    """A registered captioner that counts its calls and can fail or stop on blue images."""

    def __init__(self) -> None:
        self.calls = 0
        self.on_blue: BaseException | None = None

    def __call__(self, img: np.ndarray) -> str:
        self.calls += 1
        cap = colour_caption(img)
        if cap == "a blue thing" and self.on_blue is not None:
            raise self.on_blue
        return cap


@pytest.fixture
def counting():
    c = Counting()
    CAPTIONERS.register("counting", lambda arg, options, context: FunctionCaptioner(c, name="counting"),
                        help="counts calls (a test)")
    try:
        yield c
    finally:
        CAPTIONERS.unregister("counting")
