"""The axis-aligned tree builder (regions/axis.py): shap's linkage, regions and layout."""

import numpy as np
import pytest
import shap  # in [test]: without it these tests fail, they do not skip

from capshap.regions.axis import axis_aligned
from capshap.regions.tree import Tree

SHAPES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (31, 17), (17, 31), (64, 48), (33, 33)]


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("channels", [False, True])
def test_linkage_equals_shap(h, w, channels):
    tree = axis_aligned(h, w, channels=channels)
    ref = shap.maskers.Image("inpaint_ns", (h, w, 3 if channels else 1)).clustering
    np.testing.assert_array_equal(tree.linkage, np.asarray(ref).reshape(-1, 4))


@pytest.mark.parametrize("h,w,channels", [(5, 4, True), (9, 6, False), (1, 3, True), (12, 7, False)])
def test_every_node_is_its_reflected_box_and_shaps_region(h, w, channels):
    from shap.utils import make_masks

    tree = axis_aligned(h, w, channels=channels)
    shape = (h, w, 3) if channels else (h, w)
    masks = make_masks(np.asarray(shap.maskers.Image("inpaint_ns", (h, w, 3 if channels else 1)).clustering))
    masks = masks.toarray()
    full = np.asarray(tree.rects)
    assert full.shape == (tree.n_nodes, 6)
    for node in range(tree.n_nodes):
        want = masks[node].reshape(shape)
        y0, y1, x0, x1, c0, c1 = tree.rects[node]
        box = np.zeros(shape, bool)
        if channels:
            box[y0:y1, x0:x1, c0:c1] = True
        else:
            box[y0:y1, x0:x1] = True
            assert (c0, c1) == (0, 1)
        np.testing.assert_array_equal(box, want)
        np.testing.assert_array_equal(tree.node_region(node), want)
        np.testing.assert_array_equal(full[node], tree.rects[node])


def test_rects_indexing_forms_agree():
    tree = axis_aligned(13, 11, channels=True)
    full = np.asarray(tree.rects)
    fresh = axis_aligned(13, 11, channels=True).rects  # not yet materialised
    idx = np.array([0, tree.root, 5, tree.n_leaves, tree.n_leaves - 1, 200])
    np.testing.assert_array_equal(fresh[idx], full[idx])
    np.testing.assert_array_equal(fresh[tree.root, :4], full[tree.root, :4])
    np.testing.assert_array_equal(fresh[-1], full[-1])
    with pytest.raises(IndexError):
        fresh[np.array([tree.n_nodes])]


@pytest.mark.parametrize("h,w,channels", [(1, 1, False), (1, 1, True), (37, 23, True), (50, 41, False)])
def test_layout_equals_the_generic_code(h, w, channels):
    t = axis_aligned(h, w, channels=channels)
    g = Tree(t.linkage, t.leaf_index)  # laid out from the linkage alone
    np.testing.assert_array_equal(g.span, t.span)
    np.testing.assert_array_equal(g.sizes, t.sizes)
    np.testing.assert_array_equal(g.element_pos, t.element_pos)
    assert t.counts[t.root] == h * w * (3 if channels else 1)


def test_500px_trees_are_shaps_structure_at_size():
    # build time is measured by benchmarks/trees.py; here: right at size
    for shape, channels in (((500, 500), False), ((500, 375), True)):
        t = axis_aligned(*shape, channels=channels)
        g = Tree(t.linkage, t.leaf_index)
        np.testing.assert_array_equal(g.span, t.span)
        # the root halves the rows, and children sizes add up
        ch = t.children
        np.testing.assert_array_equal(t.sizes[ch[:, 0]] + t.sizes[ch[:, 1]], t.linkage[:, 3])
        assert tuple(t.rects[t.root][:4]) == (0, shape[0], 0, shape[1])
