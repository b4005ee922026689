"""Cropped inpainting gives the same pixels as cv2.inpaint on the whole image.

cv2.inpaint only reads pixels near the hidden ones, so capshap inpaints the hidden pixels'
bounding box plus ``CROP_MARGIN``. This checks pixel identity over thousands of
coalitions of real trees (axis-aligned, pixel and channel leaves, and SLIC segments) on
real photos, for both OpenCV methods, and that the check has teeth: without a margin the
crop differs.
"""

import cv2
import numpy as np
import pytest

from capshap.masking import CROP_MARGIN, INPAINT_RADIUS, InpaintFill, Masker
from capshap.regions.axis import axis_aligned

SIZE = (40, 56)  # small photos keep thousands of full-image inpaintings fast


def _photos():
    import skimage.data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        a = getattr(skimage.data, name)()
        out.append((name, cv2.resize(a, SIZE[::-1], interpolation=cv2.INTER_AREA)))
    return out


def _owen_like(tree, rng, n):
    """Coalitions as the Owen recursion makes them: a context of visible siblings along a
    random root-to-node path, plus, half of the time, one child; many hide little."""
    M = tree.n_leaves
    out = []
    for _ in range(n):
        node, coal = tree.root, []
        depth = rng.integers(1, 40)
        for _ in range(depth):
            if node < M:
                break
            l, r = tree.left(node), tree.right(node)
            keep, node = (l, r) if rng.random() < 0.5 else (r, l)
            if rng.random() < 0.8:  # most contexts keep the sibling: little is hidden
                coal.append(keep)
        if rng.random() < 0.5 and node >= M:
            coal.append(tree.left(node))
        out.append(tuple(coal))
    return out


def test_crop_equals_full_image_inpainting_over_thousands_of_coalitions():
    from capshap.regions.segments import superpixel_tree as segments

    photos = _photos()
    rng = np.random.default_rng(0)
    n_checked = n_cropped = 0
    for name, img in photos:
        trees = [axis_aligned(*SIZE), axis_aligned(*SIZE, channels=True), segments(img, "slic", 24)]
        for tree in trees:
            masker = Masker(img, tree, "inpaint_ns")
            coalitions = _owen_like(tree, rng, 170)
            for c in coalitions:
                vis = masker.visible(c)
                hidden = ~vis if vis.ndim == 2 else ~vis.all(axis=2)
                for kind, flag in (("inpaint_ns", cv2.INPAINT_NS), ("inpaint_telea", cv2.INPAINT_TELEA)):
                    got = InpaintFill(kind, flag, crop=True).render(img, vis)
                    if hidden.all() or not hidden.any():
                        continue
                    want = cv2.inpaint(img, hidden.view(np.uint8), INPAINT_RADIUS, flag)
                    np.testing.assert_array_equal(got, want, err_msg=f"{name} {tree.kind} {kind} {c}")
                    n_checked += 1
                    rows = np.flatnonzero(hidden.any(1))
                    cols = np.flatnonzero(hidden.any(0))
                    box = (min(rows[-1] + 1 + CROP_MARGIN, SIZE[0]) - max(rows[0] - CROP_MARGIN, 0)) * (
                        min(cols[-1] + 1 + CROP_MARGIN, SIZE[1]) - max(cols[0] - CROP_MARGIN, 0))
                    n_cropped += box <= 0.7 * SIZE[0] * SIZE[1]
    assert n_checked >= 3000
    assert n_cropped >= 1000  # the crop path itself was exercised, not only the fallback


def test_a_crop_without_margin_is_not_identical():
    # the margin matters: cutting the crop at the hidden box changes pixels
    _, img = _photos()[1]
    hidden = np.zeros(SIZE, bool)
    hidden[12:20, 20:30] = True
    want = cv2.inpaint(img, hidden.view(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    sub = cv2.inpaint(np.ascontiguousarray(img[12:20, 20:30]), np.ascontiguousarray(hidden[12:20, 20:30]).view(np.uint8),
                      INPAINT_RADIUS, cv2.INPAINT_TELEA)
    assert not np.array_equal(sub, want[12:20, 20:30])


@pytest.mark.parametrize("kind", ["inpaint_ns", "inpaint_telea"])
def test_masker_renders_with_the_crop_and_edge_cases(kind):
    _, img = _photos()[0]
    tree = axis_aligned(*SIZE)
    m = Masker(img, tree, kind)
    np.testing.assert_array_equal(m((tree.root,)), img)  # nothing hidden
    np.testing.assert_array_equal(m(()), np.broadcast_to(img.mean(axis=(0, 1)).astype(np.uint8), img.shape))
    # one hidden pixel in a corner: the crop is clipped at the image edge
    vis = np.ones(SIZE, bool)
    vis[0, 0] = False
    flag = cv2.INPAINT_NS if kind == "inpaint_ns" else cv2.INPAINT_TELEA
    np.testing.assert_array_equal(m.apply(vis), cv2.inpaint(img, (~vis).view(np.uint8), 3, flag))
