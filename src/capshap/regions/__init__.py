"""Region trees and their registry.

``TREES.create(spec)`` parses a ``--tree`` spec into a :class:`~capshap.regions.user.TreeSource`
that gives each image its tree: ``axis`` (shap's axis-aligned halves), ``slic`` /
``felzenszwalb`` / ``quickshift`` (superpixels merged bottom-up), ``labels:FILE_OR_FOLDER``
and ``masks:FOLDER`` (user segmentations). :func:`make_tree` builds one image's tree from a
name, a :class:`Tree`, a label map or a list of masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from capshap.regions.axis import axis_aligned
from capshap.regions.tree import Tree
from capshap.regions.user import TreeSource, has_mask_images
from capshap.registry import Registry, SpecError

__all__ = ["TREES", "SEGMENT_METHODS", "Tree", "TreeSpec", "axis_aligned", "make_tree"]

#: Superpixel methods (scikit-image) that segment trees can start from.
SEGMENT_METHODS = ("slic", "felzenszwalb", "quickshift")

TreeSpec = Union[str, Tree, np.ndarray, Sequence[np.ndarray]]

TREES: Registry[TreeSource] = Registry("tree", "--tree")


def _method(name: str) -> Any:
    def make(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> TreeSource:
        if arg:
            raise SpecError("--tree", f"{name}:{arg}", f"{name} takes no argument; use --segments N for the count")
        return TreeSource(name, name)

    return make


TREES.register("axis", _method("axis"), help="axis, shap's axis-aligned halves, quarters, ... (shap-compatible)")
for _m in SEGMENT_METHODS:
    TREES.register(_m, _method(_m), help=f"{_m}, {_m} superpixels merged bottom-up into a hierarchy")


@TREES.register("labels", help="labels:FILE.png or labels:FOLDER, integer label maps (FOLDER/NAME.png for NAME.jpg)",
                needs_arg=True)
def _labels(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> TreeSource:
    s = f"labels:{arg}"
    p = Path(arg).expanduser()
    if not p.exists():
        raise SpecError("--tree", s, f"no such file or folder: {arg}")
    if p.is_file() and not _is_image(p):
        raise SpecError("--tree", s, f"{arg} is not an image file; a label map is a PNG (or TIFF, ...) of integer labels")
    return TreeSource(s, "labels", p)


@TREES.register("masks", help="masks:FOLDER, mask images FOLDER/NAME/*.png or FOLDER/NAME_*.png for NAME.jpg",
                needs_arg=True)
def _masks(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> TreeSource:
    s = f"masks:{arg}"
    p = Path(arg).expanduser()
    if not p.exists():
        raise SpecError("--tree", s, f"no such file or folder: {arg}")
    if not p.is_dir():
        raise SpecError("--tree", s, f"{arg} is not a folder; masks:FOLDER takes a folder of mask images")
    if not has_mask_images(p):
        from capshap.images import IMAGE_EXTENSIONS

        raise SpecError("--tree", s, f"the folder {arg} holds no mask images ({', '.join(IMAGE_EXTENSIONS)}); the mask list is empty")
    return TreeSource(s, "masks", p)


def _is_image(p: Path) -> bool:
    from capshap.images import is_image_path

    return is_image_path(p)


def make_tree(spec: TreeSpec, image: np.ndarray, *, channels: bool = False, n_segments: int = 64) -> Tree:
    """Build the region tree for ``image`` (H, W, 3) from a spec.

    spec: "axis" (shap's axis-aligned halves), "slic" / "felzenszwalb" / "quickshift"
    (superpixels merged into a hierarchy), a :class:`Tree`, an (H, W) integer label map,
    or a list of (H, W) boolean masks.
    """
    H, W = image.shape[:2]
    if channels and not (isinstance(spec, str) and spec.lower() == "axis"):
        raise ValueError(
            "channels=True (shap's channel leaves) only works with tree='axis'; "
            "segment trees have one leaf per segment of pixels"
        )
    if isinstance(spec, Tree):
        if spec.shape[:2] != (H, W):
            raise ValueError(f"the tree covers {spec.shape[:2]} pixels but the image is {(H, W)}")
        return spec
    if isinstance(spec, str):
        s = spec.lower()
        if s == "axis":
            return axis_aligned(H, W, channels=channels)
        if s in SEGMENT_METHODS:
            from capshap.regions.segments import superpixel_tree

            return superpixel_tree(image, method=s, n_segments=n_segments)
        raise ValueError(f"unknown tree {spec!r}; use axis, {', '.join(SEGMENT_METHODS)}, a label map or masks")
    from capshap.regions.segments import from_labels, from_masks

    if isinstance(spec, np.ndarray) and spec.ndim == 2:
        return from_labels(spec, image=image)
    return from_masks(list(spec), image=image)
