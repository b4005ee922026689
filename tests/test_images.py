"""Tests for capshap.images: loading, validation, orientation, conversion, fitting, scans."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capshap.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    LoadedImage,
    fit,
    is_image_path,
    iter_images,
    load_image,
    to_rgb_uint8,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.jpg"))


def pattern(h: int = 32, w: int = 48) -> np.ndarray:
    """A few flat colour blocks: exact through palette formats (GIF), varied enough to
    catch transposed or shifted pixels."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 3] = (255, 0, 0)
    a[: h // 2, w // 3 : 2 * w // 3] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (250, 200, 10)
    return a


def save(path: Path, array_or_image, **kw) -> Path:
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    im.save(path, **kw)
    return path


# ------------------------------------------------------------------------- formats

LOSSLESS = {".png": {}, ".bmp": {}, ".gif": {}, ".tif": {}, ".tiff": {}, ".webp": {"lossless": True}}
LOSSY = {".jpg": {"quality": 95}, ".jpeg": {"quality": 95}, ".jfif": {"quality": 95}}


def test_extension_list_covers_the_accepted_formats():
    for ext in (".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"):
        assert ext in IMAGE_EXTENSIONS
    assert ".txt" not in IMAGE_EXTENSIONS
    assert is_image_path("A/B/Cat.JPG") and not is_image_path("notes.txt")


@pytest.mark.parametrize("ext", sorted(LOSSLESS))
def test_lossless_formats_round_trip_exactly(tmp_path, ext):
    a = pattern()
    p = save(tmp_path / f"img{ext}", a, **LOSSLESS[ext])
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("ext", sorted(LOSSY))
def test_jpeg_family_round_trips_closely(tmp_path, ext):
    a = pattern()
    p = save(tmp_path / f"img{ext}", a, format="JPEG", **LOSSY[ext])
    out = load_image(str(p))  # str paths work like Path
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    assert np.abs(out.astype(int) - a.astype(int)).mean() < 6


def test_uppercase_extension_is_accepted(tmp_path):
    p = save(tmp_path / "UPPER.PNG", pattern())
    np.testing.assert_array_equal(load_image(p), pattern())


def test_real_example_photos_load_as_224_rgb():
    assert len(EXAMPLE_FILES) == 4
    for f in EXAMPLE_FILES:
        out = load_image(f)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        with Image.open(f) as im:
            np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))
        assert out.std() > 10  # a real photo, not a blank


def test_sources_path_bytes_stream_pil_and_array_agree():
    f = EXAMPLE_FILES[0]
    ref = load_image(f)
    data = f.read_bytes()
    np.testing.assert_array_equal(load_image(data), ref)
    np.testing.assert_array_equal(load_image(bytearray(data)), ref)
    np.testing.assert_array_equal(load_image(io.BytesIO(data)), ref)
    with Image.open(f) as im:
        np.testing.assert_array_equal(load_image(im), ref)
    np.testing.assert_array_equal(load_image(ref), ref)


def test_array_input_is_copied_not_aliased():
    a = pattern()
    out = load_image(a)
    assert not np.shares_memory(out, a)
    out[:] = 0
    assert a.max() == 255


def test_gif_gives_first_frame(tmp_path):
    red = Image.new("RGB", (20, 16), (255, 0, 0))
    blue = Image.new("RGB", (20, 16), (0, 0, 255))
    p = tmp_path / "anim.gif"
    red.save(p, save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(p) as im:
        assert im.n_frames == 2  # really animated
    out = load_image(p)
    assert out.shape == (16, 20, 3)
    assert (out == (255, 0, 0)).all()


def test_multipage_tiff_gives_first_page(tmp_path):
    p = tmp_path / "pages.tiff"
    Image.new("RGB", (12, 10), (0, 200, 0)).save(
        p, save_all=True, append_images=[Image.new("RGB", (12, 10), (9, 9, 9))]
    )
    assert (load_image(p) == (0, 200, 0)).all()


# ------------------------------------------------------------------ EXIF orientation


@pytest.mark.parametrize("orientation, k", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, k):
    stored = pattern(20, 40)  # width 40, height 20 as stored
    im = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"rot{orientation}.jpg"
    im.save(p, quality=95, exif=exif)
    with Image.open(p) as raw:  # decoded pixels as stored, no orientation applied
        assert raw.getexif().get(0x0112) == orientation
        raw_pixels = np.asarray(raw.convert("RGB"))
    out = load_image(p)
    expected = np.rot90(raw_pixels, k=k)  # k=-1: 90 degrees clockwise (tag 6)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    if orientation in (6, 8):
        assert out.shape[:2] == (40, 20)


def test_exif_orientation_applied_to_bytes_and_pil_input(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(pattern(20, 40)).save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).shape == (40, 20, 3)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert load_image(im).shape == (40, 20, 3)


# ------------------------------------------------------------------- conversions


def test_grey_image_becomes_three_equal_channels(tmp_path):
    g = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (12, 1))
    out = load_image(save(tmp_path / "grey.png", Image.fromarray(g, "L")))
    assert out.shape == (12, 24, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_palette_image_maps_to_palette_colours(tmp_path):
    im = Image.new("P", (16, 10))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    px = np.zeros((10, 16), np.uint8)
    px[:, 8:] = 1
    im.putdata(px.ravel().tolist())
    out = load_image(save(tmp_path / "pal.png", im))
    assert (out[:, :8] == (10, 20, 30)).all() and (out[:, 8:] == (200, 100, 50)).all()


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:, :4, 3] = 0  # transparent -> white
    rgba[:, 4:8, 3] = 255  # opaque -> the colour
    rgba[:, 8:, 3] = 128  # half -> halfway to white
    out = load_image(save(tmp_path / "alpha.png", Image.fromarray(rgba, "RGBA")))
    assert (out[:, :4] == 255).all()
    assert (out[:, 4:8] == (0, 0, 200)).all()
    half = out[0, 10].astype(int)
    assert abs(half[0] - 127) <= 1 and abs(half[2] - 228) <= 1


def test_transparent_gif_and_la_png_become_white(tmp_path):
    im = Image.new("P", (10, 10), 0)
    im.putpalette([1, 2, 3, 90, 80, 70] + [0] * 762)
    im.paste(1, (5, 0, 10, 10))
    im.info["transparency"] = 0
    out = load_image(save(tmp_path / "t.gif", im, transparency=0))
    assert (out[:, :5] == 255).all() and (out[:, 5:] == (90, 80, 70)).all()
    la = np.zeros((10, 10, 2), np.uint8)
    la[..., 0] = 40
    la[:, 5:, 1] = 255
    out = load_image(save(tmp_path / "la.png", Image.fromarray(la, "LA")))
    assert (out[:, :5] == 255).all() and (out[:, 5:] == 40).all()


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    v = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(8, 0).repeat(4, 1)
    p = tmp_path / "deep.png"
    Image.fromarray(v).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # stored as 16-bit
    out = load_image(p)
    assert out.shape == (8, 16, 3)
    np.testing.assert_array_equal(out[0, ::4, 0], [0, 1, 128, 255])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(p, quality=100)
    out = load_image(p)
    assert out.shape == (10, 10, 3) and out.min() >= 250


def test_to_rgb_uint8_array_rules():
    g = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for a in (g, g[..., None]):
        out = to_rgb_uint8(a)
        assert out.shape == (8, 8, 3) and (out[..., 1] == g).all()
    rgb = np.stack([g, g // 2, g // 3], -1)
    assert to_rgb_uint8(rgb) is rgb  # already fine: no copy
    u16 = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(u16)[0, :, 0], [0, 1, 255])
    f01 = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(to_rgb_uint8(f01)[0, :, 0], [0, 128, 255])
    f255 = np.array([[-5.0, 99.6, 300.0]])  # not in [0, 1]: clipped and rounded
    np.testing.assert_array_equal(to_rgb_uint8(f255)[0, :, 0], [0, 100, 255])
    i64 = np.array([[-1, 7, 999]], np.int64)
    np.testing.assert_array_equal(to_rgb_uint8(i64)[0, :, 0], [0, 7, 255])
    b = np.array([[True, False]])
    np.testing.assert_array_equal(to_rgb_uint8(b)[0, :, 2], [255, 0])
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert (to_rgb_uint8(rgba) == 255).all()  # fully transparent -> white


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((3, 16, 16)), "moveaxis"),
        (np.zeros((2, 8, 8, 3), np.uint8), "batch"),
        (np.zeros((8, 8, 5), np.uint8), "(H, W, 3)"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.full((8, 8, 3), np.nan), "NaN"),
        (np.zeros((8, 8, 3), np.complex64), "dtype"),
    ],
)
def test_to_rgb_uint8_rejects_bad_arrays(bad, words):
    with pytest.raises(ImageError, match="<array>") as ei:
        to_rgb_uint8(bad)
    assert words in str(ei.value)


# ---------------------------------------------------------------------- resizing


def test_resize_keeps_aspect_ratio(tmp_path):
    p = save(tmp_path / "big.png", np.full((750, 1000, 3), 77, np.uint8))
    assert load_image(p).shape == (375, 500, 3)
    p = save(tmp_path / "tall.png", np.full((1000, 750, 3), 77, np.uint8))
    assert load_image(p).shape == (500, 375, 3)
    assert load_image(p, max_side=100).shape == (100, 75, 3)
    out = load_image(p, max_side=None)
    assert out.shape == (1000, 750, 3) and (out == 77).all()


def test_fit_never_upscales_and_is_identity_when_small():
    a = pattern(200, 300)
    assert fit(a, 500) is a
    assert fit(a, 300) is a
    assert fit(a, None) is a
    assert fit(a, 150).shape == (100, 150, 3)


def test_fit_averages_areas_instead_of_sampling():
    checker = ((np.indices((400, 600)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    out = fit(img, 300)  # factor 2: every output pixel covers 2x2 pixels, half white
    assert out.shape == (200, 300, 3)
    assert np.abs(out.astype(int) - 128).max() <= 1  # nearest-neighbour would give 0/255


def test_fit_rejects_bad_max_side():
    for bad in (0, -3, 2.5, True, "500"):
        with pytest.raises(ValueError, match="max_side"):
            fit(pattern(), bad)


def test_size_options_are_validated():
    with pytest.raises(ValueError, match="min_side"):
        load_image(pattern(), min_side=0)
    with pytest.raises(ValueError, match="max_side=4 is smaller than min_side=8"):
        load_image(pattern(), max_side=4)


# ------------------------------------------------------------------------- errors


def test_unsupported_extension_names_file_and_accepted_types(tmp_path):
    p = tmp_path / "cat.txt"
    p.write_text("meow")
    with pytest.raises(ImageError) as ei:
        load_image(p)
    msg = str(ei.value)
    assert "cat.txt" in msg and "unsupported file type '.txt'" in msg and ".jpg" in msg
    assert isinstance(ei.value, ValueError) and ei.value.source.endswith("cat.txt")


def test_corrupt_jpg_names_file(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(ImageError, match=r"broken\.jpg: not a readable image \(cannot identify"):
        load_image(p)


def test_truncated_jpg_names_file(tmp_path):
    data = EXAMPLE_FILES[0].read_bytes()
    p = tmp_path / "half.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"half\.jpg: not a readable image"):
        load_image(p)


def test_other_format_with_image_extension_is_rejected(tmp_path):
    p = tmp_path / "really_a_pdf.png"
    Image.fromarray(pattern()).save(p, format="PDF")
    with pytest.raises(ImageError, match=r"really_a_pdf\.png: not a readable image"):
        load_image(p)


def test_empty_file_names_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: file is empty"):
        load_image(p)


def test_too_small_image_names_file_and_sizes(tmp_path):
    p = save(tmp_path / "tiny.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageError, match=r"tiny\.png: image is 4x4 px .*smaller than the minimum 8x8"):
        load_image(p)
    assert load_image(p, min_side=4).shape == (4, 4, 3)
    p = save(tmp_path / "strip.png", np.zeros((5, 30, 3), np.uint8))
    with pytest.raises(ImageError, match=r"strip\.png: image is 30x5 px"):
        load_image(p)


def test_image_too_thin_after_fitting_is_rejected(tmp_path):
    p = save(tmp_path / "banner.png", np.zeros((10, 2000, 3), np.uint8))
    with pytest.raises(ImageError, match=r"banner\.png: .*fitting it into max_side=500 makes it 500x"):
        load_image(p)
    assert load_image(p, max_side=None).shape == (10, 2000, 3)


def test_missing_path_and_folder_name_the_path(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_bad_bytes_use_label_or_given_name():
    with pytest.raises(ImageError, match=r"^<bytes>: not a readable image"):
        load_image(b"\x00\x01garbage")
    with pytest.raises(ImageError, match=r"^upload-7: file is empty"):
        load_image(b"", name="upload-7")
    with pytest.raises(TypeError, match="path"):
        load_image(12345)


def test_image_error_pickles():
    err = pickle.loads(pickle.dumps(ImageError("a.jpg", "file is empty")))
    assert str(err) == "a.jpg: file is empty" and err.reason == "file is empty"


# -------------------------------------------------------------------- folder scan


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    # created in an order different from the expected output order
    save(d / "img10.png", pattern())
    (d / "broken.jpg").write_bytes(b"not an image")
    (d / "notes.txt").write_text("hello")
    save(d / "img2.jpg", pattern(), quality=95)
    save(d / ".hidden.png", pattern())
    save(d / "Big.png", np.full((750, 1000, 3), 9, np.uint8))
    (d / "sub").mkdir()
    save(d / "sub" / "inner.bmp", pattern())
    (d / ".git").mkdir()
    save(d / ".git" / "x.png", pattern())
    return d


def test_folder_scan_skips_reports_and_keeps_going(folder, caplog):
    with caplog.at_level(logging.DEBUG, logger="capshap.images"):
        recs = list(iter_images(folder))
    assert [r.name for r in recs] == ["Big.png", "broken.jpg", "img2.jpg", "img10.png"]
    assert all(isinstance(r, LoadedImage) for r in recs)
    good = [r for r in recs if r.ok]
    assert [r.name for r in good] == ["Big.png", "img2.jpg", "img10.png"]
    for r in good:
        assert r.error is None and r.array.dtype == np.uint8 and r.array.ndim == 3
        np.testing.assert_array_equal(r.array, load_image(r.path))
    big = good[0]
    assert big.original_size == (750, 1000) and big.array.shape == (375, 500, 3)
    bad = recs[1]
    assert bad.array is None and bad.original_size is None
    assert isinstance(bad.error, ImageError) and "broken.jpg" in str(bad.error)
    assert bad.path == folder / "broken.jpg"
    text = caplog.text
    assert "notes.txt" in text and "not an image file" in text
    # a file that is not an image by its extension (a README, a notebook) is skipped
    # quietly: logged for -vv, never a warning on every run
    assert not any("notes.txt" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    # a file that fails to load is yielded as an error record for the caller to report,
    # not logged a second time as a warning
    assert not any("broken.jpg" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "hidden" not in text and "inner" not in text


def test_folder_scan_recursive_and_max_side(folder):
    recs = list(iter_images([folder], max_side=None, recursive=True))
    names = [r.name for r in recs]
    assert names == ["Big.png", "broken.jpg", "img2.jpg", "img10.png", "sub/inner.bmp"]
    assert recs[0].array.shape == (750, 1000, 3)
    assert recs[-1].path == folder / "sub" / "inner.bmp"


def test_folder_scan_is_deterministic(folder):
    first = [(r.name, None if r.array is None else r.array.tobytes()) for r in iter_images(folder)]
    second = [(r.name, None if r.array is None else r.array.tobytes()) for r in iter_images(str(folder))]
    assert first == second


def test_list_of_files_and_folders_keeps_given_order_once(folder, tmp_path, caplog):
    other = save(tmp_path / "z_first.png", pattern())
    txt = tmp_path / "readme.md"
    txt.write_text("x")
    with caplog.at_level(logging.WARNING, logger="capshap.images"):
        recs = list(iter_images([other, folder / "img2.jpg", folder, txt]))
    names = [r.name for r in recs]
    # given order kept; img2.jpg not repeated when its folder is scanned later
    assert names == ["z_first.png", "img2.jpg", "Big.png", "broken.jpg", "img10.png", "readme.md"]
    assert recs[-1].error is not None and "unsupported file type '.md'" in str(recs[-1].error)
    assert "readme.md" not in caplog.text  # an error record, reported by the caller, not logged twice


def test_missing_path_raises_at_call_time(folder):
    with pytest.raises(ImageError, match=r"ghost\.jpg: no such file"):
        iter_images([folder, folder / "ghost.jpg"])  # before any image is loaded


def test_example_folder_scan():
    recs = list(iter_images(EXAMPLES))
    assert [r.name for r in recs] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert all(r.ok and r.original_size == (224, 224) and r.array.shape == (224, 224, 3) for r in recs)
