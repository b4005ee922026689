"""Maskers: pixels equal shap.maskers.Image's for every fill option; parallel batches; errors."""

from pathlib import Path

import numpy as np
import pytest
import shap  # in [test]: without it these tests fail, they do not skip

from capshap.masking import Masker, parse_fill
from capshap.regions.axis import axis_aligned


@pytest.fixture(scope="module")
def photo():
    from PIL import Image

    im = Image.open(Path(__file__).resolve().parents[1] / "examples" / "3.jpg").convert("RGB").resize((60, 45))
    return np.asarray(im).copy()


def _coalitions(tree, rng, n=12):
    """Random coalitions of disjoint nodes, plus empty and full."""
    out = [(), (tree.root,)]
    for _ in range(n):
        frontier, chosen = [tree.root], []
        while frontier:
            node = frontier.pop()
            r = rng.random()
            if node < tree.n_leaves or r < 0.3:
                if rng.random() < 0.5:
                    chosen.append(node)
            else:
                frontier += [tree.left(node), tree.right(node)]
        out.append(tuple(chosen))
    return out


FILLS = ["inpaint_ns", "inpaint_telea", "blur(10,10)", "blur(3,7)", 0, 127.7, 255, (255, 0, 40)]


@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("fill", FILLS + ["background"])
def test_pixels_equal_shap(photo, fill, channels):
    H, W, _ = photo.shape
    tree = axis_aligned(H, W, channels=channels)
    rng = np.random.default_rng(0)
    if fill == "background":
        value = rng.integers(0, 256, size=photo.shape, dtype=np.uint8)
        ref_value = value.astype(np.float64)
    elif isinstance(fill, tuple):
        value = fill
        ref_value = np.broadcast_to(np.array(fill, float), photo.shape).copy()
    else:
        value = fill
        ref_value = fill
    masker = Masker(photo, tree, value)
    ref = shap.maskers.Image(ref_value, photo.shape)
    coalitions = _coalitions(tree, rng)
    batch = masker.render(coalitions)
    for c, got in zip(coalitions, batch):
        vis = tree.visible(c)
        if not channels:
            vis = np.repeat(vis[..., None], 3, axis=2)
        want = ref(vis.ravel(), photo.copy())[0][0]
        np.testing.assert_array_equal(got, want.astype(np.uint8), err_msg=f"{fill} {c}")


def test_render_parallel_equals_serial(photo):
    tree = axis_aligned(*photo.shape[:2])
    cs = _coalitions(tree, np.random.default_rng(1), n=20)
    a = Masker(photo, tree, "inpaint_telea", threads=1).render(cs)
    b = Masker(photo, tree, "inpaint_telea", threads=4).render(cs)
    np.testing.assert_array_equal(a, b)
    # the full coalition is the image itself, the empty one is fully filled
    np.testing.assert_array_equal(a[1], photo)
    assert not np.array_equal(a[0], photo)


@pytest.mark.parametrize("bad", ["inpaint", "blur(0,3)", "blur(3)", 300, -1, (1, 2), "#12345", "red-ish", True])
def test_unknown_mask_option_names_it(bad):
    with pytest.raises(ValueError, match="mask"):
        parse_fill(bad)


def test_fill_strings_parse():
    assert parse_fill("blur(16, 16)") == ("blur", (16, 16))
    assert parse_fill("128") == ("value", 128.0)
    kind, v = parse_fill("#ff8000")
    assert kind == "value" and list(v) == [255, 128, 0]
    kind, v = parse_fill("10,20,30")
    assert list(v) == [10, 20, 30]


def test_background_of_wrong_shape(photo):
    tree = axis_aligned(*photo.shape[:2])
    with pytest.raises(ValueError, match="background image"):
        Masker(photo, tree, np.zeros((3, 3, 3), np.uint8))


# -- the fill registry -------------------------------------------------------------------


def test_fill_help_lists_every_registered_fill():
    from capshap.masking import FILLS, fill_help

    text = fill_help()
    assert text.endswith(", or a background image array")
    for entry in FILLS:
        assert entry.help in text


def test_adding_a_fill_is_one_registration(photo):
    from capshap.masking import FILLS, BackgroundFill, fill_help, make_fill

    class Stripes(BackgroundFill):
        def make_background(self, image):
            bg = np.zeros_like(image)
            bg[:: self.value] = 255
            return bg

    def factory(arg):
        if arg is None or not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"mask option stripes({arg}) needs a period >= 1, e.g. stripes(4)")
        return Stripes("stripes", int(arg))

    FILLS.register("stripes", factory, help="stripes(n) white rows every n pixels")
    try:
        assert parse_fill("stripes(3)") == ("stripes", 3)
        assert "stripes(n)" in fill_help()
        with pytest.raises(ValueError, match="period"):
            parse_fill("stripes(0)")
        tree = axis_aligned(*photo.shape[:2])
        out = Masker(photo, tree, "stripes(3)")(())
        want = np.zeros_like(photo)
        want[::3] = 255
        np.testing.assert_array_equal(out, want)
        with pytest.raises(ValueError, match="registered already"):
            FILLS.register("stripes", factory, help="again")
        assert make_fill(make_fill("stripes(2)")).value == 2  # a fill object passes through
    finally:
        FILLS.unregister("stripes")
    with pytest.raises(ValueError, match="unknown mask option"):
        parse_fill("stripes(3)")


@pytest.mark.parametrize(
    "bad,message",
    [
        ("inpaint", "unknown mask option 'inpaint'; use inpaint_ns"),
        ("blur(3)", "unknown mask option 'blur(3)'"),
        ("blur(0,3)", "blur kernel in mask option"),
        (300, "mask value 300 is outside 0..255"),
        ("300", "mask value 300.0 is outside 0..255"),
        ((1, 2), "must have 3 components"),
        ("1,2,300", "has components outside 0..255"),
        (True, "unknown mask option True"),
    ],
)
def test_error_messages_are_kept(bad, message):
    with pytest.raises(ValueError) as e:
        parse_fill(bad)
    assert message in str(e.value)


def test_more_fill_syntaxes_parse():
    assert parse_fill("  INPAINT_TELEA ") == ("inpaint_telea", None)
    assert parse_fill("blur (4, 5)") == ("blur", (4, 5))
    assert parse_fill(np.float64(3.5)) == ("value", 3.5)
    assert parse_fill(np.array(7)) == ("value", 7.0)
    kind, v = parse_fill([1, 2, 3])
    assert kind == "value" and list(v) == [1, 2, 3]
    kind, v = parse_fill(np.zeros((4, 4, 3), np.uint8))
    assert kind == "image" and v.shape == (4, 4, 3)
