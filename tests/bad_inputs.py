"""A corpus of bad (and awkward but valid) inputs, made on the spot in a temporary folder.

Used by the image and explanation tests and by ``benchmarks/bad_inputs.py``. Every maker
takes a folder (``pathlib.Path``) and returns the path it created; making the whole corpus
takes well under a second and a few MB of disk (the decompression bombs are tiny files whose
headers claim huge sizes, the 600 MB file is sparse).

``IMAGE_CASES`` maps a case name to ``(maker, expect)`` where ``expect`` is ``"error"``
(capshap must refuse it with an :class:`capshap.ImageError` naming the file) or ``"ok"``
(an awkward but valid image that must load). ``EXPLANATION_CASES`` maps a case name to a
function ``damage(npz, js)`` that spoils a saved explanation in place; every one must make
``Explanation.load`` raise ``ValueError`` naming the file (or load an explanation whose
parts agree, never draw an inconsistent one).
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- helpers


def _photo(w: int = 64, h: int = 48) -> Image.Image:
    """A small deterministic RGB picture (gradients), so loaders have real content."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], axis=2)
    return Image.fromarray(a.astype(np.uint8), "RGB")


def _jpeg_bytes(im: Image.Image | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (im or _photo()).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _png_bytes(im: Image.Image | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (im or _photo()).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is rewritten to claim ``width`` x ``height`` (CRC fixed):
    the header lies, the data is tiny."""
    data = bytearray(_png_bytes(_photo(16, 16)))
    # signature (8) + length (4) + b"IHDR" (4) + 13 bytes of IHDR data + CRC (4)
    struct.pack_into(">II", data, 16, width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    struct.pack_into(">I", data, 29, crc)
    return bytes(data)


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 marker is rewritten to claim ``width`` x ``height``."""
    data = bytearray(_jpeg_bytes(_photo(16, 16)))
    i = data.index(b"\xff\xc0")
    # marker (2) + length (2) + precision (1) + height (2) + width (2)
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------- image makers


def truncated_jpeg(d: Path) -> Path:
    data = _jpeg_bytes(_photo(256, 256))
    return _write(d, "truncated.jpg", data[: len(data) // 3])


def png_bomb(d: Path) -> Path:
    """A real 13000x13000 PNG (169 M pixels) of a few hundred KB, made cheaply from a
    1-bit image; decoded to RGB it would need about 500 MB, more with conversions."""
    im = Image.new("1", (13000, 13000), 0)
    p = d / "bomb.png"
    im.save(p, format="PNG", optimize=False, compress_level=9)
    return p


def png_header_bomb(d: Path) -> Path:
    """A tiny PNG whose header claims 60000x60000 pixels."""
    return _write(d, "header_bomb.png", _png_with_size(60000, 60000))


def jpeg_header_bomb(d: Path) -> Path:
    """A tiny JPEG whose frame header claims 65000x65000 pixels (12 GB as RGB)."""
    return _write(d, "header_bomb.jpg", _jpeg_with_size(65000, 65000))


def gif_header_bomb(d: Path) -> Path:
    """A GIF whose logical screen and frame claim 65535x65535 pixels."""
    buf = io.BytesIO()
    _photo(16, 16).convert("P").save(buf, format="GIF")
    data = bytearray(buf.getvalue())
    struct.pack_into("<HH", data, 6, 65535, 65535)  # logical screen
    i = data.index(b"\x2c")  # image descriptor: left, top, width, height
    struct.pack_into("<HH", data, i + 5, 65535, 65535)
    return _write(d, "header_bomb.gif", bytes(data))


def bmp_header_bomb(d: Path) -> Path:
    """A BMP whose header claims 50000x50000 pixels with almost no pixel data."""
    buf = io.BytesIO()
    _photo(16, 16).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    struct.pack_into("<ii", data, 18, 50000, 50000)
    return _write(d, "header_bomb.bmp", bytes(data))


def fifo(d: Path) -> Path:
    p = d / "fifo.jpg"
    os.mkfifo(p)
    return p


def dev_zero_link(d: Path) -> Path:
    p = d / "zero.jpg"
    p.symlink_to("/dev/zero")
    return p


def dev_null_link(d: Path) -> Path:
    p = d / "null.png"
    p.symlink_to("/dev/null")
    return p


def unix_socket(d: Path) -> Path:
    p = d / "socket.jpg"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(p))
    finally:
        s.close()
    return p


def symlink_loop(d: Path) -> Path:
    p = d / "loop.jpg"
    p.symlink_to(p.name)  # points at itself
    return p


def symlink_loop_pair(d: Path) -> Path:
    a, b = d / "loop_a.png", d / "loop_b.png"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a


def dangling_link(d: Path) -> Path:
    p = d / "dangling.jpg"
    p.symlink_to("does-not-exist.jpg")
    return p


def zero_bytes(d: Path) -> Path:
    return _write(d, "empty.jpg", b"")


def text_as_jpeg(d: Path) -> Path:
    return _write(d, "notes.jpg", b"this is not an image\n" * 10)


def html_as_png(d: Path) -> Path:
    return _write(d, "page.png", b"<html><script>alert(1)</script></html>")


def huge_sparse_file(d: Path) -> Path:
    """A 600 MB sparse file (no disk used) named .jpg: over the byte cap."""
    p = d / "huge.jpg"
    with open(p, "wb") as f:
        f.write(_jpeg_bytes())
        f.truncate(600 * 1024 * 1024)
    return p


def directory_named_jpg(d: Path) -> Path:
    p = d / "folder.jpg"
    p.mkdir()
    return p


def unreadable(d: Path) -> Path:
    p = _write(d, "secret.jpg", _jpeg_bytes())
    p.chmod(0)
    return p


def one_by_one(d: Path) -> Path:
    return _write(d, "pixel.png", _png_bytes(_photo(1, 1)))


def one_by_20000(d: Path) -> Path:
    return _write(d, "line.png", _png_bytes(Image.new("L", (20000, 1), 128)))


def wide_20000_by_8(d: Path) -> Path:
    """Fine before fitting (8 px high) but 500x0 after fitting into 500 px."""
    return _write(d, "strip.png", _png_bytes(Image.new("L", (20000, 8), 128)))


def corrupt_exif_jpeg(d: Path) -> Path:
    """A valid JPEG whose EXIF block is garbage (PIL warns about it)."""
    exif = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 64
    return _write(d, "bad_exif.jpg", _jpeg_bytes(exif=exif))


def png_huge_exif(d: Path) -> Path:
    """A valid PNG with a 4 MB eXIf chunk of garbage."""
    exif = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00" * (4 * 1024 * 1024)
    return _write(d, "huge_exif.png", _png_bytes(exif=exif))


def tiff_16bit(d: Path) -> Path:
    a = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21)
    p = d / "deep.tif"
    Image.fromarray(a).save(p, format="TIFF")
    return p


def cmyk_jpeg(d: Path) -> Path:
    return _write(d, "cmyk.jpg", _jpeg_bytes(_photo().convert("CMYK")))


def animated_gif(d: Path) -> Path:
    frames = [_photo().convert("P"), Image.new("P", (64, 48), 3)]
    p = d / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return p


def png_named_jpg(d: Path) -> Path:
    """A valid PNG with a .jpg name: decoded by content, it must load."""
    return _write(d, "really_png.jpg", _png_bytes())


def wrong_extension(d: Path) -> Path:
    return _write(d, "photo.txt", _jpeg_bytes())


def control_chars_name(d: Path) -> Path:
    """A valid image whose file name holds an escape sequence and a bidi override."""
    return _write(d, "evil\x1b[31m\u202eGNP.jpg", _jpeg_bytes())


Maker = Callable[[Path], Path]

#: name -> (maker, "error" | "ok")
IMAGE_CASES: dict[str, tuple[Maker, str]] = {
    "truncated JPEG": (truncated_jpeg, "error"),
    "13000x13000 PNG bomb": (png_bomb, "error"),
    "PNG header claims 60000x60000": (png_header_bomb, "error"),
    "JPEG header claims 65000x65000": (jpeg_header_bomb, "error"),
    "GIF header claims 65535x65535": (gif_header_bomb, "error"),
    "BMP header claims 50000x50000": (bmp_header_bomb, "error"),
    "FIFO named .jpg": (fifo, "error"),
    "symlink to /dev/zero": (dev_zero_link, "error"),
    "symlink to /dev/null": (dev_null_link, "error"),
    "unix socket named .jpg": (unix_socket, "error"),
    "symlink loop (self)": (symlink_loop, "error"),
    "symlink loop (pair)": (symlink_loop_pair, "error"),
    "dangling symlink": (dangling_link, "error"),
    "zero-byte file": (zero_bytes, "error"),
    "text named .jpg": (text_as_jpeg, "error"),
    "HTML named .png": (html_as_png, "error"),
    "600 MB sparse file": (huge_sparse_file, "error"),
    "directory named x.jpg": (directory_named_jpg, "error"),
    "unreadable (mode 000)": (unreadable, "error"),
    "1x1 image": (one_by_one, "error"),
    "20000x1 image": (one_by_20000, "error"),
    "20000x8 image (too thin once fitted)": (wide_20000_by_8, "error"),
    "wrong extension (.txt)": (wrong_extension, "error"),
    "corrupt EXIF JPEG": (corrupt_exif_jpeg, "ok"),
    "PNG with 4 MB EXIF": (png_huge_exif, "ok"),
    "16-bit TIFF": (tiff_16bit, "ok"),
    "CMYK JPEG": (cmyk_jpeg, "ok"),
    "animated GIF": (animated_gif, "ok"),
    "PNG named .jpg": (png_named_jpg, "ok"),
    "control characters in name": (control_chars_name, "ok"),
}


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def make_image(name: str, folder: Path) -> Path:
    """Make one case of :data:`IMAGE_CASES` in ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    return IMAGE_CASES[name][0](folder)


# ------------------------------------------------------------------ explanation damage


def _rewrite_json(js: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads(js.read_text(encoding="utf-8"))
    out = change(meta)
    js.write_text(json.dumps(meta if out is None else out), encoding="utf-8")


def _rewrite_npz(npz: Path, change: Callable[[dict], None], allow_pickle: bool = False) -> None:
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez_compressed(npz, **arrays)


def _npy_header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy member whose header claims ``shape`` but which holds almost no data."""
    return _hdr({"descr": dtype, "fortran_order": False, "shape": shape}) + b"\x00" * 64


def _hdr(header: dict) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _replace_member(npz: Path, member: str, payload: bytes) -> None:
    with zipfile.ZipFile(npz) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist() if i.filename != member]
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items:
            z.writestr(name, data)
        z.writestr(member, payload)


def _del(key: str) -> Callable[[dict], None]:
    def f(m: dict) -> None:
        m.pop(key, None)

    return f


def _settings(key: str, value: object) -> Callable[[dict], None]:
    """Store valid settings with one entry changed."""

    def f(m: dict) -> None:
        from capshap.settings import Settings

        m["settings"] = Settings().to_dict()
        m["settings"][key] = value

    return f


def _set(key: str, value: object) -> Callable[[dict], None]:
    def f(m: dict) -> None:
        m[key] = value

    return f


def _arr(key: str, f: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def g(a: dict) -> None:
        a[key] = f(a[key])

    return g


def _tree_shape(shape: list[int]) -> Callable[[dict], None]:
    def f(m: dict) -> None:
        m["tree"] = {"kind": "axis", "params": {}, "rebuild": "axis", "shape": shape}

    return f


def _nan_base(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).copy()
    a[0] = np.nan
    return a


Damage = Callable[[Path, Path], None]

#: name -> damage(npz, js)
EXPLANATION_CASES: dict[str, Damage] = {
    "JSON missing 'caption'": lambda n, j: _rewrite_json(j, _del("caption")),
    "JSON missing 'tokens'": lambda n, j: _rewrite_json(j, _del("tokens")),
    "JSON is a list": lambda n, j: _rewrite_json(j, lambda m: [m]),
    "JSON syntax error": lambda n, j: j.write_text('{"format": "capshap.explanation", ', encoding="utf-8"),
    "JSON not UTF-8": lambda n, j: j.write_bytes(b'{"caption": "\xff\xfe"}'),
    "caption is a number": lambda n, j: _rewrite_json(j, _set("caption", 42)),
    "tokens hold a dict": lambda n, j: _rewrite_json(j, _set("tokens", ["a", {"x": 1}])),
    "2 tokens for more value columns": lambda n, j: _rewrite_json(j, lambda m: m.__setitem__("tokens", m["tokens"][:2])),
    "params is a list": lambda n, j: _rewrite_json(j, _set("params", [1, 2])),
    "params is a string": lambda n, j: _rewrite_json(j, _set("params", "max_evals=5")),
    "settings is a string": lambda n, j: _rewrite_json(j, _set("settings", "fast")),
    "settings has an unknown key": lambda n, j: _rewrite_json(j, _settings("bogus", 1)),
    "settings has a bad value": lambda n, j: _rewrite_json(j, _settings("max_evals", "many")),
    "captions is a string": lambda n, j: _rewrite_json(j, _set("captions", "a bird")),
    "timings is a list": lambda n, j: _rewrite_json(j, _set("timings", [1.0])),
    "name is a list": lambda n, j: _rewrite_json(j, _set("name", ["x"])),
    "tree claims 100000x100000": lambda n, j: _rewrite_json(j, _tree_shape([100000, 100000])),
    "tree shape is text": lambda n, j: _rewrite_json(j, _tree_shape(["a", "b"])),
    "tree is a string": lambda n, j: _rewrite_json(j, _set("tree", "axis")),
    "format version from the future": lambda n, j: _rewrite_json(j, _set("version", 99)),
    "NaN base values": lambda n, j: _rewrite_npz(n, _arr("base_values", _nan_base)),
    "infinite outputs": lambda n, j: _rewrite_npz(n, _arr("outputs", lambda a: a * np.inf)),
    "complex values": lambda n, j: _rewrite_npz(n, _arr("values", lambda a: a.astype(np.complex64) * 1j)),
    "text values": lambda n, j: _rewrite_npz(n, _arr("values", lambda a: a.astype(str))),
    "object values (pickled)": lambda n, j: _replace_member(
        n, "values.npy", _pickled_object_array()),
    "values 2-D": lambda n, j: _rewrite_npz(n, _arr("values", lambda a: a[..., 0])),
    "image float": lambda n, j: _rewrite_npz(n, _arr("image", lambda a: a.astype(np.float64))),
    "image smaller than values": lambda n, j: _rewrite_npz(n, _arr("image", lambda a: a[1:, 1:])),
    "base values too short": lambda n, j: _rewrite_npz(n, _arr("base_values", lambda a: a[:1])),
    "node_values wrong width": lambda n, j: _rewrite_npz(n, _arr("node_values", lambda a: a[:, :1])),
    "nodes outside the tree": lambda n, j: _rewrite_npz(n, _arr("nodes", lambda a: a + 10**9)),
    "coalition lengths negative": lambda n, j: _rewrite_npz(n, _arr("coalition_lengths", lambda a: -a - 1)),
    "coalition lengths disagree": lambda n, j: _rewrite_npz(n, _arr("coalition_lengths", lambda a: a + 1)),
    "scores rows != coalitions": lambda n, j: _rewrite_npz(n, _arr("scores", lambda a: a[:1])),
    "missing 'values' member": lambda n, j: _rewrite_npz(n, lambda a: a.pop("values")),
    "member header claims 100000x100000x5": lambda n, j: _replace_member(
        n, "values.npy", _npy_header_only((100000, 100000, 5))),
    "npz truncated": lambda n, j: n.write_bytes(n.read_bytes()[: n.stat().st_size // 2]),
    "npz is text": lambda n, j: n.write_text("not a zip", encoding="utf-8"),
    "tree linkage wrong shape": lambda n, j: _rewrite_npz(n, _arr("tree_linkage", lambda a: a[:-1]))
    if "tree_linkage" in np.load(n).files else _rewrite_json(j, _tree_shape([3, 3])),
}


def _pickled_object_array() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def make_explanation(folder: Path, name: str = "exp", segments: bool = False):
    """Explain a small picture with a cheap function scorer and save it as ``folder/name``;
    returns ``(Explanation, npz path, json path)``. ``segments=True`` uses a segment tree
    (stored in the npz) instead of the axis-aligned tree (rebuilt from the JSON)."""
    from capshap import FunctionScorer, explain_image

    img = np.asarray(_photo(20, 16))
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 5))

    def f(batch: np.ndarray) -> np.ndarray:
        m = batch.reshape(len(batch), -1, 3).mean(1) / 255.0
        return np.tanh(m @ W)

    scorer = FunctionScorer(f, ["a", "bird", "on", "a", "wire"], caption="a bird on a wire")
    kw = {"tree": "slic", "n_segments": 8} if segments else {}
    exp = explain_image(img, scorer, max_evals=40, batch_size=16, name=name, **kw)
    npz, js = exp.save(folder / name)
    return exp, npz, js


def chmod_back(folder: Path) -> None:
    """Give back read permission to what :func:`unreadable` took it from (so tmp
    folders can be removed)."""
    for p in folder.rglob("*"):
        try:
            if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) == 0:
                p.chmod(0o600)
        except OSError:
            pass
