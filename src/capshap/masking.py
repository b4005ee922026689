"""Maskers: turn a coalition of tree nodes into a masked image.

Fill options (``fill=``):

- ``"inpaint_ns"`` / ``"inpaint_telea"``: cv2.inpaint with radius 3 over the hidden pixels;
  with every pixel hidden, the per-channel mean (as ``shap.maskers.Image`` does).
- ``"blur(kx,ky)"``: a box-blurred copy (cv2.blur), computed once per image.
- a number in [0, 255], e.g. ``0`` or ``"127.5"``: that grey level (truncated to uint8).
- an RGB colour: a tuple ``(r, g, b)``, ``"r,g,b"`` or ``"#rrggbb"``.
- a background image: a uint8 array of the image's shape.

For the same image and visibility mask the pixels equal ``shap.maskers.Image``'s.
Batches are rendered in parallel threads (OpenCV and numpy release the GIL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Union

import cv2
import numpy as np

from capshap.regions.tree import Tree

__all__ = ["Masker", "Fill", "parse_fill", "FILL_HELP"]

Fill = Union[str, float, int, tuple, np.ndarray]

FILL_HELP = (
    "inpaint_ns, inpaint_telea, blur(kx,ky) e.g. blur(16,16), a grey level 0-255 e.g. 128, "
    "an RGB colour r,g,b or #rrggbb, or a background image array"
)

_BLUR = re.compile(r"^blur\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


def parse_fill(fill: Fill) -> tuple[str, Any]:
    """Normalise a fill option to ``(kind, value)``.

    kind is "inpaint_ns", "inpaint_telea", "blur" (value (kx, ky)), "value" (value: float
    or (3,) float array) or "image" (value: array). Raises ValueError naming the option.
    """
    if isinstance(fill, np.ndarray):
        if fill.ndim == 0:
            return parse_fill(float(fill))
        return "image", fill
    if isinstance(fill, bool):
        raise ValueError(f"unknown mask option {fill!r}; use {FILL_HELP}")
    if isinstance(fill, (int, float, np.integer, np.floating)):
        v = float(fill)
        if not (0.0 <= v <= 255.0):
            raise ValueError(f"mask value {fill!r} is outside 0..255; use a grey level in 0..255")
        return "value", v
    if isinstance(fill, (tuple, list)):
        if len(fill) != 3:
            raise ValueError(f"mask colour {fill!r} must have 3 components (r, g, b)")
        rgb = np.array([float(v) for v in fill])
        if np.any(rgb < 0) or np.any(rgb > 255):
            raise ValueError(f"mask colour {fill!r} has components outside 0..255")
        return "value", rgb
    if isinstance(fill, str):
        s = fill.strip()
        low = s.lower()
        if low in ("inpaint_ns", "inpaint_telea"):
            return low, None
        m = _BLUR.match(low.replace(" ", ""))
        if m:
            k = (int(m.group(1)), int(m.group(2)))
            if k[0] < 1 or k[1] < 1:
                raise ValueError(f"blur kernel in mask option {fill!r} must be at least 1x1")
            return "blur", k
        m = _HEX.match(s)
        if m:
            h = m.group(1)
            return "value", np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64)
        if "," in s:
            try:
                return parse_fill(tuple(float(p) for p in s.split(",")))
            except ValueError as e:
                if "could not convert" not in str(e):
                    raise
        try:
            return parse_fill(float(s))
        except ValueError as e:
            if "could not convert" not in str(e):
                raise
    raise ValueError(f"unknown mask option {fill!r}; use {FILL_HELP}")


class Masker:
    """Renders coalitions of ``tree`` nodes as masked copies of ``image``.

    Parameters
    ----------
    image : (H, W, 3) uint8
    tree : Tree over (H, W) pixels or (H, W, 3) pixel channels.
    fill : see the module docstring.
    threads : worker threads for batches (default: CPU count).
    """

    def __init__(self, image: np.ndarray, tree: Tree, fill: Fill = "inpaint_ns", threads: int | None = None):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
        if tree.shape[:2] != image.shape[:2]:
            raise ValueError(f"tree covers {tree.shape[:2]} but the image is {image.shape[:2]}")
        self.image = image
        self.tree = tree
        self.fill = fill
        self.kind, value = parse_fill(fill)
        self.threads = max(1, threads if threads is not None else (os.cpu_count() or 1))
        self._background: np.ndarray | None = None
        if self.kind == "blur":
            self._background = cv2.blur(image, value)
        elif self.kind == "value":
            bg = np.empty_like(image)
            bg[...] = np.broadcast_to(np.asarray(value, dtype=np.float64), image.shape).astype(np.uint8)
            self._background = bg
        elif self.kind == "image":
            bg = np.asarray(value)
            if bg.shape != image.shape:
                raise ValueError(
                    f"background image for masking has shape {bg.shape}, but the image is {image.shape}; "
                    "give a background of the same size"
                )
            if bg.dtype != np.uint8:
                if np.any(bg < 0) or np.any(bg > 255):
                    raise ValueError("background image values must lie in 0..255")
                bg = bg.astype(np.uint8)
            self._background = bg
        self._flag = cv2.INPAINT_NS if self.kind == "inpaint_ns" else cv2.INPAINT_TELEA

    # -- one image --------------------------------------------------------------------
    def visible(self, coalition: Sequence[int]) -> np.ndarray:
        """(H, W) or (H, W, 3) bool: True where the coalition's nodes are visible."""
        tree = self.tree
        if tree.rects is not None and len(coalition) < 64:
            vis = np.zeros(tree.shape, dtype=bool)
            if len(coalition):
                boxes = tree.rects[np.fromiter(coalition, dtype=np.int64, count=len(coalition))].tolist()
                if tree.channels:
                    for y0, y1, x0, x1, c0, c1 in boxes:
                        vis[y0:y1, x0:x1, c0:c1] = True
                else:
                    for y0, y1, x0, x1, _, _ in boxes:
                        vis[y0:y1, x0:x1] = True
            return vis
        return tree.mask(coalition)

    def apply(self, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Mask the image: visible (H, W) or (H, W, 3) bool -> (H, W, 3) uint8."""
        img = self.image
        if out is None:
            out = np.empty_like(img)
        if self.kind in ("inpaint_ns", "inpaint_telea"):
            hidden = ~visible if visible.ndim == 2 else ~visible.all(axis=2)
            if hidden.all():
                out[...] = img.mean(axis=(0, 1))  # truncated to uint8, as shap
            elif not hidden.any():
                out[...] = img
            else:
                out[...] = cv2.inpaint(img, hidden.view(np.uint8), 3, self._flag)
            return out
        bg = self._background
        if visible.ndim == 2:
            np.copyto(out, bg)
            cv2.copyTo(img, visible.view(np.uint8), out)
        else:
            np.copyto(out, np.where(visible, img, bg))
        return out

    def __call__(self, coalition: Sequence[int]) -> np.ndarray:
        return self.apply(self.visible(coalition))

    # -- batches ----------------------------------------------------------------------
    def render(self, coalitions: Sequence[Sequence[int]]) -> np.ndarray:
        """Render N coalitions into an (N, H, W, 3) uint8 array, in parallel threads."""
        n = len(coalitions)
        out = np.empty((n,) + self.image.shape, dtype=np.uint8)
        if n == 0:
            return out

        def one(i: int) -> None:
            self.apply(self.visible(coalitions[i]), out[i])

        if self.threads == 1 or n == 1:
            for i in range(n):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=min(self.threads, n)) as pool:
                list(pool.map(one, range(n)))
        return out
