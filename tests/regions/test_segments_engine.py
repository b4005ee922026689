"""Segment trees through the Owen engine: efficiency, per-leaf values, masking, save/load,
the planted-object test and build times (capshap.regions.segments + capshap.explain_image)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from capshap import Explanation, FunctionScorer, explain_image
from capshap.masking import Masker
from capshap.regions.tree import Tree
from capshap.regions.segments import from_labels, from_masks
from capshap.regions.segments import superpixel_tree as segments


# -- inputs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small() -> np.ndarray:
    """coffee at 48x64 (H x W): small enough for quickshift and many evaluations."""
    return np.ascontiguousarray(cv2.resize(skimage.data.coffee(), (64, 48), interpolation=cv2.INTER_AREA))


def voronoi_labels(h: int = 48, w: int = 64, n: int = 12, n_labels: int = 9, seed: int = 3) -> np.ndarray:
    """Irregular cells of n seeded points; cells k and k + n_labels share a label, so some
    labels are not connected (from_labels keeps such a label as one leaf)."""
    pts = np.random.default_rng(seed).uniform((0, 0), (h, w), size=(n, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return (np.argmin(d, axis=-1) % n_labels) * 7 + 100  # arbitrary label values


def user_masks(h: int = 48, w: int = 64) -> list[np.ndarray]:
    """A disk, an ellipse, a box that overlaps the disk and a bar that cuts the background
    in two; the rest is background."""
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - 18) ** 2 + (xx - 17) ** 2 <= 11**2
    ellipse = ((yy - 31) / 9.0) ** 2 + ((xx - 45) / 15.0) ** 2 <= 1
    box = np.zeros((h, w), bool)
    box[5:21, 22:38] = True
    bar = np.zeros((h, w), bool)
    bar[h - 7 : h - 4, :] = True
    return [disk, ellipse, box, bar]


def build(kind: str, image: np.ndarray) -> Tree:
    if kind == "slic":
        return segments(image, "slic", 30)
    if kind == "felzenszwalb":
        return segments(image, "felzenszwalb", 20)
    if kind == "quickshift":
        return segments(image, "quickshift", 20)
    if kind == "labels":
        return from_labels(voronoi_labels(*image.shape[:2]), image)
    if kind == "masks":
        return from_masks(user_masks(*image.shape[:2]), image)
    raise AssertionError(kind)


class Recorder:
    """A nonlinear three-token scorer that keeps every batch it is given."""

    def __init__(self, shape: tuple[int, int], seed: int = 1):
        h, w = shape
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(size=(2, h, w, 3)) / np.sqrt(h * w * 3) * 8.0
        self.batches: list[np.ndarray] = []

    def f(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float64) / 255.0 - 0.5
        s = np.tanh(np.einsum("nhwc,thwc->nt", x, self.weights))
        return np.column_stack([s[:, 0], s[:, 1], s[:, 0] * s[:, 1]])

    def scorer(self) -> FunctionScorer:
        def fn(batch: np.ndarray) -> np.ndarray:
            self.batches.append(batch.copy())
            return self.f(batch)

        return FunctionScorer(fn, ["a", "cup", "saucer"])


def leaves_under(tree: Tree, node: int) -> list[int]:
    """Leaves below a node, by walking the linkage (independent of the tree's layout)."""
    M, out, stack = tree.n_leaves, [], [node]
    while stack:
        n = stack.pop()
        if n < M:
            out.append(n)
        else:
            stack.extend(int(c) for c in tree.linkage[n - M, :2])
    return out


def expected_visible(tree: Tree, coalition: tuple[int, ...]) -> np.ndarray:
    leaves = [leaf for node in coalition for leaf in leaves_under(tree, node)]
    return np.isin(tree.leaf_map(), leaves)


def check_efficiency(exp: Explanation, image: np.ndarray, f, fill) -> None:
    """Values sum to f(image) - f(all masked), both computed here, not taken from exp."""
    tree = exp.tree
    all_masked = Masker(image, tree, fill).apply(np.zeros(image.shape[:2], bool))
    gap = f(image[None])[0] - f(all_masked[None])[0]
    assert np.abs(gap).max() > 0.05  # the test means something
    np.testing.assert_allclose(exp.node_values.sum(axis=0), gap, rtol=0, atol=1e-9)
    got = exp.values.astype(np.float64).sum(axis=(0, 1))
    np.testing.assert_allclose(got, gap, rtol=1e-4, atol=1e-4 * np.abs(gap).max())


def check_constant_within_leaves(exp: Explanation) -> None:
    lm = exp.tree.leaf_map()
    v = exp.values
    per_leaf = []
    for leaf in range(exp.tree.n_leaves):
        vals = v[lm == leaf]  # (n_pixels, T)
        assert vals.shape[0] > 0
        assert np.array_equal(vals.min(axis=0), vals.max(axis=0)), f"leaf {leaf} is not constant"
        per_leaf.append(vals[0])
    # ... and the leaves do not all carry the same value
    assert len(np.unique(np.round(np.array(per_leaf), 7), axis=0)) > 2


# -- 1. efficiency, per-leaf values and masking for every kind of segment tree -------------
@pytest.mark.parametrize("kind", ["slic", "felzenszwalb", "quickshift", "labels", "masks"])
def test_segment_tree_through_the_engine(small, kind):
    tree = build(kind, small)
    assert tree.n_leaves >= 5
    rec = Recorder(small.shape[:2])
    background = 255 - small  # differs from the image at every pixel and channel
    exp = explain_image(small, rec.scorer(), tree=tree, mask=background, max_evals=60, batch_size=16)
    assert exp.tree is tree and exp.params["tree"] == tree.kind
    assert exp.values.shape == small.shape[:2] + (3,)
    check_efficiency(exp, small, rec.f, background)
    check_constant_within_leaves(exp)

    # the masker renders each coalition as exactly the union of its nodes' segments
    rendered = np.concatenate(rec.batches)
    assert len(rendered) == exp.n_evals == len(exp.coalitions)
    assert max(len(c) for c in exp.coalitions) >= 2  # coalitions of several nodes were used
    for img, coalition in zip(rendered, exp.coalitions):
        visible = (img == small).all(axis=-1)
        assert np.array_equal((img == background).all(axis=-1), ~visible)
        assert np.array_equal(visible, expected_visible(tree, coalition)), coalition


@pytest.mark.parametrize("method,n", [("slic", 30), ("felzenszwalb", 20), ("quickshift", 20)])
def test_string_tree_spec_with_n_segments(small, method, n):
    rec = Recorder(small.shape[:2], seed=2)
    exp = explain_image(small, rec.scorer(), tree=method, n_segments=n, mask="inpaint_ns", max_evals=50)
    direct = segments(small, method, n)
    assert exp.tree.kind == method and exp.params["tree"] == method and exp.params["n_segments"] == n
    assert np.array_equal(exp.tree.linkage, direct.linkage)
    assert np.array_equal(exp.tree.leaf_index, direct.leaf_index)
    check_efficiency(exp, small, rec.f, "inpaint_ns")
    check_constant_within_leaves(exp)
    # a different n_segments reaches the segmentation
    other = explain_image(small, rec.scorer(), tree=method, n_segments=2 * n, mask=0, max_evals=10)
    assert other.tree.n_leaves > exp.tree.n_leaves


def test_label_map_and_mask_list_as_tree_specs(small):
    labels, masks = voronoi_labels(), user_masks()
    for spec, want in ((labels, from_labels(labels, small)), (masks, from_masks(masks, small))):
        rec = Recorder(small.shape[:2], seed=4)
        exp = explain_image(small, rec.scorer(), tree=spec, mask=(0, 255, 0), max_evals=40, batch_size=8)
        assert exp.tree.kind == want.kind
        assert np.array_equal(exp.tree.linkage, want.linkage)
        assert np.array_equal(exp.tree.leaf_index, want.leaf_index)
        check_efficiency(exp, small, rec.f, (0, 255, 0))
        check_constant_within_leaves(exp)


@pytest.mark.parametrize("kind", ["slic", "masks"])
def test_save_load_keeps_the_segment_tree(small, kind, tmp_path):
    tree = build(kind, small)
    rec = Recorder(small.shape[:2], seed=5)
    exp = explain_image(small, rec.scorer(), tree=tree, mask=0, max_evals=40)
    exp.save(tmp_path / "e")
    back = Explanation.load(tmp_path / "e.json")
    assert back.tree is not None and back.tree is not tree
    assert back.tree.kind == tree.kind
    assert np.array_equal(back.tree.linkage, tree.linkage)
    assert np.array_equal(back.tree.leaf_index, tree.leaf_index)
    assert back.tree.params == tree.params
    # the loaded tree is usable: it lowers the saved node values to the saved pixel values
    dense = np.zeros((back.tree.n_nodes, len(back.tokens)))
    dense[back.nodes] = back.node_values
    np.testing.assert_array_equal(back.tree.lower(dense).astype(np.float32), back.values)
    np.testing.assert_array_equal(back.tree.leaf_map(), tree.leaf_map())


# -- 2. planted object: segments keep the credit on the object ------------------------------
from scenes import object_scorer, planted_scene, positive_fraction_in  # noqa: E402


@pytest.fixture(scope="module")
def planted():
    image, obj, box = planted_scene()
    return image, obj, box, segments(image, "slic", 64)


def test_planted_object_gets_more_credit_from_segments_than_from_axis(planted):
    """The fast check; benchmarks/planted_object.py runs the whole comparison (two fills,
    two budgets) and prints the table."""
    image, obj, box, seg_tree = planted
    assert 50 <= seg_tree.n_leaves <= 100
    scorer = object_scorer(image, obj)
    fracs = {}
    for name, tree in (("axis", "axis"), ("slic", seg_tree)):
        exp = explain_image(image, scorer, tree=tree, mask=(127, 127, 127), max_evals=100, batch_size=50, seed=0)
        assert np.isclose(exp.outputs[0] - exp.base_values[0], 1.0)  # every object pixel changes
        fracs[name] = positive_fraction_in(exp.token_values(0), box)
    assert fracs["slic"] > 0.85
    assert fracs["slic"] > fracs["axis"] + 0.1


# -- 3. build time for a 500x375 photo -------------------------------------------------------
@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.fromarray(skimage.data.chelsea()).resize((500, 375), Image.BILINEAR))


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "quickshift"])
def test_500x375_photo_trees(photo, method):
    # build times are measured by benchmarks/trees.py, not in the tests
    assert photo.shape == (375, 500, 3)
    tree = segments(photo, method, 100)
    assert 50 <= tree.n_leaves <= 100
    assert tree.counts[tree.root] == 375 * 500
