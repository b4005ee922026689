"""Turn the command line's text specs into captioners, scorers and region trees.

The CLI (and anything else that stores a run's settings as text, such as
``capshap evaluate`` rebuilding a saved run's scorer) names its parts with short specs:

========================  ============================================================
``--captioner``           ``builtin`` (EfficientNet-Lite0 template, offline; ``builtin:K``
                          names the top K labels), ``hf:ID_OR_PATH`` (a Hugging Face
                          image-to-text model), ``azure`` (Azure AI Vision v3.2, as in the
                          SHAP notebook), ``azure-v4`` (Image Analysis 4.0)
``--scorer``              ``auto`` (``own`` when the captioner has a language head, else
                          ``presence``), ``own``, ``presence``, ``surrogate:LM_ID_OR_PATH``
                          (``surrogate`` alone: the notebook's distilbart-xsum-12-6)
``--tree``                ``axis``, ``slic``, ``felzenszwalb``, ``quickshift``,
                          ``labels:FILE.png`` / ``labels:FOLDER``, ``masks:FOLDER``
========================  ============================================================

Every function raises :class:`SpecError` (a ValueError) whose message starts with the
option and the spec, e.g. ``"--scorer foo: unknown scorer; use auto, own, presence or
surrogate:LM_ID_OR_PATH"``.

User segmentations for ``--tree``
---------------------------------
``labels:FILE.png``: one integer label map (grey, 16-bit, palette or colour-coded PNG /
TIFF / ...) used for every image. ``labels:FOLDER``: the label map of image ``NAME.jpg`` is
``FOLDER/NAME.<ext>`` (any image extension).

``masks:FOLDER``: the masks of image ``NAME.jpg`` are the image files in ``FOLDER/NAME/``,
and the files ``FOLDER/NAME_*.<ext>`` (non-zero pixels are inside the mask). When exactly
one image is explained, loose files in ``FOLDER`` belong to it whatever their names. A
mask file that belongs to no image is an error (it usually means a misspelt name).
Overlaps and uncovered pixels follow :func:`capshap.regions.segments.from_masks`.

Label maps and masks must have the image's size, either as stored (before the image is
fitted to ``--max-side``) or after fitting; they are resized with nearest-neighbour
sampling to the size the image is explained at.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from capshap.images import IMAGE_EXTENSIONS, is_image_path
from capshap.interfaces import Captioner, OwnHead, PresenceScorer

logger = logging.getLogger(__name__)

__all__ = [
    "SpecError",
    "CAPTIONER_HELP",
    "SCORER_HELP",
    "TREE_HELP",
    "DEFAULT_SURROGATE",
    "build_captioner",
    "build_scorer",
    "parse_tree",
    "TreeSource",
    "resize_nearest",
    "read_label_map",
]

CAPTIONER_HELP = "builtin, builtin:K, hf:ID_OR_PATH, azure or azure-v4"
SCORER_HELP = "auto, own, presence or surrogate:LM_ID_OR_PATH"
TREE_HELP = "axis, slic, felzenszwalb, quickshift, labels:FILE.png, labels:FOLDER or masks:FOLDER"
#: The SHAP notebook's surrogate language model (needs the Hugging Face hub or a local copy).
DEFAULT_SURROGATE = "sshleifer/distilbart-xsum-12-6"
SEGMENT_METHODS = ("slic", "felzenszwalb", "quickshift")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the option and the spec."""

    def __init__(self, option: str, spec: Any, reason: str):
        self.option = option
        self.spec = spec
        self.reason = reason
        super().__init__(f"{option} {spec}: {reason}")


# ------------------------------------------------------------------------ captioners


class CachedCaptioner(Captioner):
    """Wraps a captioner with a :class:`~capshap.captioners.cache.CaptionCache` (by image content).

    Everything else (``own_scorer``, ``name``, attributes) is forwarded to the wrapped
    captioner, so own-head scoring still works.
    """

    def __init__(self, inner: Captioner, cache: Any, namespace: str):
        self.inner = inner
        self.cache = cache
        self.namespace = namespace

    @property
    def name(self) -> str:
        return self.inner.name

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        out: list[str | None] = [self.cache.get(self.namespace, im) for im in images]
        todo = [i for i, c in enumerate(out) if c is None]
        if todo:
            made = self.inner.caption([images[i] for i in todo])
            for i, c in zip(todo, made):
                self.cache.put(self.namespace, images[i], c)
                out[i] = c
        return [str(c) for c in out]

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def build_captioner(
    spec: str,
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    prompt: str | None = None,
) -> Captioner:
    """A captioner from a spec (see :data:`CAPTIONER_HELP`).

    spec: ``builtin`` / ``builtin:K`` (top K labels, K >= 1), ``hf:ID_OR_PATH``, ``azure``
    (Azure AI Vision v3.2) or ``azure-v4`` (Image Analysis 4.0; both read
    ``AZURE_VISION_ENDPOINT`` and ``AZURE_VISION_KEY``). device: a torch device for
    builtin and hf ("cpu", "cuda", ...; None: builtin on cpu, hf picks cuda/mps/cpu).
    cache_dir: a folder for the caption cache (azure: its own cache; hf: captions of
    masked images, useful with surrogate and presence scorers); builtin needs none.
    batch_size: images per forward pass for builtin and hf (None: their defaults).
    generate_kwargs, prompt: generation settings and a text prompt (BLIP's conditional
    captioning, GIT) for hf captioners; other captioners refuse them.

    Raises :class:`SpecError` for an unknown or unusable spec; the underlying error
    (missing package, missing key, model not found) is kept as ``__cause__``.
    """
    opt = "--captioner"
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(opt, repr(spec), f"empty captioner; use {CAPTIONER_HELP}")
    s = spec.strip()
    kind, _, arg = s.partition(":")
    kind = kind.lower()
    if kind != "hf" and (generate_kwargs or prompt):
        raise SpecError("--generate/--prompt", s, "generation settings and prompts apply to hf: captioners only")
    try:
        if kind == "builtin":
            from capshap.captioners.builtin import BuiltinCaptioner

            top_k = 1
            if arg:
                if not re.fullmatch(r"\d+", arg) or int(arg) < 1:
                    raise SpecError(opt, s, f"top-k {arg!r} is not a positive integer; e.g. builtin:3")
                top_k = int(arg)
            kw: dict[str, Any] = {"top_k": top_k, "device": device or "cpu"}
            if batch_size is not None:
                kw["batch_size"] = int(batch_size)
            return BuiltinCaptioner(**kw)
        if kind == "hf":
            if not arg:
                raise SpecError(opt, s, "give the model: hf:ID_OR_PATH, e.g. hf:nlpconnect/vit-gpt2-image-captioning")
            from capshap.captioners.hf import HFCaptioner

            kw = {"device": device, "generate_kwargs": dict(generate_kwargs or {}) or None, "prompt": prompt}
            if batch_size is not None:
                kw["batch_size"] = int(batch_size)
            cap: Captioner = HFCaptioner(arg, **kw)
            if cache_dir is not None:
                from capshap.captioners.cache import CaptionCache

                gk = getattr(cap, "generate_kwargs", {}) or {}
                ns = f"hf/{arg}/{sorted(gk.items())!r}/{getattr(cap, 'prompt', None)!r}"
                cap = CachedCaptioner(cap, CaptionCache(cache_dir), ns)
            return cap
        if kind in ("azure", "azure-v3.2", "azure-v3.1", "azure-v4"):
            if arg:
                raise SpecError(opt, s, "azure takes no argument; set AZURE_VISION_ENDPOINT and AZURE_VISION_KEY")
            from capshap.captioners.azure import AzureCaptioner

            api = {"azure": "v3.2", "azure-v3.2": "v3.2", "azure-v3.1": "v3.1", "azure-v4": "v4"}[kind]
            return AzureCaptioner(api=api, cache_dir=cache_dir)
    except SpecError:
        raise
    except ImportError as e:
        raise SpecError(opt, s, f"a package is missing: {e}") from e
    except Exception as e:
        raise SpecError(opt, s, f"{e}") from e
    raise SpecError(opt, s, f"unknown captioner; use {CAPTIONER_HELP}")


# --------------------------------------------------------------------------- scorers


def build_scorer(spec: str | None, captioner: Captioner, device: str | None = None) -> Any:
    """A scorer factory (anything with ``bind(caption)``) from a spec (see :data:`SCORER_HELP`).

    ``auto`` (or None): the captioner's own head when it has one (``own_scorer``), else
    word presence. ``own``: the captioner's own head (builtin, hf). ``presence``: 1/0 per
    word of the caption, by whether the masked image's caption contains it.
    ``surrogate:LM_ID_OR_PATH``: a language model teacher-forced on the caption with the
    masked image's caption as source (the SHAP notebook's method); ``surrogate`` alone uses
    :data:`DEFAULT_SURROGATE`.
    """
    opt = "--scorer"
    s = "auto" if spec is None else str(spec).strip()
    kind, _, arg = s.partition(":")
    kind = kind.lower()
    has_head = callable(getattr(captioner, "own_scorer", None))
    cname = getattr(captioner, "name", type(captioner).__name__)
    if kind == "auto" and not arg:
        if has_head:
            return OwnHead(captioner)
        logger.info("captioner %s has no language head: scoring by word presence", cname)
        return PresenceScorer(captioner)
    if kind == "own" and not arg:
        if not has_head:
            raise SpecError(
                opt,
                s,
                f"the captioner {cname} has no language head to score with; "
                "use --scorer presence or --scorer surrogate:LM_ID_OR_PATH",
            )
        return OwnHead(captioner)
    if kind == "presence" and not arg:
        return PresenceScorer(captioner)
    if kind == "surrogate":
        lm = arg or DEFAULT_SURROGATE
        try:
            from capshap.scoring.surrogate import SurrogateScorer

            return SurrogateScorer(captioner, lm, device=device)
        except ImportError as e:
            raise SpecError(opt, s, f"a package is missing: {e}") from e
        except Exception as e:
            raise SpecError(opt, s, f"{e}") from e
    raise SpecError(opt, s, f"unknown scorer; use {SCORER_HELP}")


# ----------------------------------------------------------------------------- trees


def resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array (any dtype) to (h, w): pixel centres map
    to the source pixel containing them."""
    H, W = a.shape[:2]
    if (H, W) == (h, w):
        return a
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return a[rows[:, None], cols[None, :]]


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an integer label map from an image file.

    Grey, 16/32-bit and palette images give their stored values (a palette PNG gives the
    palette indices); colour images give (H, W, 3) colour codes, one label per colour
    (alpha is dropped). Returns an integer array (H, W) or (H, W, 3).
    """
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                arr = np.asarray(im)
            elif mode in ("RGB", "RGBA", "RGBX"):
                arr = np.asarray(im)[..., :3]
            elif mode == "LA":
                arr = np.asarray(im)[..., 0]
            else:
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{p}: cannot read it as a label map image ({e})") from e
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # grey stored as RGB
    return arr


def _fit_to(a: np.ndarray, what: str, image: np.ndarray, original: tuple[int, int] | None) -> np.ndarray:
    h, w = image.shape[:2]
    shp = tuple(a.shape[:2])
    if shp == (h, w) or (original is not None and shp == tuple(original)):
        if a.ndim == 3:
            return np.stack([resize_nearest(a[..., c], h, w) for c in range(a.shape[2])], axis=2)
        return resize_nearest(a, h, w)
    sizes = f"{w}x{h}"
    if original is not None and tuple(original) != (h, w):
        sizes = f"{original[1]}x{original[0]} (fitted to {w}x{h})"
    raise ValueError(
        f"{what} is {shp[1]}x{shp[0]} px (width x height) but the image is {sizes}; "
        "it must have the image's size"
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_path(p))


@dataclass
class TreeSource:
    """The parsed ``--tree`` spec: gives each image its tree spec for :func:`capshap.make_tree`.

    kind: "axis", a segmentation method, "labels" or "masks". path: the file or folder of
    user segmentations (labels / masks).
    """

    spec: str
    kind: str
    path: Path | None = None
    _label_cache: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_user(self) -> bool:
        return self.kind in ("labels", "masks")

    def check_names(self, names: Sequence[str]) -> None:
        """Check that every user segmentation file belongs to one of ``names`` (image
        names, e.g. "1.jpg"); raise :class:`SpecError` naming the files that match none."""
        if self.kind == "masks" and self.path is not None:
            stems = {Path(n).with_suffix("").name for n in names}
            loose_ok = len(names) == 1
            orphans = []
            for p in _files(self.path):
                if loose_ok:
                    continue
                if not any(p.name.startswith(s + "_") for s in stems):
                    orphans.append(p.name)
            for d in sorted(x for x in self.path.iterdir() if x.is_dir() and not x.name.startswith(".")):
                if d.name not in stems:
                    orphans.append(d.name + "/")
            if orphans:
                raise SpecError(
                    "--tree",
                    self.spec,
                    f"mask files that match no image: {', '.join(orphans)} (images: {', '.join(sorted(names))}); "
                    "name masks FOLDER/NAME/*.png or FOLDER/NAME_*.png after the image NAME.jpg",
                )
        if self.kind == "labels" and self.path is not None and self.path.is_dir():
            stems = {Path(n).with_suffix("").name for n in names}
            orphans = [p.name for p in _files(self.path) if p.with_suffix("").name not in stems]
            if orphans:
                raise SpecError(
                    "--tree",
                    self.spec,
                    f"label maps that match no image: {', '.join(orphans)}; name the label map of NAME.jpg FOLDER/NAME.png",
                )

    def mask_files(self, name: str, n_images: int = 2) -> list[Path]:
        """The mask files of image ``name`` (masks:FOLDER)."""
        assert self.path is not None
        stem = Path(name).with_suffix("").name
        sub = self.path / stem
        found = _files(sub) if sub.is_dir() else []
        loose = _files(self.path)
        found += [p for p in loose if p.name.startswith(stem + "_")]
        if not found and n_images == 1:
            found = loose
        return found

    def for_image(
        self,
        name: str,
        image: np.ndarray,
        original_size: tuple[int, int] | None = None,
        n_images: int = 2,
    ) -> Union[str, np.ndarray, list[np.ndarray]]:
        """The tree spec for one image: a method name, an (H, W) label map or a list of
        (H, W) boolean masks at the image's (fitted) size. Raises ValueError naming the
        file when a segmentation is missing or has the wrong size."""
        if not self.is_user:
            return self.kind
        assert self.path is not None
        if self.kind == "labels":
            if self.path.is_dir():
                stem = Path(name).with_suffix("").name
                cands = [p for p in _files(self.path) if p.with_suffix("").name == stem]
                if not cands:
                    raise ValueError(
                        f"{name}: no label map {stem}.png (or another image extension) in {self.path}"
                    )
                lm = read_label_map(cands[0])
                what = f"label map {cands[0]}"
            else:
                if self._label_cache is None:
                    self._label_cache = read_label_map(self.path)
                lm = self._label_cache
                what = f"label map {self.path}"
            return _fit_to(lm, what, image, original_size)
        files = self.mask_files(name, n_images)
        if not files:
            stem = Path(name).with_suffix("").name
            raise ValueError(
                f"{name}: no masks for it in {self.path} (looked for {stem}/*.png and {stem}_*.png)"
            )
        masks = []
        for p in files:
            m = read_label_map(p)
            if m.ndim == 3:
                m = m.any(axis=2)
            masks.append(_fit_to(np.asarray(m) != 0, f"mask {p}", image, original_size))
        return masks


def parse_generate(text: str) -> dict[str, Any]:
    """``--generate`` settings: ``"max_new_tokens=20,num_beams=3,do_sample=false"`` -> a dict
    with ints, floats, booleans and None converted; anything else stays a string."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SpecError("--generate", text, f"{part!r} is not KEY=VALUE; e.g. max_new_tokens=20,num_beams=3")
        raw = raw.strip()
        low = raw.lower()
        value: Any
        if low in ("true", "false"):
            value = low == "true"
        elif low == "none":
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key] = value
    return out


def parse_tree(spec: str) -> TreeSource:
    """Parse a ``--tree`` spec (see :data:`TREE_HELP`); checks that files and folders exist."""
    opt = "--tree"
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(opt, repr(spec), f"empty tree; use {TREE_HELP}")
    s = spec.strip()
    kind, sep, arg = s.partition(":")
    k = kind.lower()
    if not sep and k in ("axis", *SEGMENT_METHODS):
        return TreeSource(s, k)
    if k in ("labels", "masks"):
        if not arg:
            raise SpecError(opt, s, f"give a path: {k}:{'FILE.png' if k == 'labels' else 'FOLDER'}")
        p = Path(arg).expanduser()
        if not p.exists():
            raise SpecError(opt, s, f"no such file or folder: {arg}")
        if k == "masks":
            if not p.is_dir():
                raise SpecError(opt, s, f"{arg} is not a folder; masks:FOLDER takes a folder of mask images")
            has_any = bool(_files(p)) or any(d.is_dir() and _files(d) for d in p.iterdir())
            if not has_any:
                raise SpecError(
                    opt, s, f"the folder {arg} holds no mask images ({', '.join(IMAGE_EXTENSIONS)}); the mask list is empty"
                )
        elif p.is_file() and not is_image_path(p):
            raise SpecError(opt, s, f"{arg} is not an image file; a label map is a PNG (or TIFF, ...) of integer labels")
        return TreeSource(s, k, p)
    raise SpecError(opt, s, f"unknown tree; use {TREE_HELP}")
