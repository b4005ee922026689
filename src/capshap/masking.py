"""Maskers: turn a coalition of tree nodes into a masked image.

Fill options (``fill=``), one registration each in :data:`FILLS`:

- ``"inpaint_ns"`` / ``"inpaint_telea"``: cv2.inpaint with radius 3 over the hidden pixels;
  with every pixel hidden, the per-channel mean (as ``shap.maskers.Image`` does).
- ``"blur(kx,ky)"``: a box-blurred copy (cv2.blur), computed once per image.
- a number in [0, 255], e.g. ``0`` or ``"127.5"``: that grey level (truncated to uint8).
- an RGB colour: a tuple ``(r, g, b)``, ``"r,g,b"`` or ``"#rrggbb"``.
- a background image: a uint8 array of the image's shape.

At full resolution (``render_size=None``) the pixels equal ``shap.maskers.Image``'s for
the same image and visibility mask.

Render size. A captioner resizes every image to its input size before its model sees it
(the built-in one to 224x224, BLIP to 384x384), so masks of a 500 px photo can be rendered
at that size instead: the image is resized once (Pillow bicubic, antialiased), each
coalition's visibility is mapped to the small grid (a rendered pixel is visible when the
full-resolution pixel under its centre is), and the fill runs there (inpainting at 224 px
costs a fifth of inpainting at 500 px). Backgrounds (blur, colours, images) are made at full
resolution and resized once, so a blur kernel keeps its size in image pixels. The tree and
the values stay at full resolution. :func:`render_shape` picks the size from a
``render_size`` setting and the captioner.

Inpainting is cropped: cv2.inpaint only reads known pixels near hidden ones, so it runs on
the hidden pixels' bounding box plus a margin (:data:`CROP_MARGIN`) and gives the same
pixels as the full-image call (checked over thousands of random coalitions in the tests).

Batches are rendered in parallel threads (OpenCV and numpy release the GIL);
:meth:`Masker.render_iter` renders the next chunk of a batch while the caller scores the
current one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:  # only for annotations: importing the regions package loads OpenCV and Pillow
    from capshap.interfaces import Captioner
    from capshap.regions.tree import Tree


def _cv2() -> Any:
    """OpenCV, imported on first use (``import capshap.masking`` stays light for the CLI's help)."""
    import cv2

    return cv2

__all__ = [
    "Masker",
    "Fill",
    "FillKind",
    "FILLS",
    "make_fill",
    "parse_fill",
    "fill_help",
    "render_shape",
    "thread_split",
    "CROP_MARGIN",
    "INPAINT_RADIUS",
]

Fill = Union[str, float, int, tuple, np.ndarray]
"""What ``fill=`` accepts: a fill spec (see the module docstring) or a :class:`FillKind`."""

INPAINT_RADIUS = 3
"""cv2.inpaint's neighbourhood radius, as shap.maskers.Image uses it."""

CROP_MARGIN = 2 * INPAINT_RADIUS + 2
"""Pixels kept around the hidden pixels' bounding box when inpainting a crop.

Both OpenCV methods fill a hidden pixel from pixels within ``radius`` of it (hidden ones
filled earlier, known ones read), gradients look one pixel further, and TELEA's distance
field outside the mask is marched over the mask dilated by ``radius``; OpenCV pads its
work arrays by one pixel. ``2 * radius + 2`` keeps every pixel any of these reads inside
the crop, so the crop's edge never acts as an image edge where the full call had pixels.
Checked empirically in tests/test_masking.py and benchmarks/crop_inpaint.py.
"""


# -- fills ------------------------------------------------------------------------------


class FillKind:
    """A way to fill hidden pixels.

    Attributes
    ----------
    kind : str
        Short name ("inpaint_ns", "blur", "value", "image", ...), as :func:`parse_fill` returns.
    value : Any
        The parsed argument (kernel, grey level or colour, background array) or None.
    """

    kind: str = ""
    value: Any = None

    def prepared(self, image: np.ndarray, size: tuple[int, int] | None = None) -> "FillKind":
        """This fill made ready for ``image`` (H, W, 3) uint8 rendered at ``size`` (h, w)
        (None: full size), e.g. with its background computed once. Default: itself."""
        return self

    def render(self, image: np.ndarray, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Fill the hidden pixels of ``image``: visible (h, w) or (h, w, 3) bool -> (h, w, 3) uint8."""
        raise NotImplementedError


class InpaintFill(FillKind):
    """cv2.inpaint (NS or TELEA, radius 3) over the hidden pixels, on a crop around them."""

    def __init__(self, kind: str, flag: int | None = None, crop: bool = True):
        self.kind = kind
        self.flag = flag  # cv2.INPAINT_NS / INPAINT_TELEA; None: from the kind
        self.crop = crop

    def render(self, image: np.ndarray, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        cv2 = _cv2()
        if self.flag is None:
            self.flag = cv2.INPAINT_TELEA if self.kind == "inpaint_telea" else cv2.INPAINT_NS
        if out is None:
            out = np.empty_like(image)
        hidden = ~visible if visible.ndim == 2 else ~visible.all(axis=2)
        rows = np.flatnonzero(hidden.any(axis=1))
        if rows.size == 0:
            out[...] = image
            return out
        if rows.size == hidden.shape[0] and hidden.all():
            out[...] = image.mean(axis=(0, 1))  # truncated to uint8, as shap
            return out
        cols = np.flatnonzero(hidden[rows[0] : rows[-1] + 1].any(axis=0))
        H, W = hidden.shape
        m = CROP_MARGIN
        y0, y1 = max(0, rows[0] - m), min(H, rows[-1] + 1 + m)
        x0, x1 = max(0, cols[0] - m), min(W, cols[-1] + 1 + m)
        if not self.crop or (y1 - y0) * (x1 - x0) > 0.7 * H * W:
            out[...] = cv2.inpaint(image, hidden.view(np.uint8), INPAINT_RADIUS, self.flag)
            return out
        np.copyto(out, image)
        sub_img = np.ascontiguousarray(image[y0:y1, x0:x1])
        sub_mask = np.ascontiguousarray(hidden[y0:y1, x0:x1]).view(np.uint8)
        out[y0:y1, x0:x1] = cv2.inpaint(sub_img, sub_mask, INPAINT_RADIUS, self.flag)
        return out


class BackgroundFill(FillKind):
    """Hidden pixels come from a background image of the rendered size."""

    def __init__(self, kind: str, value: Any, background: np.ndarray | None = None):
        self.kind = kind
        self.value = value
        self.background = background

    def make_background(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 background for the full-size image."""
        raise NotImplementedError

    def prepared(self, image: np.ndarray, size: tuple[int, int] | None = None) -> "FillKind":
        bg = self.make_background(image)
        if size is not None and tuple(size) != bg.shape[:2]:
            bg = _resize(bg, size)
        return BackgroundFill(self.kind, self.value, bg)

    def render(self, image: np.ndarray, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        bg = self.background
        if bg is None:
            bg = self.make_background(image)
        if out is None:
            out = np.empty_like(image)
        if visible.ndim == 2:
            np.copyto(out, bg)
            _cv2().copyTo(image, visible.view(np.uint8), out)
        else:
            np.copyto(out, np.where(visible, image, bg))
        return out


class BlurFill(BackgroundFill):
    """A box-blurred copy of the image (kernel in full-resolution pixels)."""

    def make_background(self, image: np.ndarray) -> np.ndarray:
        return _cv2().blur(image, self.value)


class ValueFill(BackgroundFill):
    """A grey level (float) or an RGB colour ((3,) float array), truncated to uint8."""

    def make_background(self, image: np.ndarray) -> np.ndarray:
        bg = np.empty_like(image)
        bg[...] = np.broadcast_to(np.asarray(self.value, dtype=np.float64), image.shape).astype(np.uint8)
        return bg


class ImageFill(BackgroundFill):
    """A background image of the image's shape."""

    def make_background(self, image: np.ndarray) -> np.ndarray:
        bg = np.asarray(self.value)
        if bg.shape != image.shape:
            raise ValueError(
                f"background image for masking has shape {bg.shape}, but the image is {image.shape}; "
                "give a background of the same size"
            )
        if bg.dtype != np.uint8:
            if np.any(bg < 0) or np.any(bg > 255):
                raise ValueError("background image values must lie in 0..255")
            bg = bg.astype(np.uint8)
        return bg


@dataclass(frozen=True)
class FillEntry:
    """One registered fill.

    ``parse(spec)`` returns a :class:`FillKind` when ``spec`` is this fill's syntax, None when
    it is not (the next entry is tried), and raises ValueError when it is but is wrong.
    """

    name: str
    parse: Callable[[Any], FillKind | None]
    help: str


class FillRegistry:
    """Fill names to parsers, tried in registration order; see :func:`parse_fill`."""

    def __init__(self) -> None:
        self._entries: dict[str, FillEntry] = {}

    def register(
        self,
        name: str,
        factory: Callable[[str | None], FillKind] | None = None,
        *,
        help: str,
        parse: Callable[[Any], FillKind | None] | None = None,
    ) -> None:
        """Register a fill.

        Either ``factory(arg)``: the fill is written ``name`` (arg None) or ``name(arg)``
        (arg the text between the brackets, spaces removed); or ``parse(spec)`` for any
        other syntax (numbers, colours, arrays). ``help`` is its line in :func:`fill_help`.
        """
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"fill {name!r} is registered already")
        if (factory is None) == (parse is None):
            raise ValueError("register a fill with exactly one of factory= or parse=")
        if parse is None:
            parse = _named_parser(key, factory)  # type: ignore[arg-type]
        self._entries[key] = FillEntry(key, parse, help)

    def unregister(self, name: str) -> None:
        self._entries.pop(name.lower())

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[FillEntry]:
        return iter(self._entries.values())

    def help_text(self) -> str:
        """'a, b, c, or d': every fill's help line."""
        helps = [e.help for e in self._entries.values()]
        if len(helps) < 2:
            return "".join(helps)
        return ", ".join(helps[:-1]) + ", or " + helps[-1]

    def create(self, fill: Fill) -> FillKind:
        if isinstance(fill, FillKind):
            return fill
        if isinstance(fill, bool):
            raise ValueError(f"unknown mask option {fill!r}; use {self.help_text()}")
        for entry in self._entries.values():
            made = entry.parse(fill)
            if made is not None:
                return made
        raise ValueError(f"unknown mask option {fill!r}; use {self.help_text()}")


_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\((.*)\)$")


def _named_parser(name: str, factory: Callable[[str | None], FillKind]) -> Callable[[Any], FillKind | None]:
    def parse(spec: Any) -> FillKind | None:
        if not isinstance(spec, str):
            return None
        low = spec.strip().lower()
        if low == name:
            return factory(None)
        m = _CALL.match(low.replace(" ", ""))
        if m and m.group(1) == name:
            made = factory(m.group(2))
            if made is None:
                raise ValueError(f"unknown mask option {spec!r}; use {fill_help()}")
            return made
        return None

    return parse


# Fills have a registry of their own kind, not capshap.registry.Registry: their specs are not
# "name:argument" but calls and bare values ("blur(16,16)", "128", "255,0,0"), so each entry
# parses the spec itself (see FillRegistry.parse); registering one is still one call.
FILLS = FillRegistry()
"""The fill registry: ``FILLS.register(name, factory, help=...)`` adds one."""


def _inpaint(kind: str) -> Callable[[str | None], FillKind]:
    def make(arg: str | None) -> FillKind:
        if arg is not None:
            raise ValueError(f"mask option {kind}({arg}) takes no argument; use {kind}")
        return InpaintFill(kind)

    return make


def _blur(arg: str | None) -> FillKind | None:
    m = re.match(r"^(\d+),(\d+)$", arg or "")
    if not m:
        return None  # "unknown mask option", as before the registry
    k = (int(m.group(1)), int(m.group(2)))
    if k[0] < 1 or k[1] < 1:
        raise ValueError(f"blur kernel in mask option 'blur({arg})' must be at least 1x1")
    return BlurFill("blur", k)


def _grey(spec: Any) -> FillKind | None:
    if isinstance(spec, np.ndarray) and spec.ndim == 0:
        spec = float(spec)
    if isinstance(spec, str):
        try:
            spec_f = float(spec.strip())
        except ValueError:
            return None
        v, shown = spec_f, spec_f
    elif isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        v, shown = float(spec), spec
    else:
        return None
    if not (0.0 <= v <= 255.0):
        raise ValueError(f"mask value {shown!r} is outside 0..255; use a grey level in 0..255")
    return ValueFill("value", v)


_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


def _colour(spec: Any) -> FillKind | None:
    if isinstance(spec, str):
        s = spec.strip()
        m = _HEX.match(s)
        if m:
            h = m.group(1)
            return ValueFill("value", np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64))
        if "," not in s:
            return None
        try:
            spec = tuple(float(p) for p in s.split(","))
        except ValueError:
            return None
    if not isinstance(spec, (tuple, list)):
        return None
    if len(spec) != 3:
        raise ValueError(f"mask colour {spec!r} must have 3 components (r, g, b)")
    rgb = np.array([float(v) for v in spec])
    if np.any(rgb < 0) or np.any(rgb > 255):
        raise ValueError(f"mask colour {spec!r} has components outside 0..255")
    return ValueFill("value", rgb)


def _image(spec: Any) -> FillKind | None:
    if isinstance(spec, np.ndarray) and spec.ndim > 0:
        return ImageFill("image", spec)
    return None


FILLS.register("inpaint_ns", _inpaint("inpaint_ns"), help="inpaint_ns")
FILLS.register("inpaint_telea", _inpaint("inpaint_telea"), help="inpaint_telea")
FILLS.register("blur", _blur, help="blur(kx,ky) e.g. blur(16,16)")  # type: ignore[arg-type]
FILLS.register("grey", parse=_grey, help="a grey level 0-255 e.g. 128")
FILLS.register("colour", parse=_colour, help="an RGB colour r,g,b or #rrggbb")
FILLS.register("image", parse=_image, help="a background image array")


def fill_help() -> str:
    """One line naming every registered fill (for --help and errors)."""
    return FILLS.help_text()


def make_fill(fill: Fill) -> FillKind:
    """The :class:`FillKind` a fill option names; ValueError naming the option otherwise."""
    return FILLS.create(fill)


def parse_fill(fill: Fill) -> tuple[str, Any]:
    """Normalise a fill option to ``(kind, value)``.

    kind is "inpaint_ns", "inpaint_telea", "blur" (value (kx, ky)), "value" (value: float
    or (3,) float array), "image" (value: array), or a registered fill's kind. Raises
    ValueError naming the option.
    """
    f = make_fill(fill)
    return f.kind, f.value


# -- render size and threads ------------------------------------------------------------


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to (h, w) with Pillow's antialiased bicubic filter.

    That is the filter Hugging Face image processors resize with (BLIP: PIL BICUBIC) and
    the one torch's ``interpolate(mode="bicubic", antialias=True)`` (the built-in
    captioner) was made to match, so the captioner gets (up to uint8 rounding) the pixels
    its own resize would have made.
    """
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BICUBIC))


def render_shape(
    image_shape: Sequence[int], render_size: str | int | None, captioner: Captioner | None = None
) -> tuple[int, int] | None:
    """The (h, w) to render masks of an image of ``image_shape`` at, or None for full size.

    render_size:
      * ``"full"`` or None: full size (exact ``shap.maskers.Image`` parity).
      * ``"auto"``: the size the captioner resizes images to, its declared
        :meth:`~capshap.interfaces.Captioner.input_size_for` (by default its
        ``input_size``, a plain resize of the whole image, aspect ratio not kept, as the
        built-in captioner's and BLIP's processors do; the built-in one overrides it with
        ``crop_fraction``). None (unknown, e.g. a cloud captioner) means full size.
      * an int N: the longer side becomes N, aspect ratio kept.

    Never upsamples: each side is at most the image's (rendering a 100 px image at 224
    costs more and tells the captioner nothing new). Returns None when that is the
    image's own size.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    if render_size is None or render_size == "full":
        return None
    if render_size == "auto":
        size = None
        if captioner is not None:
            size = captioner.input_size_for((H, W))
        if size is None:
            return None
        h, w = int(size[0]), int(size[1])
    elif isinstance(render_size, (int, np.integer)) and not isinstance(render_size, bool) and render_size >= 1:
        s = int(render_size) / max(H, W)
        h, w = max(1, round(H * s)), max(1, round(W * s))
    else:
        raise ValueError(f"render_size={render_size!r} must be 'full', 'auto' or a positive integer (pixels)")
    h, w = min(h, H), min(w, W)
    return None if (h, w) == (H, W) else (h, w)


def thread_split(cores: int | None = None, overlap: bool = False) -> tuple[int, int]:
    """(model threads, mask threads) that together do not exceed ``cores``.

    Without overlap (masks rendered, then scored) both phases use every core in turn.
    With overlap (:meth:`Masker.render_iter` renders while the model runs) the cores are
    split: a quarter (at least one) render, the rest run the model. Set the model's
    threads with ``torch.set_num_threads`` and pass ``threads=`` to :class:`Masker`.
    """
    n = max(1, int(cores if cores is not None else (os.cpu_count() or 1)))
    if not overlap or n == 1:
        return n, n
    mask = max(1, n // 4)
    return n - mask, mask


# -- the masker -------------------------------------------------------------------------


class Masker:
    """Renders coalitions of ``tree`` nodes as masked copies of ``image``.

    Parameters
    ----------
    image : (H, W, 3) uint8
    tree : Tree over (H, W) pixels or (H, W, 3) pixel channels.
    fill : see the module docstring (a spec or a :class:`FillKind`).
    threads : worker threads for batches (default: CPU count).
    render_size : (h, w) or None
        Size of the rendered images (None: the image's). The tree stays at (H, W); see
        the module docstring and :func:`render_shape`.
    """

    def __init__(
        self,
        image: np.ndarray,
        tree: Tree,
        fill: Fill = "inpaint_ns",
        threads: int | None = None,
        render_size: tuple[int, int] | None = None,
    ):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
        if tree.shape[:2] != image.shape[:2]:
            raise ValueError(f"tree covers {tree.shape[:2]} but the image is {image.shape[:2]}")
        self.image = image
        self.tree = tree
        self.fill = fill
        self._fill = make_fill(fill)
        self.kind = self._fill.kind
        self.threads = max(1, threads if threads is not None else (os.cpu_count() or 1))
        H, W = image.shape[:2]
        if render_size is not None:
            try:
                h, w = (int(v) for v in render_size)
            except (TypeError, ValueError):
                raise ValueError(f"render_size must be (height, width) or None, got {render_size!r}") from None
            if h < 1 or w < 1:
                raise ValueError(f"render_size must be positive, got {render_size!r}")
            render_size = None if (h, w) == (H, W) else (h, w)
        self.render_size: tuple[int, int] | None = render_size
        self._full = self._fill.prepared(image)  # validates a background image's shape
        if render_size is None:
            self.rendered = image
            self._small = self._full
        else:
            h, w = render_size
            self.rendered = _resize(image, render_size)
            self._small = self._fill.prepared(image, render_size)
            # rendered pixel i (of h) shows full-resolution row floor((2i + 1) H / 2h), the
            # one under its centre; ry[y] is the first rendered row at or below row y
            self._rows = ((2 * np.arange(h, dtype=np.int64) + 1) * H) // (2 * h)
            self._cols = ((2 * np.arange(w, dtype=np.int64) + 1) * W) // (2 * w)
            self._ry = np.searchsorted(self._rows, np.arange(H + 1)).astype(np.int64)
            self._rx = np.searchsorted(self._cols, np.arange(W + 1)).astype(np.int64)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(h, w, 3): the shape of each rendered image."""
        return self.rendered.shape  # type: ignore[return-value]

    # -- one image --------------------------------------------------------------------
    def visible(self, coalition: Sequence[int]) -> np.ndarray:
        """(H, W) or (H, W, 3) bool at full resolution: True where the coalition's nodes are."""
        tree = self.tree
        if tree.rects is not None and len(coalition) < 64:
            return self._paint(coalition, None)
        return tree.visible(coalition)

    def visible_rendered(self, coalition: Sequence[int]) -> np.ndarray:
        """(h, w) or (h, w, 3) bool at the render size (pixel-centre rule)."""
        if self.render_size is None:
            return self.visible(coalition)
        if self.tree.rects is not None and len(coalition) < 64:
            return self._paint(coalition, (self._ry, self._rx))
        return self.tree.visible(coalition)[np.ix_(self._rows, self._cols)]

    def _paint(self, coalition: Sequence[int], maps: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        tree = self.tree
        shape = tree.shape if maps is None else (len(self._rows), len(self._cols)) + tuple(tree.shape[2:])
        vis = np.zeros(shape, dtype=bool)
        if not len(coalition):
            return vis
        boxes = np.asarray(tree.rects[np.fromiter(coalition, dtype=np.int64, count=len(coalition))], dtype=np.int64)
        if maps is not None:
            ry, rx = maps
            boxes[:, 0:2] = ry[boxes[:, 0:2]]
            boxes[:, 2:4] = rx[boxes[:, 2:4]]
        if tree.channels:
            for y0, y1, x0, x1, c0, c1 in boxes.tolist():
                vis[y0:y1, x0:x1, c0:c1] = True
        else:
            for y0, y1, x0, x1, _, _ in boxes.tolist():
                vis[y0:y1, x0:x1] = True
        return vis

    def apply(self, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Mask the full-size image: visible (H, W) or (H, W, 3) bool -> (H, W, 3) uint8."""
        return self._full.render(self.image, visible, out)

    def apply_rendered(self, visible: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Mask the image at the render size: visible (h, w[, 3]) bool -> (h, w, 3) uint8."""
        return self._small.render(self.rendered, visible, out)

    def __call__(self, coalition: Sequence[int]) -> np.ndarray:
        """One coalition -> (h, w, 3) uint8 at the render size."""
        return self.apply_rendered(self.visible_rendered(coalition))

    # -- batches ----------------------------------------------------------------------
    def render(self, coalitions: Sequence[Sequence[int]], threads: int | None = None) -> np.ndarray:
        """Render N coalitions into an (N, h, w, 3) uint8 array, in parallel threads."""
        n = len(coalitions)
        out = np.empty((n,) + self.output_shape, dtype=np.uint8)
        if n == 0:
            return out

        def one(i: int) -> None:
            self.apply_rendered(self.visible_rendered(coalitions[i]), out[i])

        k = min(self.threads if threads is None else max(1, int(threads)), n)
        if k == 1:
            for i in range(n):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=k) as pool:
                list(pool.map(one, range(n)))
        return out

    def render_iter(
        self, coalitions: Sequence[Sequence[int]], chunk: int, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """Render ``coalitions`` in chunks of ``chunk``, one chunk ahead of the caller.

        Yields (n_i, h, w, 3) uint8 arrays in order; while the caller works on one (e.g.
        runs the model on it), the next is rendered in a background thread with
        ``threads`` workers (default: this masker's). Split the cores with
        :func:`thread_split` so that the two together do not oversubscribe them.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk!r}")
        parts = [coalitions[s : s + chunk] for s in range(0, len(coalitions), chunk)]
        if not parts:
            return
        with ThreadPoolExecutor(max_workers=1) as bg:
            pending = bg.submit(self.render, parts[0], threads)
            for nxt in parts[1:]:
                ready = pending.result()
                pending = bg.submit(self.render, nxt, threads)
                yield ready
            yield pending.result()
