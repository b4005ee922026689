"""Eight real photos of 400-500 px from the libraries' sample data (no downloads).

skimage.data astronaut, chelsea, coffee, rocket, stereo_motorcycle (left view);
sklearn's sample images china and flower; matplotlib's grace_hopper.jpg. Each is loaded
through capshap.load_image with ``max_side`` (default 500), as the CLI loads files.
"""

from __future__ import annotations

import numpy as np

NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "china", "flower", "grace_hopper")


def _raw(name: str) -> np.ndarray:
    if name in ("astronaut", "chelsea", "coffee", "rocket"):
        import skimage.data

        return getattr(skimage.data, name)()
    if name == "motorcycle":
        import skimage.data

        return skimage.data.stereo_motorcycle()[0]
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    raise ValueError(f"unknown photo {name!r}; use one of {', '.join(NAMES)}")


def photos(max_side: int = 500, names: tuple[str, ...] = NAMES) -> list[tuple[str, np.ndarray]]:
    """[(name, (H, W, 3) uint8)] with the longer side at most ``max_side``."""
    import capshap

    return [(n, capshap.load_image(_raw(n), max_side=max_side, name=n)) for n in names]
