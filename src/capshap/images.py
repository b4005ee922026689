"""Image loading: read, validate, orient and fit images to uint8 RGB arrays.

Everything capshap explains is a uint8 RGB array of shape (H, W, 3). This module turns what
users have (file paths, bytes, PIL images, numpy arrays, folders of photos) into such arrays:

* :func:`load_image` loads one image from a path, bytes, a binary stream, a PIL image or an
  array, applies the EXIF orientation, converts it to RGB uint8 (see :func:`to_rgb_uint8`
  for the rules), checks its size and fits it into ``max_side`` pixels (500 by default, as
  in SHAP's image captioning notebook).
* :func:`iter_images` scans files and folders and yields one :class:`LoadedImage` per image
  file, in a deterministic order. Files that are not images are skipped with a warning;
  image files that fail to load are yielded with ``.error`` set, so one bad file never
  loses the others.
* :func:`fit` resizes an array so its longer side is at most ``max_side`` (never upscales).
* :func:`encode` encodes an array as JPEG or PNG bytes in memory (for cloud captioners).

Accepted files: JPEG (.jpg, .jpeg, .jfif), PNG, GIF (first frame), BMP, WebP and TIFF
(first page). Bad input raises :class:`ImageError`, a :class:`ValueError` whose message
starts with the file name and says what is wrong.

Untrusted files cannot exhaust memory or hang a run: only regular files are read (FIFOs,
devices such as ``/dev/zero``, sockets and link loops are refused from ``os.stat``, without
opening them), at most ``max_bytes`` (512 MiB) are read, and the pixel count is read from
the image header and checked against ``max_pixels`` (50 M) before anything is decoded.
PIL's warnings (corrupt EXIF data, ...) are logged with the file's name. None of this
changes PIL's process-wide settings (``PIL.Image.MAX_IMAGE_PIXELS`` is left alone).

Colour handling in short: grey and palette images become RGB; transparency (RGBA, LA,
palette or grey with a transparent colour) is composited onto a *white* background;
16-bit images are scaled to 8 bits (``round(v / 257)``); float images with all values in
[0, 1] are scaled by 255, other floats are clipped to [0, 255]. Embedded ICC colour
profiles are ignored (pixel values are taken as sRGB).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path, PurePath
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_SIDE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
    "ImageError",
    "LoadedImage",
    "load_image",
    "open_image_file",
    "fit",
    "check_rgb",
    "check_batch",
    "image_names",
    "to_rgb_uint8",
    "iter_images",
    "is_image_path",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case, with the dot) that :func:`load_image` and
#: :func:`iter_images` accept. Matching is case-insensitive (".JPG" is fine).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
)

#: Default longest side, in pixels, images are fitted into (as in SHAP's notebook).
DEFAULT_MAX_SIDE = 500
#: Default minimum width and height, in pixels, of an image.
DEFAULT_MIN_SIDE = 8
#: Default largest image, in pixels (width x height), that is decoded. The size is read
#: from the file's header and checked before any pixel is decoded, so a tiny file that
#: claims a huge image (a decompression bomb) costs nothing. 50 M pixels is a 8660x5773
#: photo; decoded it takes 150 MB as RGB, more during colour conversion.
DEFAULT_MAX_PIXELS = 50_000_000
#: Default largest file, in bytes, that is read (512 MiB). Larger files are refused before
#: reading; no more than this is ever read from a file or stream.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

# PIL decoders tried on file contents: the formats of IMAGE_EXTENSIONS, nothing else.
# (Multi-picture JPEGs from cameras, MPO, open through the JPEG decoder.)
_PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")

PathLike = Union[str, "os.PathLike[str]"]
ImageSource = Union[PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, Any]


class ImageError(ValueError):
    """An image that cannot be used: unsupported, unreadable, empty, too small or missing.

    ``str(err)`` is ``"<source>: <reason>"``, e.g.
    ``"cat.txt: unsupported file type '.txt' (accepted: .jpg, .jpeg, ...)"``.

    Attributes
    ----------
    source : str
        The file path as given, or a label such as ``"<bytes>"`` or ``"<array>"``.
    reason : str
        What is wrong, and where possible what to do about it.
    """

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):  # keep it picklable despite the two-argument constructor
        return (type(self), (self.source, self.reason))


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """One image file found by :func:`iter_images`.

    Attributes
    ----------
    name : str
        The file's name; for files found inside a folder, the path relative to that folder
        in POSIX form (``"sub/cat.jpg"``), so names stay unique in recursive scans.
    path : pathlib.Path
        The file's path (the folder given joined with the relative name; not resolved).
    array : np.ndarray or None
        (H, W, 3) uint8 RGB, oriented and fitted to ``max_side``; None when loading failed.
    original_size : tuple[int, int] or None
        (height, width) in pixels before fitting, after EXIF orientation (numpy order, like
        ``array.shape[:2]``); None when loading failed.
    error : ImageError or None
        Why the file could not be loaded; None when it loaded.
    """

    name: str
    path: Path
    array: np.ndarray | None = None
    original_size: tuple[int, int] | None = None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        """True when the image loaded (``array`` is set, ``error`` is None)."""
        return self.error is None


# --------------------------------------------------------------------------- options


def _check_side(value: Any, option: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        what = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{option} must be {what} (pixels), got {value!r}")
    return int(value)


def _check_options(max_side: Any, min_side: Any) -> tuple[int | None, int]:
    max_s = _check_side(max_side, "max_side", allow_none=True)
    min_s = _check_side(min_side, "min_side", allow_none=False)
    assert min_s is not None
    if max_s is not None and max_s < min_s:
        raise ValueError(
            f"max_side={max_s} is smaller than min_side={min_s}: every image would be "
            "rejected; raise max_side or lower min_side"
        )
    return max_s, min_s


def _check_limit(value: Any, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Limits:
    """What one load may cost: ``pixels`` (width x height) and ``bytes`` read."""

    pixels: int = DEFAULT_MAX_PIXELS
    bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def check(cls, max_pixels: Any, max_bytes: Any) -> "_Limits":
        return cls(_check_limit(max_pixels, "max_pixels", 64), _check_limit(max_bytes, "max_bytes", 1))


# ----------------------------------------------------------------------- conversions


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB over a white background."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _values_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """Any real array -> uint8 of the same shape, by the dtype rules of to_rgb_uint8."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint16:
        return np.rint(a / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ImageError(what, "image contains NaN or infinite values")
        if f.size and f.min() >= 0.0 and f.max() <= 1.0:
            f = f * 255.0
        return np.rint(np.clip(f, 0.0, 255.0)).astype(np.uint8)
    raise ImageError(
        what,
        f"unsupported array dtype {a.dtype}; use uint8 (0-255), uint16, another integer "
        "type (clipped to 0-255), bool, or float (0-1 or 0-255)",
    )


class ArrayDtypeError(TypeError, ValueError):
    """An image array of the wrong dtype (both a TypeError and a ValueError)."""


def check_rgb(image: Any, who: str, index: int | None = None) -> np.ndarray:
    """``image`` as a C-contiguous uint8 (H, W, 3) array, or an error saying who needs it.

    Unlike :func:`to_rgb_uint8` nothing is converted: models and maskers get exactly the
    pixels the explainer made. Raises :class:`ArrayDtypeError` (a TypeError and a
    ValueError) for another dtype, ValueError for another shape or an empty image; the
    message names ``who`` and, in a batch, the ``index``.
    """
    a = np.asarray(image)
    label = f"{who}: image {index}" if index is not None else who
    if a.dtype != np.uint8:
        raise ArrayDtypeError(f"{label} has dtype {a.dtype}; expected uint8 RGB (H, W, 3) "
                        "(convert with np.clip(x, 0, 255).astype(np.uint8))")
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{label} has shape {a.shape}; expected uint8 RGB (H, W, 3)")
    return np.ascontiguousarray(a)


def check_batch(images: Any, who: str) -> list[np.ndarray]:
    """Each image of a batch through :func:`check_rgb` -> a list of (H, W, 3) uint8 arrays."""
    return [check_rgb(im, who, i) for i, im in enumerate(images)]


def to_rgb_uint8(array: Any, *, name: str = "<array>") -> np.ndarray:
    """Convert an image array to uint8 RGB, shape (H, W, 3).

    Shapes: (H, W) and (H, W, 1) are grey and copied to three channels; (H, W, 2) is grey
    plus alpha; (H, W, 3) is RGB; (H, W, 4) is RGBA. Alpha is composited onto a white
    background (a fully transparent pixel becomes (255, 255, 255)).

    Values, by dtype: uint8 as is; bool -> 0 / 255; uint16 scaled to 8 bits as
    ``round(v / 257)`` (65535 -> 255); other integer types clipped to [0, 255]; floats
    scaled by 255 when every value lies in [0, 1], otherwise clipped to [0, 255], then
    rounded. NaN or infinite values are an error.

    Returns the input itself (no copy) when it already is a C-contiguous uint8 (H, W, 3)
    array. Raises :class:`ImageError` (labelled ``name``) for other shapes or dtypes.
    """
    a = np.asarray(array)
    shape = tuple(a.shape)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        hint = ""
        if a.ndim == 3 and a.shape[0] in (1, 3, 4):
            hint = "; for a channels-first array use np.moveaxis(array, 0, -1)"
        elif a.ndim == 4:
            hint = "; pass one image at a time, not a batch"
        raise ImageError(
            name,
            f"array of shape {shape} is not an image; expected (H, W), (H, W, 1), "
            f"(H, W, 2), (H, W, 3) or (H, W, 4){hint}",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(name, f"image array is empty (shape {shape})")
    a = _values_to_uint8(a, name)
    c = a.shape[2]
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c == 2:
        a = _composite_on_white(np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2))
    elif c == 4:
        a = _composite_on_white(a)
    return np.ascontiguousarray(a)


def _pil_to_array(im: Image.Image, label: str) -> np.ndarray:
    """Oriented PIL image of any mode -> (H, W, 3) uint8."""
    mode = im.mode
    if mode.startswith("I;16"):
        return to_rgb_uint8(np.asarray(im).astype(np.uint16), name=label)
    if mode in ("I", "I;32", "I;32L", "I;32B"):
        a = np.asarray(im).astype(np.int64)
        # 32-bit integer images: treat as 16-bit when values exceed 8 bits.
        if a.size and a.max() > 255:
            a = np.clip(a, 0, 65535).astype(np.uint16)
        return to_rgb_uint8(a, name=label)
    if mode == "F":
        return to_rgb_uint8(np.asarray(im), name=label)
    # has_transparency_data needs Pillow >= 10.1; older ones keep a transparent colour in info
    transparent = getattr(im, "has_transparency_data", "transparency" in im.info)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or transparent:
        return _composite_on_white(np.asarray(im.convert("RGBA")))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _orient(im: Image.Image, label: str) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(im)
    except Exception as exc:  # malformed EXIF must not cost the image
        logger.warning("%s: could not apply EXIF orientation (%s); using the image as stored", label, exc)
        return im
    return out if out is not None else im


def _pixels_error(label: str, w: int, h: int, max_pixels: int) -> ImageError:
    return ImageError(
        label,
        f"image is {w}x{h} px (width x height), {w * h:,} pixels, more than the limit of "
        f"{max_pixels:,} (max_pixels); shrink the image first, or raise the limit "
        "(max_pixels=, --max-pixels) if you trust the file and have the memory",
    )


@contextmanager
def _pil_warnings(label: str) -> Iterator[None]:
    """Catch the warnings PIL raises while decoding (corrupt EXIF, truncated TIFF tags,
    decompression bombs ...) and log them with the file's name instead of letting them
    reach the terminal raw.

    Note: ``warnings.catch_warnings`` swaps the process-wide warning filters for the
    duration (Python offers nothing narrower before 3.14); it is only entered around
    PIL calls and restores the filters on exit.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        level = logging.DEBUG if issubclass(w.category, Image.DecompressionBombWarning) else logging.WARNING
        logger.log(level, "%s: %s: %s", _printable(label), w.category.__name__, _printable(str(w.message)))


def _printable(text: str) -> str:
    from capshap.text import printable

    return printable(text, 300)


def _decode(data: bytes, label: str, max_pixels: int = DEFAULT_MAX_PIXELS, any_format: bool = False) -> Image.Image:
    """Encoded bytes -> loaded PIL image (first frame/page), or ImageError.

    The image's size is read from its header and checked against ``max_pixels`` before
    any pixel is decoded. Call inside :func:`_pil_warnings`.
    """
    if len(data) == 0:
        raise ImageError(label, "file is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=None if any_format else list(_PIL_FORMATS))
    except UnidentifiedImageError:
        raise ImageError(label, "not a readable image (cannot identify image file)") from None
    except Image.DecompressionBombError as exc:
        # PIL's own process-wide limit (2 x Image.MAX_IMAGE_PIXELS) fired before ours could
        m = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"{int(m.group(1)):,} pixels" if m else "more pixels than PIL allows"
        raise ImageError(
            label,
            f"image header claims {claimed}, more than the limit of {max_pixels:,} (max_pixels) "
            "or PIL's own limit (PIL.Image.MAX_IMAGE_PIXELS); not decoded (a decompression "
            "bomb or a damaged file)",
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # PIL raises many types on corrupt headers
        raise ImageError(label, f"not a readable image ({exc or type(exc).__name__})") from exc
    try:
        w, h = im.size
        if w * h > max_pixels:
            raise _pixels_error(label, w, h, max_pixels)
        im.load()
    except ImageError:
        im.close()
        raise
    except Image.DecompressionBombError as exc:
        im.close()
        raise ImageError(label, f"image is too large to decode safely ({exc})") from None
    except MemoryError:
        im.close()
        raise
    except Exception as exc:  # PIL raises many types on corrupt data
        im.close()
        raise ImageError(label, f"not a readable image ({exc or type(exc).__name__})") from exc
    return im


def _size_error(label: str, w: int, h: int, min_side: int) -> ImageError:
    return ImageError(
        label,
        f"image is {w}x{h} px (width x height), smaller than the minimum "
        f"{min_side}x{min_side}; use a larger image or lower min_side",
    )


def _file_kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _stat(path: Path, label: str) -> os.stat_result:
    """``os.stat`` (following links) with an ImageError that says what is wrong."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(label, "symbolic link loop (the link leads back to itself); fix or remove the link") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                target = os.readlink(path)
                raise ImageError(label, f"broken symbolic link (its target {target!r} does not exist)") from None
            raise ImageError(label, "no such file or directory") from None
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None


def _check_regular(st: os.stat_result, label: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(label, f"is {_file_kind(st.st_mode)}, not an image file; only regular files are read")
    if st.st_size > max_bytes:
        raise _bytes_error(label, f"file is {st.st_size:,} bytes", max_bytes)


def _bytes_error(label: str, what: str, max_bytes: int) -> ImageError:
    return ImageError(
        label,
        f"{what}, more than the limit of {max_bytes:,} bytes ({max_bytes / 2**20:.0f} MiB, "
        "max_bytes); no image file needs that much, so it is not read",
    )


def _read_path(path: Path, label: str, max_bytes: int = DEFAULT_MAX_BYTES, check_ext: bool = True) -> bytes:
    """Read an image file: regular files only (never FIFOs, devices or sockets, which
    could block or never end), at most ``max_bytes``."""
    st = _stat(path, label)
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(label, "is a folder, not an image file; use iter_images() to load a folder")
    ext = path.suffix.lower()
    if check_ext and ext not in IMAGE_EXTENSIONS:
        raise ImageError(label, _unsupported_reason(path))
    _check_regular(st, label, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    with open(fd, "rb", closefd=True) as f:
        # the file may have been swapped between stat and open: check what was opened
        _check_regular(os.fstat(f.fileno()), label, max_bytes)
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise _bytes_error(label, "file grew while being read", max_bytes)
    return data


def _unsupported_reason(path: PurePath) -> str:
    accepted = ", ".join(IMAGE_EXTENSIONS)
    ext = path.suffix
    what = f"'{ext}'" if ext else "'' (no extension)"
    return f"unsupported file type {what} (accepted: {accepted})"


def _load(
    src: ImageSource,
    max_side: int | None,
    min_side: int,
    name: str | None,
    limits: _Limits = _Limits(),
) -> tuple[np.ndarray, tuple[int, int]]:
    """Load any source -> ((H, W, 3) uint8 fitted, (height, width) before fitting)."""
    if isinstance(src, np.ndarray):
        label = name or "<array>"
        if src.ndim >= 2 and src.shape[0] * src.shape[1] > limits.pixels:
            raise _pixels_error(label, src.shape[1], src.shape[0], limits.pixels)
        arr = to_rgb_uint8(src, name=label)
        if np.shares_memory(arr, src):
            arr = arr.copy()  # never hand back (or later modify) the caller's buffer
    elif isinstance(src, Image.Image):
        label = name or str(getattr(src, "filename", "") or "<PIL image>")
        w, h = src.size
        if w * h > limits.pixels:
            raise _pixels_error(label, w, h, limits.pixels)
        with _pil_warnings(label):
            arr = _pil_to_array(_orient(src, label), label)
    else:
        if isinstance(src, (str, os.PathLike)):
            label = name or os.fspath(src)
            data = _read_path(Path(os.fspath(src)).expanduser(), label, limits.bytes)
        elif isinstance(src, (bytes, bytearray, memoryview)):
            label = name or "<bytes>"
            if len(src) > limits.bytes:
                raise _bytes_error(label, f"data is {len(src):,} bytes", limits.bytes)
            data = bytes(src)
        elif callable(getattr(src, "read", None)):
            label = name or str(getattr(src, "name", "") or "<stream>")
            data = src.read(limits.bytes + 1)
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"{label}: stream must be opened in binary mode ('rb'), read() returned {type(data).__name__}")
            if len(data) > limits.bytes:
                raise _bytes_error(label, "stream holds more", limits.bytes)
            data = bytes(data)
        else:
            raise TypeError(
                "image source must be a path (str or pathlib.Path), bytes, a binary file "
                f"object, a PIL image or a numpy array, got {type(src).__name__}"
            )
        with _pil_warnings(label):
            im = _decode(data, label, limits.pixels)
            try:
                arr = _pil_to_array(_orient(im, label), label)
            except ImageError:
                raise
            except MemoryError:
                raise
            except Exception as exc:
                raise ImageError(label, f"not a readable image ({exc or type(exc).__name__})") from exc
            finally:
                im.close()
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        raise _size_error(label, w, h, min_side)
    out = fit(arr, max_side)
    fh, fw = out.shape[:2]
    if min(fh, fw) < min_side:
        raise ImageError(
            label,
            f"image is {w}x{h} px (width x height); fitting it into max_side={max_side} makes "
            f"it {fw}x{fh}, smaller than the minimum {min_side}x{min_side}; crop it, raise "
            "max_side or lower min_side",
        )
    return out, (h, w)


def load_image(
    src: ImageSource,
    max_side: int | None = DEFAULT_MAX_SIDE,
    min_side: int = DEFAULT_MIN_SIDE,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Load one image as a uint8 RGB array of shape (H, W, 3).

    Parameters
    ----------
    src
        A path (str or pathlib.Path) to a file with an extension in
        :data:`IMAGE_EXTENSIONS`; encoded bytes; a binary file object; a PIL image; or a
        numpy array (converted by :func:`to_rgb_uint8`). Files and bytes are decoded by
        content (only JPEG, PNG, GIF, BMP, WebP and TIFF); GIF/WebP animations and
        multi-page TIFFs give their first frame. The EXIF orientation of files, bytes and
        PIL images is applied.
    max_side
        Longest side in pixels after loading: larger images are downscaled with aspect
        ratio kept (see :func:`fit`); smaller ones are never upscaled. None keeps the size.
    min_side
        Minimum width and height in pixels, checked before and after fitting.
    name
        Label for error messages; default: the path as given, or ``"<bytes>"``,
        ``"<array>"``, ``"<PIL image>"``, ``"<stream>"``.
    max_pixels
        Largest image accepted, in pixels (width x height, before fitting); checked from
        the file's header before decoding, so decompression bombs cost nothing. Default
        :data:`DEFAULT_MAX_PIXELS` (50 M). PIL's own process-wide limit
        (``PIL.Image.MAX_IMAGE_PIXELS``, about 179 M pixels for an error) still applies
        above this; capshap never changes it.
    max_bytes
        Largest file, byte string or stream accepted, in bytes (default
        :data:`DEFAULT_MAX_BYTES`, 512 MiB); never more is read.

    Only regular files are read: a path that is (or links to) a FIFO, a device such as
    ``/dev/zero``, a socket, a folder, a broken link or a link loop is refused from its
    ``os.stat`` without being opened for reading. Warnings PIL raises while decoding
    (corrupt EXIF data, ...) are logged (logger ``capshap.images``) with the file's name,
    not printed.

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8, C-contiguous, never sharing memory with an input array.

    Raises
    ------
    ImageError
        Missing path, folder, link loop, not a regular file, unsupported extension, empty
        file, file over ``max_bytes``, image over ``max_pixels``, undecodable content,
        unusable array, or an image smaller than ``min_side``. The message names the file.
    ValueError, TypeError
        Invalid ``max_side``/``min_side``/``max_pixels``/``max_bytes`` or an unsupported
        kind of ``src``.
    """
    max_s, min_s = _check_options(max_side, min_side)
    limits = _Limits.check(max_pixels, max_bytes)
    return _load(src, max_s, min_s, name, limits)[0]


def open_image_file(
    path: PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> Image.Image:
    """Read and decode one image file as a loaded PIL image in its own mode (palette, 16-bit
    ...), with the safety of :func:`load_image`: regular files only, at most ``max_bytes``
    read, the pixel count checked from the header against ``max_pixels`` before decoding,
    PIL's warnings logged. For callers that need the stored values, such as label maps;
    any format PIL knows is accepted, whatever the extension. The caller closes the image.

    Raises :class:`ImageError` naming the file.
    """
    limits = _Limits.check(max_pixels, max_bytes)
    label = name or os.fspath(path)
    data = _read_path(Path(os.fspath(path)).expanduser(), label, limits.bytes, check_ext=False)
    with _pil_warnings(label):
        return _decode(data, label, limits.pixels, any_format=True)


# -------------------------------------------------------------------------- resizing


def fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale ``image`` so its longer side is at most ``max_side`` pixels.

    ``image`` is (H, W) or (H, W, C) uint8 (normally (H, W, 3)). The aspect ratio is kept:
    the longer side becomes exactly ``max_side``, the shorter one ``round(short *
    max_side / long)`` (at least 1). Resampling is OpenCV's INTER_AREA (pixel-area
    averaging, free of aliasing and ringing when shrinking). Images that already fit, and
    every image when ``max_side`` is None, are returned unchanged (the same object); the
    function never upscales.
    """
    max_s = _check_side(max_side, "max_side", allow_none=True)
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise ValueError(f"fit() expects an image of shape (H, W) or (H, W, C), got shape {a.shape}")
    h, w = a.shape[:2]
    if max_s is None or max(h, w) <= max_s:
        return image
    long_, short = max(h, w), min(h, w)
    new_short = max(1, (2 * short * max_s + long_) // (2 * long_))  # round half up, ints
    new_h, new_w = (max_s, new_short) if h >= w else (new_short, max_s)
    out = cv2.resize(np.ascontiguousarray(a), (new_w, new_h), interpolation=cv2.INTER_AREA)
    if a.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
        out = out[..., None]
    return out


# ----------------------------------------------------------------------- folder scan


def is_image_path(path: PathLike) -> bool:
    """True when ``path`` has an extension in :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return PurePath(os.fspath(path)).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(rel: PurePath) -> tuple:
    """Sort key: path parts compared case-insensitively with digit runs as numbers
    ("img2" < "img10"), then the raw path to break ties deterministically."""
    parts = tuple(
        tuple(int(c) if i % 2 else c for i, c in enumerate(re.split(r"(\d+)", p.casefold())))
        for p in rel.parts
    )
    return parts, rel.as_posix()


def image_names(paths: PathLike | Iterable[PathLike], recursive: bool = False) -> list[str]:
    """The names :func:`iter_images` will give the image files in ``paths``, without loading
    them (for counting and for matching user segmentations to images)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    names = []
    for p in items:
        path = Path(p).expanduser()
        if path.is_dir():
            names += [r.as_posix() for r in _scan_folder(path, recursive) if is_image_path(r)]
        elif is_image_path(path):
            names.append(path.name)
    return names


def _scan_folder(folder: Path, recursive: bool) -> list[PurePath]:
    """Relative paths of the non-hidden files in ``folder``, in natural sorted order.

    Links are not followed into folders (so folder link loops cannot recurse); entries
    whose type cannot be read (a link loop, a vanished file) are kept as files, for the
    loader to report. Subfolders that cannot be read are logged and skipped; an
    unreadable ``folder`` itself raises :class:`ImageError`.
    """
    found: list[PurePath] = []
    if recursive:
        def skipped(exc: OSError) -> None:
            where = exc.filename if exc.filename is not None else folder
            if os.path.normpath(str(where)) == os.path.normpath(str(folder)):
                raise ImageError(str(folder), f"cannot read folder ({exc.strerror or exc})")
            logger.warning("Skipping folder %s: cannot read it (%s)", _printable(str(where)), exc.strerror or exc)

        for root, dirs, files in os.walk(folder, followlinks=False, onerror=skipped):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel_root = PurePath(os.path.relpath(root, folder))
            for f in files:
                if not f.startswith("."):
                    found.append(rel_root / f if rel_root != PurePath(".") else PurePath(f))
    else:
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise ImageError(str(folder), f"cannot read folder ({exc.strerror or exc})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop: keep it, the loader says what is wrong
                is_dir = False
            if is_dir:
                logger.info("Skipping folder %s (pass recursive=True to scan subfolders)", _printable(entry.path))
                continue
            found.append(PurePath(entry.name))
    found.sort(key=_natural_key)
    return found


def iter_images(
    paths: PathLike | Iterable[PathLike],
    max_side: int | None = DEFAULT_MAX_SIDE,
    recursive: bool = False,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[LoadedImage]:
    """Load every image in some files and folders, one :class:`LoadedImage` at a time.

    Parameters
    ----------
    paths
        One path or a list of paths, each a file or a folder. The given order is kept;
        inside a folder, files come in natural sorted order of their relative paths
        (case-insensitive, digit runs as numbers: ``img2.jpg`` before ``img10.jpg``), so
        the order is the same on every run and platform. A file reached twice is yielded once.
    max_side, min_side, max_pixels, max_bytes
        As in :func:`load_image`: every file is checked against them (regular files only,
        at most ``max_bytes`` read, at most ``max_pixels`` decoded).
    recursive
        Also scan subfolders (hidden ones excluded).

    Yields
    ------
    LoadedImage
        One per image file, lazily (one image in memory at a time). A file with an image
        extension that fails to load (corrupt, empty, too small) is yielded with ``error``
        set and ``array`` None, and logged as a warning; iteration goes on.

    Files inside folders that have no image extension are skipped with a logging warning
    naming them ("Skipping ...: invalid file extension"); hidden files and folders (names
    starting with ".") are skipped silently. A path given explicitly with a non-image
    extension is yielded as an error record (and logged), as the caller asked for it.

    Raises
    ------
    ImageError
        At call time, before anything is loaded, when a given path does not exist.

    A folder (or a file in it) that cannot be read, link loops and links to devices are
    reported (a logged warning, and an error record for image files), never raised
    midway, so one bad entry never loses the others.
    """
    max_s, min_s = _check_options(max_side, min_side)
    limits = _Limits.check(max_pixels, max_bytes)
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    else:
        items = list(paths)
    given: list[tuple[str, Path]] = []
    for p in items:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"iter_images() paths must be str or pathlib.Path, got {type(p).__name__}")
        label = os.fspath(p)
        path = Path(label).expanduser()
        if not path.exists() and not path.is_symlink():
            raise ImageError(label, "no such file or directory")
        given.append((label, path))
    return _iter(given, max_s, min_s, recursive, limits)


def _iter(
    given: list[tuple[str, Path]], max_side: int | None, min_side: int, recursive: bool, limits: _Limits
) -> Iterator[LoadedImage]:
    seen: set[str] = set()

    def once(path: Path) -> bool:
        # broken links and link loops have no real path: key them by their own
        key = os.path.normcase(os.path.realpath(path) if os.path.exists(path) else os.path.abspath(path))
        if key in seen:
            logger.debug("Skipping %s: already loaded", _printable(str(path)))
            return False
        seen.add(key)
        return True

    for label, path in given:
        if path.is_dir():
            try:
                rels = _scan_folder(path, recursive)
            except ImageError as err:
                logger.debug("Skipping %s", _printable(str(err)))  # an error record: the caller reports it
                yield LoadedImage(name=path.name or label, path=path, error=err)
                continue
            n_images = 0
            for rel in rels:
                file = path / rel
                if not is_image_path(rel):  # notes, notebooks, ...: skipped quietly
                    logger.debug("skipped %s: not an image file", _printable(str(file)))
                    continue
                n_images += 1
                if once(file):
                    yield _load_record(rel.as_posix(), file, max_side, min_side, limits)
            if n_images == 0:
                logger.warning("No image files found in %s", label)
        else:
            if not is_image_path(path):
                err = ImageError(label, _unsupported_reason(path))
                logger.debug("Skipping %s", _printable(str(err)))  # an error record: the caller reports it
                yield LoadedImage(name=path.name, path=path, error=err)
                continue
            if once(path):
                yield _load_record(path.name, path, max_side, min_side, limits, label)


def _load_record(
    name: str, path: Path, max_side: int | None, min_side: int, limits: _Limits, label: str | None = None
) -> LoadedImage:
    try:
        arr, size = _load(path, max_side, min_side, label or str(path), limits)
    except ImageError as err:
        logger.debug("Could not load %s", _printable(str(err)))  # an error record: the caller reports it
        return LoadedImage(name=name, path=path, error=err)
    except MemoryError:  # one image must not lose the others
        err = ImageError(label or str(path), "ran out of memory while loading it; lower max_pixels or max_side")
        logger.debug("Could not load %s", _printable(str(err)))
        return LoadedImage(name=name, path=path, error=err)
    return LoadedImage(name=name, path=path, array=arr, original_size=size)
