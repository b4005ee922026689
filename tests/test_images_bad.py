"""Hostile and awkward image inputs: every family of the bad-inputs corpus gets a clear
ImageError naming the file, nothing hangs, nothing large is decoded or read, PIL's warnings
do not reach the user raw and one bad file never loses the others."""

from __future__ import annotations

import io
import logging
import os
import signal
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

import bad_inputs as B
from capshap import ImageError, iter_images, load_image
from capshap import images as images_mod

ERROR_CASES = [n for n, (_, e) in B.IMAGE_CASES.items() if e == "error"]
OK_CASES = [n for n, (_, e) in B.IMAGE_CASES.items() if e == "ok"]


@pytest.fixture(autouse=True)
def no_hang():
    """Turn a hang (a FIFO read, /dev/zero) into a test failure after 20 s."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def boom(*_):
        raise TimeoutError("the loader hung")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def corpus_dir(tmp_path):
    yield tmp_path
    B.chmod_back(tmp_path)


def _skip_unsupported(name):
    if name == "unreadable (mode 000)" and B.is_root():
        pytest.skip("root reads files whatever their mode")
    if name in ("FIFO named .jpg", "unix socket named .jpg") and os.name != "posix":
        pytest.skip("POSIX only")


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_file_gives_clear_error_naming_it(case, corpus_dir, recwarn):
    _skip_unsupported(case)
    p = B.make_image(case, corpus_dir)
    with pytest.raises(ImageError) as info:
        load_image(p)
    err = info.value
    assert err.source == str(p)
    assert str(err).startswith(str(p) + ": ") and len(err.reason) > 10
    assert not [w for w in recwarn if "PIL" in (w.filename or "")], "a raw PIL warning escaped"


@pytest.mark.parametrize("case", OK_CASES)
def test_awkward_but_valid_file_loads_without_raw_warnings(case, corpus_dir, caplog):
    p = B.make_image(case, corpus_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning reaching the caller fails the test
        a = load_image(p)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 8


def test_corrupt_exif_warning_is_logged_with_the_file_name(corpus_dir, caplog):
    p = B.corrupt_exif_jpeg(corpus_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="capshap.images"):
            load_image(p)
    msgs = [r.getMessage() for r in caplog.records if r.name == "capshap.images"]
    assert any(str(p) in m and "EXIF" in m for m in msgs), msgs


@pytest.mark.parametrize(
    "case", ["FIFO named .jpg", "symlink to /dev/zero", "symlink to /dev/null", "unix socket named .jpg",
             "directory named x.jpg", "600 MB sparse file", "symlink loop (self)"]
)
def test_special_files_are_refused_without_opening_them(case, corpus_dir, monkeypatch):
    _skip_unsupported(case)
    p = B.make_image(case, corpus_dir)
    opened = []
    real_open = os.open
    monkeypatch.setattr(images_mod.os, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    with pytest.raises(ImageError, match="regular file|folder|max_bytes|link loop"):
        load_image(p)
    assert opened == []


def test_refusal_says_what_kind_of_file(corpus_dir):
    assert "named pipe" in str(pytest.raises(ImageError, load_image, B.fifo(corpus_dir)).value)
    assert "character device" in str(pytest.raises(ImageError, load_image, B.dev_zero_link(corpus_dir)).value)
    assert "link loop" in str(pytest.raises(ImageError, load_image, B.symlink_loop_pair(corpus_dir)).value)
    assert "broken symbolic link" in str(pytest.raises(ImageError, load_image, B.dangling_link(corpus_dir)).value)


# ----------------------------------------------------------------------- pixel limit


def _sources(tmp_path):
    """The same 64x48 picture as each kind of source load_image takes."""
    im = B._photo(64, 48)
    png = B._png_bytes(im)
    jpg = tmp_path / "p.jpg"
    jpg.write_bytes(B._jpeg_bytes(im))
    pngf = tmp_path / "p.png"
    pngf.write_bytes(png)
    return {
        "jpeg file": lambda: jpg,
        "png file": lambda: pngf,
        "bytes": lambda: png,
        "stream": lambda: io.BytesIO(png),
        "PIL image": lambda: im.copy(),
        "array": lambda: np.asarray(im).copy(),
    }


@pytest.mark.parametrize("kind", ["jpeg file", "png file", "bytes", "stream", "PIL image", "array"])
def test_max_pixels_boundary_for_every_source(kind, tmp_path):
    src = _sources(tmp_path)[kind]
    n = 64 * 48
    assert load_image(src(), max_pixels=n).shape == (48, 64, 3)
    with pytest.raises(ImageError, match=r"64x48 px .*3,072 pixels.*3,071"):
        load_image(src(), max_pixels=n - 1)


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    p = B.png_bomb(tmp_path)

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="13000x13000 px.*max_pixels"):
        load_image(p)


def test_pil_global_state_is_left_alone(tmp_path):
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    # 100 M: over PIL's warning threshold (89 M), so PIL warns at open; the 169 M bomb is
    # still refused by capshap's check before decoding
    for case in ("13000x13000 PNG bomb", "PNG header claims 60000x60000", "corrupt EXIF JPEG"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                load_image(B.make_image(case, tmp_path / str(abs(hash(case)))), max_pixels=100_000_000)
            except ImageError as e:
                assert "max_pixels" in str(e)
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


def test_raising_max_pixels_lets_a_big_image_through(tmp_path):
    p = tmp_path / "big.png"
    Image.new("1", (7100, 7050), 1).save(p)  # 50.06 M pixels: just over the default
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(p)
    a = load_image(p, max_pixels=7100 * 7050, max_side=142)
    assert a.shape == (141, 142, 3) and (a == 255).all()


@pytest.mark.parametrize("bad", [0, -1, 63, 1.5, "many", True, None])
def test_bad_max_pixels_is_a_value_error(bad):
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=bad)
    with pytest.raises(ValueError, match="max_pixels"):
        iter_images([], max_pixels=bad)


# ------------------------------------------------------------------------ byte limit


def test_byte_limit_for_files_bytes_and_streams(tmp_path):
    data = B._png_bytes()
    p = tmp_path / "a.png"
    p.write_bytes(data)
    limit = len(data) - 1
    for src in (p, data, io.BytesIO(data)):
        with pytest.raises(ImageError, match="max_bytes"):
            load_image(src, max_bytes=limit)
        if isinstance(src, io.BytesIO):
            src.seek(0)
    assert load_image(io.BytesIO(data), max_bytes=len(data)).shape == (48, 64, 3)


def test_endless_stream_is_read_only_up_to_the_limit():
    class Endless(io.RawIOBase):
        asked: list = []

        def read(self, n=-1):
            self.asked.append(n)
            if n is None or n < 0:
                raise AssertionError("asked to read everything from an endless stream")
            return b"\0" * n

    s = Endless()
    with pytest.raises(ImageError, match="max_bytes"):
        load_image(s, max_bytes=4096)
    assert s.asked == [4097]


# ------------------------------------------------------------------------ folders


def test_folder_of_every_bad_file_loses_no_good_one(corpus_dir, caplog):
    for case in B.IMAGE_CASES:
        B.make_image(case, corpus_dir)
    (corpus_dir / "sub").mkdir()
    (corpus_dir / "sub" / "up").symlink_to("..")  # folder link loop
    (corpus_dir / "sub" / "good.png").write_bytes(B._png_bytes())
    for recursive in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            recs = list(iter_images(corpus_dir, recursive=recursive))
        names = [r.name for r in recs]
        assert len(names) == len(set(names))
        ok = {r.name for r in recs if r.ok}
        expected_ok = {B.IMAGE_CASES[c][0].__name__ for c in OK_CASES}
        assert len(ok) == len(expected_ok) + (1 if recursive else 0) + (1 if B.is_root() else 0)
        for r in recs:
            assert r.ok == (r.array is not None)
            if not r.ok:
                assert isinstance(r.error, ImageError) and r.name.split("/")[-1] in str(r.error)
        # every refused file is an error record with its reason (the caller reports it)
        assert any("link loop" in str(r.error) for r in recs if not r.ok)


def test_symlink_loop_in_folder_is_reported_not_raised(tmp_path):
    (tmp_path / "a.jpg").symlink_to("b.jpg")
    (tmp_path / "b.jpg").symlink_to("a.jpg")
    (tmp_path / "ok.png").write_bytes(B._png_bytes())
    recs = list(iter_images(tmp_path))
    assert [r.name for r in recs] == ["a.jpg", "b.jpg", "ok.png"]
    assert [r.ok for r in recs] == [False, False, True]
    assert all("link loop" in str(r.error) for r in recs[:2])


def test_given_symlink_loop_is_an_error_record(tmp_path):
    p = B.symlink_loop(tmp_path)
    (rec,) = list(iter_images([p]))
    assert not rec.ok and "link loop" in str(rec.error)


@pytest.mark.skipif(B.is_root() or os.name != "posix", reason="root reads any folder")
def test_unreadable_folder_is_an_error_record_not_a_crash(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.png").write_bytes(B._png_bytes())
    good = tmp_path / "good.png"
    good.write_bytes(B._png_bytes())
    locked.chmod(0)
    try:
        recs = list(iter_images([locked, good]))
    finally:
        locked.chmod(0o700)
    assert [r.ok for r in recs] == [False, True] and "cannot read folder" in str(recs[0].error)


def test_memory_error_on_one_image_loses_no_other(tmp_path, monkeypatch):
    for n in ("1.png", "2.png", "3.png"):
        (tmp_path / n).write_bytes(B._png_bytes())
    real = images_mod._pil_to_array

    def flaky(im, label):
        if label.endswith("2.png"):
            raise MemoryError
        return real(im, label)

    monkeypatch.setattr(images_mod, "_pil_to_array", flaky)
    recs = list(iter_images(tmp_path))
    assert [r.ok for r in recs] == [True, False, True]
    assert "out of memory" in str(recs[1].error)


# ------------------------------------------------------------ other image readers


@pytest.mark.parametrize("case", ["FIFO named .jpg", "symlink to /dev/zero", "13000x13000 PNG bomb",
                                  "JPEG header claims 65000x65000", "text named .jpg", "symlink loop (self)"])
def test_label_maps_are_read_as_safely_as_images(case, corpus_dir):
    from capshap.regions.user import read_label_map

    p = B.make_image(case, corpus_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"^{p}: cannot read it as a label map"):
            read_label_map(p)


def test_label_map_keeps_palette_indices(tmp_path):
    from capshap.regions.user import read_label_map

    lab = np.arange(12 * 10, dtype=np.uint8).reshape(10, 12) % 7
    im = Image.fromarray(lab, "P")
    im.putpalette([(i * 37) % 256 for i in range(768)])
    im.save(tmp_path / "lab.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "lab.png"), lab)
    with pytest.raises(FileNotFoundError):
        read_label_map(tmp_path / "missing.png")
