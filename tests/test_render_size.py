"""Rendering masks at the captioner's input size: shapes, the visibility mapping, fills,
and how the size is chosen (render_shape, the built-in captioner's input size)."""

import cv2
import numpy as np
import pytest

from capshap.interfaces import Captioner
from capshap.masking import Masker, render_shape
from capshap.regions.axis import axis_aligned


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return cv2.resize(skimage.data.chelsea(), (64, 48), interpolation=cv2.INTER_AREA)  # (48, 64, 3)


def _random_coalitions(tree, rng, n, max_nodes=6):
    out = []
    for _ in range(n):
        k = int(rng.integers(1, max_nodes + 1))
        nodes, seen = [], np.zeros(tree.shape[:2], bool)
        for node in rng.integers(0, tree.n_nodes, size=k):
            m = tree.node_region(int(node))
            m2 = m if m.ndim == 2 else m.any(axis=2)
            if not (seen & m2).any():  # coalitions are disjoint nodes
                nodes.append(int(node))
                seen |= m2
        out.append(tuple(nodes))
    return out


@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("size", [(24, 32), (20, 20), (47, 13)])
def test_visibility_follows_the_pixel_under_each_rendered_pixels_centre(photo, channels, size):
    tree = axis_aligned(48, 64, channels=channels)
    m = Masker(photo, tree, 0, render_size=size)
    H, W = 48, 64
    h, w = size
    rows = np.floor((np.arange(h) + 0.5) * H / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * W / w).astype(int)
    rng = np.random.default_rng(1)
    for c in _random_coalitions(tree, rng, 60):
        want = tree.visible(c)[np.ix_(rows, cols)]  # independent: sample at pixel centres
        np.testing.assert_array_equal(m.visible_rendered(c), want, err_msg=str(c))
    # more than 64 nodes takes the gather path; same rule
    many = tuple(range(0, 200, 2)) if not channels else tuple(range(0, 600, 2))
    np.testing.assert_array_equal(m.visible_rendered(many), tree.visible(many)[np.ix_(rows, cols)])


def _pil(a, h, w):
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize("fill", ["blur(5,3)", 0, (10, 200, 30), "background"])
def test_rendered_pixels_are_the_resized_image_or_the_resized_background(photo, fill):
    # halving 48x64 to 24x32: every region of at least 2x2 pixels has even edges, so each
    # rendered pixel covers a 2x2 block that is all visible or all hidden; it shows the
    # resized image there or the background made at full size and resized once
    tree = axis_aligned(48, 64)
    if fill == "background":
        fill = np.random.default_rng(0).integers(0, 256, size=photo.shape, dtype=np.uint8)
    full = Masker(photo, tree, fill)
    small = Masker(photo, tree, fill, render_size=(24, 32))
    background = _pil(full(()), 24, 32)  # everything hidden: the background at full size
    image = _pil(photo, 24, 32)
    rects = np.asarray(tree.rects)
    even = np.flatnonzero(np.all(rects[:, :4] % 2 == 0, axis=1))
    rng = np.random.default_rng(2)
    cs = [()] + [tuple(sorted(set(rng.choice(even, size=rng.integers(1, 4)).tolist()))) for _ in range(40)]
    cs = [c for c in cs if not np.any(np.sum([tree.node_region(n) for n in c] or [np.zeros((48, 64))], axis=0) > 1)]
    assert len(cs) > 10
    got = small.render(cs)
    assert got.shape == (len(cs), 24, 32, 3)
    for c, g in zip(cs, got):
        block = tree.visible(c).reshape(24, 2, 32, 2)
        assert np.all(block.all(axis=(1, 3)) == block.any(axis=(1, 3)))
        vis = block.all(axis=(1, 3))
        np.testing.assert_array_equal(g, np.where(vis[..., None], image, background), err_msg=str(c))


@pytest.mark.parametrize("fill", ["inpaint_ns", "inpaint_telea"])
def test_inpainting_runs_at_the_render_size(photo, fill):
    tree = axis_aligned(48, 64)
    m = Masker(photo, tree, fill, render_size=(24, 32))
    small = _pil(photo, 24, 32)
    np.testing.assert_array_equal(m.rendered, small)
    np.testing.assert_array_equal(m((tree.root,)), small)
    np.testing.assert_array_equal(m(()), np.broadcast_to(small.mean(axis=(0, 1)).astype(np.uint8), small.shape))
    c = (tree.left(tree.root),)
    vis = m.visible_rendered(c)
    flag = cv2.INPAINT_NS if fill == "inpaint_ns" else cv2.INPAINT_TELEA
    np.testing.assert_array_equal(m(c), cv2.inpaint(small, (~vis).view(np.uint8), 3, flag))


def test_render_size_of_the_image_itself_is_full_size(photo):
    tree = axis_aligned(48, 64)
    a = Masker(photo, tree, "inpaint_telea")
    b = Masker(photo, tree, "inpaint_telea", render_size=(48, 64))
    assert b.render_size is None
    cs = _random_coalitions(tree, np.random.default_rng(3), 5)
    np.testing.assert_array_equal(a.render(cs), b.render(cs))


def test_segment_trees_render_small_too(photo):
    from capshap.regions.segments import superpixel_tree as segments

    tree = segments(photo, "slic", 12)
    m = Masker(photo, tree, 0, render_size=(24, 32))
    rows, cols = (np.arange(24) * 2 + 1), (np.arange(32) * 2 + 1)
    c = (tree.left(tree.root),)
    np.testing.assert_array_equal(m.visible_rendered(c), tree.visible(c)[np.ix_(rows, cols)])


@pytest.mark.parametrize("bad", [(0, 5), "big", (3,), (2, -1)])
def test_bad_render_size_is_named(photo, bad):
    with pytest.raises(ValueError, match="render_size"):
        Masker(photo, axis_aligned(48, 64), 0, render_size=bad)


class _Cap(Captioner):
    """A captioner that declares an input size (and, with ``fn``, overrides input_size_for)."""

    def __init__(self, size=None, fn=None):
        self.input_size = size
        if fn is not None:
            self.input_size_for = fn

    def caption(self, images):
        return ["a thing"] * len(images)


def test_render_shape_rules():
    assert render_shape((500, 400, 3), "full", _Cap((224, 224))) is None
    assert render_shape((500, 400, 3), None) is None
    assert render_shape((500, 400, 3), "auto", _Cap((224, 224))) == (224, 224)
    assert render_shape((500, 400, 3), "auto", _Cap((384, 384))) == (384, 384)
    assert render_shape((500, 400, 3), "auto", _Cap(None)) is None  # unknown: full size
    assert render_shape((500, 400, 3), "auto", None) is None
    assert render_shape((100, 80, 3), "auto", _Cap((224, 224))) is None  # never upsample
    assert render_shape((500, 150, 3), "auto", _Cap((224, 224))) == (224, 150)
    assert render_shape((500, 400, 3), 250) == (250, 200)  # an int keeps the aspect ratio
    assert render_shape((500, 400, 3), 600) is None
    assert render_shape((500, 400), "auto", _Cap((224, 224), fn=lambda s: (320, 256))) == (320, 256)
    with pytest.raises(ValueError, match="render_size"):
        render_shape((500, 400), "half")


def test_builtin_captioner_declares_its_input_size():
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from capshap.captioners.builtin import BuiltinCaptioner

    cap = BuiltinCaptioner()
    assert cap.input_size == (224, 224)
    assert render_shape((500, 375, 3), "auto", cap) == (224, 224)
    # its preprocessing leaves a 224x224 image as it is: the model sees the rendered pixels
    img = np.random.default_rng(0).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    x = cap._preprocess([img])
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), (img.astype(np.float32) - 127) / 128)
    crop = BuiltinCaptioner(crop_fraction=0.875)
    assert crop.input_size is None
    h, w = render_shape((500, 400, 3), "auto", crop)
    side = int(0.875 * min(h, w))
    assert abs(side - 224) <= 1 and abs(h / w - 500 / 400) < 0.01  # the crop it takes is ~224 px


def test_render_iter_yields_the_batch_in_order_one_chunk_ahead(photo):
    import threading

    from capshap.masking import thread_split

    tree = axis_aligned(48, 64)
    cs = _random_coalitions(tree, np.random.default_rng(4), 11)
    m = Masker(photo, tree, "inpaint_telea", render_size=(24, 32))
    want = m.render(cs)
    started = []
    second_started = threading.Event()
    orig = m.render

    def render(part, threads=None):
        started.append(len(part))
        if len(started) == 2:
            second_started.set()
        return orig(part, threads)

    m.render = render
    parts = []
    for i, part in enumerate(m.render_iter(cs, chunk=4, threads=1)):
        if i == 0:
            # while the caller holds chunk 0, chunk 1 is being rendered in the background
            assert second_started.wait(timeout=30)
        parts.append(part)
    assert started == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), want)
    assert list(m.render_iter([], chunk=4)) == []
    with pytest.raises(ValueError, match="chunk"):
        list(m.render_iter(cs, chunk=0))
    # thread budgets never exceed the cores
    for cores in (1, 2, 3, 8, 16):
        a, b = thread_split(cores, overlap=True)
        assert a >= 1 and b >= 1 and (a + b <= cores or cores == 1)
        assert thread_split(cores) == (cores, cores)
