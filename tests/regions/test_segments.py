"""Region trees from superpixels, label maps and masks (capshap.regions.segments)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import skimage.data

from capshap.regions import segments as seg_mod
from capshap.regions.segments import from_labels, from_masks
from capshap.regions.segments import superpixel_tree as segments

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def _resize(im: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return _resize(skimage.data.coffee(), 96, 128)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return _resize(skimage.data.chelsea(), 375, 500)


@pytest.fixture(scope="module")
def small_trees(small):
    return {
        "slic": segments(small, "slic", 40),
        "felzenszwalb": segments(small, "felzenszwalb", 30),
        "quickshift": segments(small, "quickshift", 30),
    }


def grid_labels(h: int = 64, w: int = 64, step: int = 8) -> np.ndarray:
    return (np.arange(h)[:, None] // step) * (w // step) + np.arange(w)[None, :] // step


# -- structure checks shared by every kind of tree ------------------------------------
def check_partition(tree) -> None:
    """Every pixel is in exactly one leaf and every leaf has pixels."""
    M = tree.n_leaves
    li = tree.leaf_index
    assert li.ndim == 2 and li.dtype == np.int32
    assert li.min() == 0 and li.max() == M - 1
    assert np.all(np.bincount(li.ravel(), minlength=M) > 0)
    cover = np.zeros(li.shape, dtype=np.int64)
    for leaf in range(M):
        cover += tree.node_region(leaf)
    assert np.all(cover == 1)


def check_binary_cover(tree) -> None:
    M = tree.n_leaves
    H, W = tree.shape
    L = tree.linkage
    assert L.shape == (M - 1, 4)
    ch = L[:, :2].astype(np.int64)
    # every node except the root is the child of exactly one internal node
    uses = np.bincount(ch.ravel(), minlength=2 * M - 1)
    assert np.all(uses[:-1] == 1) and uses[-1] == 0
    assert np.all(ch.max(axis=1) < np.arange(M, 2 * M - 1))
    assert tree.counts[tree.root] == H * W
    assert tree.node_region(tree.root).all()
    for i in range(M - 1):
        a, b = ch[i]
        assert tree.counts[M + i] == tree.counts[a] + tree.counts[b]
        leaves = lambda n: 1 if n < M else L[n - M, 3]  # noqa: E731
        assert L[i, 3] == leaves(a) + leaves(b)
    heights = np.concatenate([np.zeros(M), L[:, 2]])
    assert np.all(L[:, 2] >= 0)
    assert np.all(L[:, 2] >= heights[ch].max(axis=1))  # monotone towards the root


def check_siblings_adjacent(tree) -> None:
    for node in range(tree.n_leaves, tree.n_nodes):
        left = tree.node_region(tree.left(node)).astype(np.uint8)
        right = tree.node_region(tree.right(node))
        grown = cv2.dilate(left, CROSS).astype(bool)
        assert np.any(grown & right), f"children of node {node} do not touch"


def check_all(tree) -> None:
    check_partition(tree)
    check_binary_cover(tree)
    check_siblings_adjacent(tree)


def n_components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)[0] - 1


def depth(tree) -> int:
    M = tree.n_leaves
    d = np.zeros(tree.n_nodes, dtype=int)
    for i, (a, b) in enumerate(tree.children):
        d[M + i] = 1 + max(d[a], d[b])
    return int(d[-1])


# -- superpixel trees ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "quickshift"])
def test_methods_build_valid_trees(small_trees, small, method):
    tree = small_trees[method]
    assert tree.kind == method and tree.params["method"] == method
    assert tree.shape == small.shape[:2]
    assert tree.n_leaves >= 4
    check_all(tree)
    # leaves are single connected segments, numbered by first pixel in raster order
    first = [np.flatnonzero(tree.leaf_index.ravel() == k)[0] for k in range(tree.n_leaves)]
    assert np.all(np.diff(first) > 0)
    for k in range(tree.n_leaves):
        assert n_components(tree.node_region(k)) == 1
    assert tree.params["depth"] == depth(tree)


@pytest.mark.parametrize("method", ["felzenszwalb", "quickshift"])
def test_over_segmentations_are_reduced_to_n_segments(small_trees, method):
    tree = small_trees[method]
    assert tree.params["n_raw_segments"] > 30  # these methods over-segment the image
    assert tree.n_leaves == 30


def test_building_twice_gives_the_same_tree(small):
    for method, n in (("slic", 40), ("felzenszwalb", 30)):
        a, b = segments(small, method, n), segments(small.copy(), method, n)
        assert np.array_equal(a.linkage, b.linkage)
        assert np.array_equal(a.leaf_index, b.leaf_index)
        assert a.params == b.params


def test_method_kwargs_reach_scikit_image(small):
    coarse = segments(small, "felzenszwalb", 500, scale=2000, min_size=200)
    fine = segments(small, "felzenszwalb", 500, scale=10, min_size=5)
    assert coarse.params["scale"] == 2000
    assert coarse.n_leaves < fine.n_leaves


def test_colour_separates_the_root():
    im = np.zeros((64, 64, 3), np.uint8)
    im[:, :32] = (200, 30, 30)
    im[:, 32:] = (30, 30, 200)
    for tree in (from_labels(grid_labels(), im), segments(im, "slic", 16)):
        kids = (tree.left(tree.root), tree.right(tree.root))
        halves = {tuple(np.flatnonzero(tree.node_region(c).all(axis=0))) for c in kids}
        assert halves == {tuple(range(32)), tuple(range(32, 64))}


def test_texture_separates_the_root():
    # same mean grey on both sides; the right half is striped
    im = np.full((64, 64, 3), 128, np.uint8)
    im[:, 32:] = np.where((np.arange(32) // 2) % 2, 78, 178)[None, :, None]
    tree = from_labels(grid_labels(), im)
    left = tree.node_region(tree.left(tree.root))
    assert left.sum() == 64 * 32 and (left[:, :32].all() or left[:, 32:].all())
    # without the texture term the root is not that split
    flat = from_labels(grid_labels(), im, texture_weight=0.0, colour_weight=0.0)
    left = flat.node_region(flat.left(flat.root))
    assert not (left[:, :32].all() or left[:, 32:].all())


def test_photo_tree_is_balanced_enough(photo):
    tree = segments(photo, "slic", 100)
    d, M = depth(tree), tree.n_leaves
    print(f"chelsea 375x500 slic: {M} leaves, depth {d}, log2(M) = {np.log2(M):.1f}")
    assert M >= 50
    assert d <= 2 * np.log2(M)
    # without the balance term the tree may be deeper, never shallower than log2
    assert depth(segments(photo, "slic", 100, balance=0.0)) >= np.ceil(np.log2(M))


def test_tree_values_are_constant_within_leaves(small_trees):
    tree = small_trees["slic"]
    vals = np.zeros((tree.n_nodes, 2))
    vals[tree.left(tree.root), 0] = 3.0
    vals[5, 1] = -1.0
    px = tree.lower(vals)
    assert np.isclose(px.sum(), 2.0)
    for k in range(tree.n_leaves):
        v = px[tree.leaf_index == k]
        assert np.allclose(v, v[0])


def test_500x375_photo_tree(photo):
    # build time is measured by benchmarks/trees.py, not here
    tree = segments(photo, "slic", 100)
    assert tree.shape == photo.shape[:2] and tree.counts[tree.root] == photo.shape[0] * photo.shape[1]


# -- label maps ---------------------------------------------------------------------------
def test_from_labels_any_values_and_disconnected_labels(small):
    lm = np.full((96, 128), 7, dtype=np.int64)
    lm[:, 64:] = -3
    lm[10:20, 10:20] = 100
    lm[60:70, 80:90] = 100  # label 100 appears twice: kept as one leaf
    for image in (None, small):
        tree = from_labels(lm, image)
        assert tree.n_leaves == 3 and tree.kind == "labels"
        check_all(tree)
        # raster order: 7 (pixel 0) -> 0, -3 -> 1, 100 -> 2
        assert tree.leaf_index[0, 0] == 0 and tree.leaf_index[0, 127] == 1
        assert np.array_equal(tree.node_region(2), lm == 100)


def test_from_labels_colour_coded_png_like(small):
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:48] = (255, 0, 0)
    rgb[48:, :64] = (0, 255, 0)
    rgb[48:, 64:] = (0, 0, 255)
    tree = from_labels(rgb, small)
    assert tree.n_leaves == 3
    check_all(tree)


def test_from_labels_without_image_is_size_balanced():
    tree = from_labels(grid_labels())
    assert tree.n_leaves == 64
    check_all(tree)
    assert depth(tree) == 6  # perfectly balanced: equal blocks merge pairwise


# -- masks -----------------------------------------------------------------------------
def test_masks_overlap_rule_and_background():
    H, W = 40, 60
    big = np.zeros((H, W), bool)
    big[5:30, 5:40] = True
    small = np.zeros((H, W), bool)
    small[20:35, 30:50] = True  # overlaps big at [20:30, 30:40]
    tree = from_masks([big, small], shape=(H, W))
    check_all(tree)
    li = tree.leaf_index
    owner_small = li[25, 45]
    assert li[25, 35] == owner_small  # overlap goes to the smaller mask
    assert li[10, 10] != owner_small
    assert np.array_equal(li == owner_small, small)
    # background: everything else, one leaf per connected component (here one)
    bg = ~(big | small)
    assert len(np.unique(li[bg])) == 1 and tree.params["n_background"] == 1
    assert tree.n_leaves == 3


def test_masks_equal_size_tie_goes_to_earlier_mask_and_split_background():
    H, W = 30, 30
    a = np.zeros((H, W), bool)
    a[:, 10:20] = True  # a vertical band splits the background in two
    b = np.zeros((H, W), bool)
    b[10:20, :] = True  # same area, overlaps a in the middle square
    tree = from_masks([a, b], shape=(H, W))
    check_all(tree)
    li = tree.leaf_index
    assert li[15, 15] == li[0, 15]  # the middle belongs to a (earlier)
    assert li[15, 0] != li[15, 15]
    assert tree.params["n_background"] == 4  # the four corners
    assert tree.n_leaves == 6
    tree2 = from_masks([b, a], shape=(H, W))
    assert tree2.leaf_index[15, 15] == tree2.leaf_index[15, 0]  # now b wins


def test_masks_fully_covered_or_empty_are_dropped(small):
    H, W = small.shape[:2]
    outer = np.zeros((H, W), bool)
    outer[10:50, 10:50] = True
    inner = np.zeros((H, W), bool)
    inner[20:30, 20:30] = True
    same = inner.copy()  # identical to inner: loses the tie, has no pixels left
    empty = np.zeros((H, W), bool)
    tree = from_masks([outer, inner, same, empty], image=small)
    assert tree.params["dropped_masks"] == [2, 3]
    assert tree.n_leaves == 3  # outer, inner, background
    check_all(tree)


def test_masks_as_array_and_uint8_values(small):
    H, W = small.shape[:2]
    m = np.zeros((2, H, W), np.uint8)
    m[0, :40] = 255
    m[1, 60:, 70:] = 1
    t1 = from_masks(m, image=small)
    t2 = from_masks([x.astype(bool) for x in m], image=small)
    assert np.array_equal(t1.leaf_index, t2.leaf_index)
    assert np.array_equal(t1.linkage, t2.linkage)
    assert t1.kind == "masks"


def test_disconnected_adjacency_falls_back_to_size_order(monkeypatch):
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    monkeypatch.setattr(seg_mod, "_adjacency", lambda leaf, K: empty)
    lm = np.zeros((10, 10), int)
    lm[:, 5:] = 1
    lm[0, 0] = 2  # 1 pixel
    lm[9, 9] = 3  # 1 pixel
    tree = from_labels(lm)
    check_partition(tree)
    check_binary_cover(tree)
    ids = [tree.leaf_index[0, 0], tree.leaf_index[9, 9]]
    first = tree.linkage[0, :2].astype(int)
    assert sorted(first) == sorted(ids)  # the two smallest regions are joined first


# -- bad input ---------------------------------------------------------------------------
def test_label_map_of_the_wrong_size(small):
    with pytest.raises(ValueError, match=r"label map is 50x60 \(H x W\) but the image is 96x128"):
        from_labels(np.zeros((50, 60), int) + (np.arange(60) > 30), small)


def test_single_segment_is_rejected(small):
    with pytest.raises(ValueError, match="single segment"):
        from_labels(np.full((20, 20), 4))
    with pytest.raises(ValueError, match="single segment"):
        from_masks([np.ones((20, 20), bool)])
    with pytest.raises(ValueError, match="single segment"):
        segments(np.full((32, 32, 3), 90, np.uint8), "felzenszwalb", 8, min_size=2000)


def test_mask_list_errors(small):
    H, W = small.shape[:2]
    with pytest.raises(ValueError, match="mask list is empty"):
        from_masks([], image=small)
    good = np.zeros((H, W), bool)
    good[:10] = True
    with pytest.raises(ValueError, match=r"mask 1 has shape \(50, 50\) but the image is 96x128"):
        from_masks([good, np.ones((50, 50), bool)], image=small)
    with pytest.raises(ValueError, match=r"mask 1 has shape \(5, 5\) but mask 0 is 96x128"):
        from_masks([good, np.ones((5, 5), bool)])
    with pytest.raises(ValueError, match=r"mask 0 has shape \(96, 128\) but shape is 10x10"):
        from_masks([good], shape=(10, 10))
    with pytest.raises(ValueError, match="all 2 masks are empty"):
        from_masks([np.zeros((H, W), bool)] * 2, image=small)


def test_other_bad_arguments(small):
    with pytest.raises(ValueError, match="unknown segmentation method 'watershed'"):
        segments(small, "watershed")
    with pytest.raises(ValueError, match="n_segments must be an integer >= 2"):
        segments(small, "slic", 1)
    with pytest.raises(ValueError, match="uint8"):
        segments(small.astype(np.float32), "slic")
    with pytest.raises(ValueError, match="balance must be"):
        segments(small, "slic", 10, balance=-1)
    with pytest.raises(ValueError, match="integer labels"):
        from_labels(np.full((4, 4), 0.5))
