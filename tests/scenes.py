"""Synthetic scenes with a known answer, shared by the tests and benchmarks/planted_object.py."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from capshap import FunctionScorer

__all__ = ["planted_scene", "object_scorer", "positive_fraction_in"]


def planted_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coffee cup (cut out along two ellipses, scaled to 88x85) pasted at the odd
    offset (61, 83) on a 224x224 beige fabric-like texture (seeded blurred noise and a faint
    weave). Returns the image, the object's pixels (H, W) bool and its bounding box (H, W) bool.
    """
    coffee = skimage.data.coffee()
    cut = np.zeros(coffee.shape[:2], np.uint8)
    cv2.ellipse(cut, (292, 108), (118, 92), 0, 0, 360, 1, -1)  # rim and coffee
    cv2.ellipse(cut, (290, 195), (105, 65), 0, 0, 360, 1, -1)  # body and handle
    ys, xs = np.nonzero(cut)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    h, w = round((sl[0].stop - sl[0].start) * 0.36), round((sl[1].stop - sl[1].start) * 0.36)
    cup = cv2.resize(coffee[sl], (w, h), interpolation=cv2.INTER_AREA)
    inside = cv2.resize(cut[sl], (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    H = W = 224
    noise = np.random.default_rng(0).normal(size=(H, W, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.5)
    noise /= noise.std()
    yy, xx = np.mgrid[0:H, 0:W]
    weave = (np.sin(0.9 * xx) * np.sin(0.9 * yy))[..., None]
    image = np.clip(np.float32([196, 188, 170]) + 6 * noise + 5 * weave, 0, 255).astype(np.uint8)
    y0, x0 = 61, 83
    obj = np.zeros((H, W), bool)
    obj[y0 : y0 + h, x0 : x0 + w] = inside
    image[obj] = cup[inside]
    box = np.zeros((H, W), bool)
    box[y0 : y0 + h, x0 : x0 + w] = True
    return image, obj, box


def object_scorer(image: np.ndarray, obj: np.ndarray) -> FunctionScorer:
    """One token: the fraction of the object's pixels left unchanged (within 4 levels)."""
    ref = image[obj].astype(np.int16)

    def fn(batch: np.ndarray) -> np.ndarray:
        diff = np.abs(batch[:, obj].astype(np.int16) - ref).max(axis=-1)
        return (diff <= 4).mean(axis=1)[:, None]

    return FunctionScorer(fn, ["cup"])


def positive_fraction_in(values: np.ndarray, region: np.ndarray) -> float:
    pos = np.clip(values.astype(np.float64), 0, None)
    return float(pos[region].sum() / pos.sum())
