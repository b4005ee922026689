"""User segmentations as region trees: label-map files and mask folders.

User segmentations for ``--tree``
---------------------------------
``labels:FILE.png``: one integer label map (grey, 16-bit, palette or colour-coded PNG /
TIFF / ...) used for every image. ``labels:FOLDER``: the label map of image ``NAME.jpg`` is
``FOLDER/NAME.<ext>`` (any image extension).

``masks:FOLDER``: the masks of image ``NAME.jpg`` are the image files in ``FOLDER/NAME/``,
and the files ``FOLDER/NAME_*.<ext>`` (non-zero pixels are inside the mask). When exactly
one image is explained, loose files in ``FOLDER`` belong to it whatever their names. A
mask file that belongs to no image is an error (it usually means a misspelt name).
Overlaps and uncovered pixels follow :func:`capshap.regions.segments.from_masks`.

Label maps and masks must have the image's size, either as stored (before the image is
fitted to ``--max-side``) or after fitting; they are resized with nearest-neighbour
sampling to the size the image is explained at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from capshap.registry import SpecError

__all__ = ["TreeSource", "read_label_map", "resize_nearest", "image_files", "has_mask_images"]


def resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array (any dtype) to (h, w): pixel centres map
    to the source pixel containing them."""
    H, W = a.shape[:2]
    if (H, W) == (h, w):
        return a
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return a[rows[:, None], cols[None, :]]


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an integer label map from an image file.

    Grey, 16/32-bit and palette images give their stored values (a palette PNG gives the
    palette indices); colour images give (H, W, 3) colour codes, one label per colour
    (alpha is dropped). Returns an integer array (H, W) or (H, W, 3).
    """
    from capshap.images import ImageError, open_image_file

    p = Path(path)
    try:
        with open_image_file(p) as im:  # regular files only, size checked before decoding
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                arr = np.asarray(im)
            elif mode in ("RGB", "RGBA", "RGBX"):
                arr = np.asarray(im)[..., :3]
            elif mode == "LA":
                arr = np.asarray(im)[..., 0]
            else:
                arr = np.asarray(im.convert("RGB"))
    except ImageError as e:
        if e.reason == "no such file or directory":
            raise FileNotFoundError(f"{p}: no such file") from None
        raise ValueError(f"{p}: cannot read it as a label map image ({e.reason})") from None
    except Exception as e:
        raise ValueError(f"{p}: cannot read it as a label map image ({e})") from e
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # grey stored as RGB
    return arr


def _fit_to(a: np.ndarray, what: str, image: np.ndarray, original: tuple[int, int] | None) -> np.ndarray:
    h, w = image.shape[:2]
    shp = tuple(a.shape[:2])
    if shp == (h, w) or (original is not None and shp == tuple(original)):
        if a.ndim == 3:
            return np.stack([resize_nearest(a[..., c], h, w) for c in range(a.shape[2])], axis=2)
        return resize_nearest(a, h, w)
    sizes = f"{w}x{h}"
    if original is not None and tuple(original) != (h, w):
        sizes = f"{original[1]}x{original[0]} (fitted to {w}x{h})"
    raise ValueError(
        f"{what} is {shp[1]}x{shp[0]} px (width x height) but the image is {sizes}; "
        "it must have the image's size"
    )


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (hidden files excluded), sorted."""
    from capshap.images import is_image_path  # OpenCV and Pillow load when images do

    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_path(p))


def has_mask_images(folder: Path) -> bool:
    """True when ``folder`` or one of its sub-folders holds an image file."""
    return bool(image_files(folder)) or any(d.is_dir() and image_files(d) for d in folder.iterdir())


@dataclass
class TreeSource:
    """The parsed ``--tree`` spec: gives each image its tree spec for :func:`capshap.make_tree`.

    kind: "axis", a segmentation method, "labels" or "masks". path: the file or folder of
    user segmentations (labels / masks).
    """

    spec: str
    kind: str
    path: Path | None = None
    _label_cache: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_user(self) -> bool:
        return self.kind in ("labels", "masks")

    def check_names(self, names: Sequence[str]) -> None:
        """Check that every user segmentation file belongs to one of ``names`` (image
        names, e.g. "1.jpg"); raise :class:`SpecError` naming the files that match none."""
        if self.kind == "masks" and self.path is not None:
            stems = {Path(n).with_suffix("").name for n in names}
            loose_ok = len(names) == 1
            orphans = []
            for p in image_files(self.path):
                if loose_ok:
                    continue
                if not any(p.name.startswith(s + "_") for s in stems):
                    orphans.append(p.name)
            for d in sorted(x for x in self.path.iterdir() if x.is_dir() and not x.name.startswith(".")):
                if d.name not in stems:
                    orphans.append(d.name + "/")
            if orphans:
                raise SpecError(
                    "--tree",
                    self.spec,
                    f"mask files that match no image: {', '.join(orphans)} (images: {', '.join(sorted(names))}); "
                    "name masks FOLDER/NAME/*.png or FOLDER/NAME_*.png after the image NAME.jpg",
                )
        if self.kind == "labels" and self.path is not None and self.path.is_dir():
            stems = {Path(n).with_suffix("").name for n in names}
            orphans = [p.name for p in image_files(self.path) if p.with_suffix("").name not in stems]
            if orphans:
                raise SpecError(
                    "--tree",
                    self.spec,
                    f"label maps that match no image: {', '.join(orphans)}; name the label map of NAME.jpg FOLDER/NAME.png",
                )

    def mask_files(self, name: str, n_images: int = 2) -> list[Path]:
        """The mask files of image ``name`` (masks:FOLDER)."""
        assert self.path is not None
        stem = Path(name).with_suffix("").name
        sub = self.path / stem
        found = image_files(sub) if sub.is_dir() else []
        loose = image_files(self.path)
        found += [p for p in loose if p.name.startswith(stem + "_")]
        if not found and n_images == 1:
            found = loose
        return found

    def for_image(
        self,
        name: str,
        image: np.ndarray,
        original_size: tuple[int, int] | None = None,
        n_images: int = 2,
    ) -> Union[str, np.ndarray, list[np.ndarray]]:
        """The tree spec for one image: a method name, an (H, W) label map or a list of
        (H, W) boolean masks at the image's (fitted) size. Raises ValueError naming the
        file when a segmentation is missing or has the wrong size."""
        if not self.is_user:
            return self.kind
        assert self.path is not None
        if self.kind == "labels":
            if self.path.is_dir():
                stem = Path(name).with_suffix("").name
                cands = [p for p in image_files(self.path) if p.with_suffix("").name == stem]
                if not cands:
                    raise ValueError(
                        f"{name}: no label map {stem}.png (or another image extension) in {self.path}"
                    )
                lm = read_label_map(cands[0])
                what = f"label map {cands[0]}"
            else:
                if self._label_cache is None:
                    self._label_cache = read_label_map(self.path)
                lm = self._label_cache
                what = f"label map {self.path}"
            return _fit_to(lm, what, image, original_size)
        files = self.mask_files(name, n_images)
        if not files:
            stem = Path(name).with_suffix("").name
            raise ValueError(
                f"{name}: no masks for it in {self.path} (looked for {stem}/*.png and {stem}_*.png)"
            )
        masks = []
        for p in files:
            m = read_label_map(p)
            if m.ndim == 3:
                m = m.any(axis=2)
            masks.append(_fit_to(np.asarray(m) != 0, f"mask {p}", image, original_size))
        return masks
