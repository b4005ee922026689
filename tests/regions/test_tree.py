"""Axis-aligned trees: shap's linkage exactly, regions as rectangles, layout and lowering."""

import numpy as np
import pytest
import shap  # in [test]: without it these tests fail, they do not skip

from capshap.regions.axis import axis_aligned
from capshap.regions.tree import Tree


@pytest.mark.parametrize("h,w", [(1, 1), (2, 1), (3, 2), (7, 5), (8, 6), (13, 11), (16, 16), (5, 9), (30, 17)])
def test_channel_linkage_equals_shap(h, w):
    tree = axis_aligned(h, w, channels=True)
    ref = shap.maskers.Image("inpaint_ns", (h, w, 3)).clustering
    np.testing.assert_array_equal(tree.linkage, ref)


@pytest.mark.parametrize("h,w", [(3, 2), (7, 5), (16, 9)])
def test_pixel_tree_equals_shap_single_channel_and_regions(h, w):
    from shap.utils import make_masks

    tree = axis_aligned(h, w)
    ref = shap.maskers.Image("inpaint_ns", (h, w, 1)).clustering
    np.testing.assert_array_equal(tree.linkage, ref)
    assert tree.n_leaves == h * w  # three times fewer leaves than channel mode
    masks = make_masks(ref).toarray()
    for node in range(tree.n_nodes):
        want = masks[node].reshape(h, w)
        np.testing.assert_array_equal(tree.node_region(node), want)
        y0, y1, x0, x1 = tree.rects[node, :4]
        box = np.zeros((h, w), bool)
        box[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(box, want)  # every region is its rectangle


def test_generic_layout_matches_builder():
    t = axis_aligned(13, 11, channels=True)
    g = Tree(t.linkage, t.leaf_index)  # laid out by the generic code
    np.testing.assert_array_equal(g.span, t.span)
    np.testing.assert_array_equal(g.counts, t.counts)


def test_lower_preserves_totals_and_spreads_evenly():
    tree = axis_aligned(6, 4)
    vals = np.zeros((tree.n_nodes, 2))
    vals[tree.root] = [12.0, -24.0]
    vals[tree.left(tree.root)] = [1.0, 0.0]
    px = tree.lower(vals)
    assert px.shape == (6, 4, 2)
    np.testing.assert_allclose(px.sum((0, 1)), [13.0, -24.0])
    left = tree.node_region(tree.left(tree.root))
    np.testing.assert_allclose(px[~left, 0], 0.5)
    np.testing.assert_allclose(px[left, 0], 0.5 + 1.0 / left.sum())
    nodes = np.array([tree.root, tree.left(tree.root)])
    np.testing.assert_array_equal(tree.lower_nodes(nodes, vals[nodes]), px)


def test_bad_linkage_is_rejected():
    t = axis_aligned(2, 2)
    bad = t.linkage.copy()
    bad[0, 0] = bad[0, 1]
    with pytest.raises(ValueError):
        Tree(bad, t.leaf_index)
    with pytest.raises(ValueError, match="leaf_index"):
        Tree(t.linkage, t.leaf_index + 10)


def test_500px_tree_is_laid_out_like_the_generic_code():
    # build time is measured by benchmarks/trees.py; here: the fast path is right at size
    t = axis_aligned(500, 375)
    assert t.n_leaves == 500 * 375 and t.counts[t.root] == 500 * 375
    sub = Tree(t.linkage, t.leaf_index)
    np.testing.assert_array_equal(sub.span, t.span)
