"""Pictures of explanations: per-token heatmaps, the masked-image grid, HTML overlays.

:func:`plot` draws the original image, then one panel per caption token: the token's
Owen values over a grey copy of the image, red where a region raises the token's score and
blue where it lowers it, transparent at zero. Each panel gives the token's total credit (its
evidence) and its grounding label (see :mod:`capshap.grounding`). By default only tokens
that some region gives credit are drawn, at most :data:`MAX_WORDS` of them (the strongest);
the others are listed in one line under the panels (``all_words=True`` draws every token). All token panels share one symmetric scale,
``[-v, v]`` with ``v`` the 99.5th percentile of ``|values|`` over every pixel and token
(so one hot pixel cannot wash the others out), shown by one colorbar.

Two of shap's ``image_plot`` problems are avoided on purpose: every panel is laid out from
the image's own width and height, and heatmap and image share the same ``extent`` (pixel
edges ``0..W`` by ``0..H``), so non-square images keep their aspect and the heatmap sits
exactly on the pixels (shap #1296); the grey background is normalised from the image's own
value range, so uint8, 0..1 floats or any other range look the same (shap #703).

Figures are built as :class:`matplotlib.figure.Figure` objects without pyplot: nothing is
shown, no global figure state is touched. In Jupyter a returned figure displays itself;
elsewhere save it with ``fig.savefig(path)`` or :func:`save_figure`.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from capshap.viz.marks import SYMBOL

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from capshap import Explanation

logger = logging.getLogger(__name__)

__all__ = [
    "plot",
    "plot_grid",
    "save_figure",
    "value_scale",
    "grey_background",
    "overlay_rgba",
    "segment_boundaries",
    "colormap",
    "POSITIVE_RGB",
    "NEGATIVE_RGB",
]

#: Colour of positive credit (raises the token's score) and of negative credit.
POSITIVE_RGB = (1.0, 0.0, 0.318)
NEGATIVE_RGB = (0.118, 0.533, 0.898)
#: Default percentile of |values| that sets the colour scale.
DEFAULT_PERCENTILE = 99.5
#: At most this many token panels by default (the strongest by |evidence|).
MAX_WORDS = 24


def _mpl() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'capshap[plots]' (or matplotlib)") from e
    return matplotlib


def colormap() -> Any:
    """Blue (negative) - transparent (zero) - red (positive), alpha growing with |value|."""
    _mpl()
    from matplotlib.colors import ListedColormap

    x = np.linspace(-1.0, 1.0, 257)
    rgba = np.empty((257, 4))
    rgba[:, :3] = np.where(x[:, None] < 0, NEGATIVE_RGB, POSITIVE_RGB)
    rgba[:, 3] = np.abs(x)
    return ListedColormap(rgba, name="capshap_red_transparent_blue")


def _lut() -> np.ndarray:
    """(257, 4) uint8 RGBA table of :func:`colormap`, index 0 = -v, 128 = 0, 256 = +v."""
    x = np.linspace(-1.0, 1.0, 257)
    rgb = np.where(x[:, None] < 0, NEGATIVE_RGB, POSITIVE_RGB)
    out = np.empty((257, 4), dtype=np.uint8)
    out[:, :3] = np.rint(rgb * 255)
    out[:, 3] = np.rint(np.abs(x) * 255)
    return out


def value_scale(values: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The shared colour scale v > 0: the ``percentile`` of |values| (all pixels and
    tokens), falling back to max |values|, then 1.0 when every value is 0."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 1.0
    v = float(np.percentile(a, percentile)) if 0 < percentile < 100 else float(a.max())
    if not v > 0:
        v = float(a.max())
    return v if v > 0 else 1.0


def grey_background(image: np.ndarray) -> np.ndarray:
    """(H, W) float64 in [0, 1]: the image's luminance, stretched from its own value range
    (any dtype or range: uint8, 0..1 floats, 16-bit ...). A constant image gives 0.5."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        if a.shape[2] >= 3:
            a = a[..., 0] * 0.2989 + a[..., 1] * 0.5870 + a[..., 2] * 0.1140
        else:
            a = a[..., 0]
    finite = np.isfinite(a)
    if not finite.any():
        return np.full(a.shape, 0.5)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        return np.full(a.shape, 0.5)
    return np.clip(np.where(finite, (a - lo) / (hi - lo), 0.5), 0.0, 1.0)


def _display_image(image: np.ndarray) -> np.ndarray:
    """Any image array -> float (H, W, 3) in [0, 1] for imshow, from its own range when
    it is not uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    f = a.astype(np.float64)
    finite = np.isfinite(f)
    if not finite.any():
        return np.full(f.shape, 0.5)
    lo, hi = float(f[finite].min()), float(f[finite].max())
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    if hi <= lo:
        return np.full(f.shape, 0.5)
    return np.clip(np.where(finite, (f - lo) / (hi - lo), 0.5), 0.0, 1.0)


def overlay_rgba(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) values -> (H, W, 4) uint8 RGBA in the colours of :func:`colormap` on the
    scale ``[-vmax, vmax]`` (transparent at 0), e.g. for the HTML report."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.rint(np.clip(v / float(vmax), -1.0, 1.0) * 128 + 128)
    idx = np.where(np.isfinite(idx), idx, 128).astype(np.intp)
    return _lut()[idx]


def segment_boundaries(tree: Any) -> np.ndarray | None:
    """(H, W) bool, True on pixels whose right or lower neighbour lies in another leaf
    segment; None for axis-aligned trees (whose leaves are pixels) and missing trees."""
    if tree is None or getattr(tree, "kind", "axis") == "axis":
        return None
    lab = np.asarray(tree.leaf_map())
    b = np.zeros(lab.shape, dtype=bool)
    b[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    b[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return b


def _outline_rgba(boundaries: np.ndarray, colour: Sequence[float]) -> np.ndarray:
    out = np.zeros(boundaries.shape + (4,), dtype=np.float64)
    out[boundaries] = colour
    return out


#: Keyword arguments for every text capshap draws: captions and tokens come from models,
#: services and files, so they are shown as plain text, never parsed as mathtext (``$x$``,
#: ``\undefinedcmd``) or sent to LaTeX.
_PLAIN = {"parse_math": False, "usetex": False}
_BREAKS = re.compile(r"[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")


def _clean(text: object) -> str:
    """Text as drawn: line breaks and tabs become spaces (layout is capshap's), other
    control and bidi-override characters are shown escaped (``\x1b``), so they can neither
    break drawing nor reorder the text."""
    from capshap.text import printable

    return printable(_BREAKS.sub(" ", str(text)))


def _wrap(text: str, width: int, max_lines: int = 4) -> str:
    """Clean ``text`` and wrap it at ``width`` characters, at most ``max_lines`` lines (the
    last one cut with an ellipsis)."""
    text = _clean(text)
    lines = textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=True) or [text]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, width - 1)] + "…"
    return "\n".join(lines)


def _token_label(token: str, chars: int, max_lines: int = 2) -> str:
    """A token as a panel title: cleaned, stripped, wrapped at ``chars``, at most ``max_lines`` lines."""
    tok = _clean(token).strip() or repr(str(token))
    lines = textwrap.wrap(tok, width=chars, break_long_words=True, break_on_hyphens=True) or [tok]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, chars - 1)] + "…"
    return "\n".join(lines)


def _fmt(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100 or a < 0.01:
        return f"{v:+.2g}"
    return f"{v:+.2f}"


def _panel_size(h: int, w: int, size: float) -> tuple[float, float]:
    """Inches (width, height) of one image panel of about ``size`` x ``size`` area."""
    aspect = w / h
    pw = size * min(1.6, max(0.55, math.sqrt(aspect)))
    return pw, pw / aspect


def plot(
    exp: "Explanation",
    tokens: Sequence[Union[int, str]] | None = None,
    *,
    outline: bool | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    max_cols: int = 8,
    panel_size: float = 2.4,
    dpi: float = 100,
    title: bool | str = True,
    all_words: bool = False,
    max_words: int | None = MAX_WORDS,
) -> "Figure":
    """The explanation as one figure: the image, then one heatmap per token.

    exp: an :class:`~capshap.Explanation`. tokens: which tokens to show (indices or
    strings; default: those some region gives credit, in caption order, or every token with
    ``all_words=True``; at most ``max_words`` of them, the strongest by |evidence|, when
    ``tokens`` is not given, None for no limit). Tokens not drawn are named in one line
    under the panels. outline: draw the leaf segments' outlines
    (default: for segment trees, not for axis-aligned ones). percentile: of |values| over
    all shown tokens, for the shared symmetric colour scale. max_cols: panels per row
    before wrapping. panel_size: inches per panel (scaled by the image's aspect ratio).
    title: True puts the caption on top; a string replaces it; False leaves it out.

    Returns a :class:`matplotlib.figure.Figure` (nothing is shown). Its attribute
    ``capshap_info`` holds ``panels`` (1 + number of tokens drawn), ``tokens`` (drawn),
    ``left_out`` (indices of the tokens not drawn) and ``vmax``.
    """
    _mpl()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if max_words is not None and (isinstance(max_words, bool) or int(max_words) < 1):
        raise ValueError(f"max_words must be a positive integer or None, got {max_words!r}")
    idx, no_credit, beyond = _drawn(exp, tokens, all_words, max_words)
    rest = _rest_line(exp.tokens, no_credit, beyond, max_words)
    grounding = exp.grounding()
    pv = exp.pixel_values()
    H, W = pv.shape[:2]
    vals = [np.asarray(pv[..., t], dtype=np.float64) for t in idx]
    vmax = value_scale(np.stack(vals) if vals else np.zeros(1), percentile)
    grey = grey_background(exp.image)
    if grey.shape != (H, W):
        raise ValueError(f"the image is {grey.shape} pixels but the values are {(H, W)}")
    light = 0.35 * grey + 0.6  # a faint grey copy: the heatmap dominates, the scene stays readable
    bounds = segment_boundaries(exp.tree)
    if outline is None:
        outline = bounds is not None
    if not outline:
        bounds = None

    n_panels = 1 + len(idx)
    cols = max(1, min(n_panels, int(max_cols)))
    rows = math.ceil(n_panels / cols)
    pw, ph = _panel_size(H, W, panel_size)
    chars = max(8, int(pw * 7))
    labels = [_token_label(exp.tokens[t], chars) for t in idx]
    n_lines = max([lab.count("\n") + 1 for lab in labels] + [1])
    gap_x, title_h, top_h, bar_h, margin = 0.15, 0.3 + 0.2 * n_lines, (0.55 if title else 0.15), 0.9, 0.15
    fig_w = margin * 2 + cols * pw + (cols - 1) * gap_x
    fig_w = max(fig_w, 4.0)
    rest_text = _wrap(rest, int(fig_w * 13), max_lines=2) if rest else ""
    rest_h = 0.2 + 0.17 * rest_text.count("\n") if rest else 0.0
    fig_h = top_h + rows * (title_h + ph) + bar_h + rest_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    x_off = (fig_w - (cols * pw + (cols - 1) * gap_x)) / 2
    extent = (0, W, H, 0)
    axes = []
    for k in range(n_panels):
        r, c = divmod(k, cols)
        left = x_off + c * (pw + gap_x)
        bottom = fig_h - top_h - (r + 1) * (title_h + ph) + 0.0
        ax = fig.add_axes((left / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h))
        ax.set_axis_off()
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        axes.append(ax)
        if k == 0:
            ax.imshow(_display_image(exp.image), extent=extent, aspect="equal", interpolation="antialiased")
            if bounds is not None:
                ax.imshow(_outline_rgba(bounds, (1.0, 1.0, 0.4, 0.6)), extent=extent, aspect="equal", interpolation="nearest")
            ax.set_title("image\n", fontsize=12, pad=2, color="0.25", **_PLAIN)
            continue
        t = idx[k - 1]
        ax.imshow(light, cmap="gray", vmin=0.0, vmax=1.0, extent=extent, aspect="equal", interpolation="antialiased")
        ax.imshow(vals[k - 1], cmap=colormap(), vmin=-vmax, vmax=vmax, extent=extent, aspect="equal", interpolation="nearest")
        if bounds is not None:
            ax.imshow(_outline_rgba(bounds, (0.15, 0.15, 0.15, 0.55)), extent=extent, aspect="equal", interpolation="nearest")
        g = grounding[t]
        ax.set_title(f"{labels[k - 1]}\n", fontsize=12, fontweight="bold", pad=2, **_PLAIN)
        ax.text(0.5, 1.0, f"total {_fmt(g.evidence)} {SYMBOL[g.label]} {g.label}", transform=ax.transAxes,
                ha="center", va="bottom", fontsize=8.5, color=_LABEL_TEXT[g.label], **_PLAIN)
    if title:
        text = title if isinstance(title, str) else exp.caption
        fig.text(0.5, 1 - 0.1 / fig_h, _wrap(str(text), int(fig_w * 11), max_lines=2), ha="center", va="top",
                 fontsize=13, **_PLAIN)
    # one shared colorbar under the token panels
    bw = min(fig_w - 2 * margin, max(2.5, 0.6 * fig_w))
    cax = fig.add_axes(((fig_w - bw) / 2 / fig_w, (0.57 + rest_h) / fig_h, bw / fig_w, 0.14 / fig_h))
    sm = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=colormap())
    cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
    cb.ax.tick_params(labelsize=8)
    # the power of ten goes into the label, not into an offset text that would sit on it
    power = _power_of_ten(vmax)
    cb.formatter = _scaled_formatter(power)
    cb.update_ticks()
    unit = f" (\u00d710{_superscript(power)})" if power else ""
    cb.set_label(f"credit per pixel{unit}: red raises the word's score, blue lowers it", fontsize=8.5, **_PLAIN)
    cb.outline.set_linewidth(0.5)
    if rest_text:
        fig.text(0.5, (rest_h - 0.05) / fig_h, rest_text, ha="center", va="top", fontsize=8, color="0.35", **_PLAIN)
    fig.capshap_info = {  # type: ignore[attr-defined]
        "panels": n_panels, "tokens": [exp.tokens[t] for t in idx], "vmax": vmax,
        "left_out": sorted(no_credit + beyond),
    }
    return displayable(fig)


_LABEL_TEXT = {"grounded": "#b0244a", "prior": "0.4", "contradicted": "#1f5fa8"}


def _drawn(exp: "Explanation", tokens: Sequence[Union[int, str]] | None, all_words: bool,
           max_words: int | None) -> tuple[list[int], list[int], list[int]]:
    """(drawn, left out for having no credit, left out beyond ``max_words``), token indices."""
    from capshap.viz.marks import live_tokens, strongest_words

    if tokens is not None:
        return _token_indices(exp, tokens), [], []
    T = len(exp.tokens)
    live = set(live_tokens(exp))
    pool = list(range(T)) if all_words else sorted(live)
    no_credit = [] if all_words else [t for t in range(T) if t not in live]
    if max_words is None or len(pool) <= int(max_words):
        return pool, no_credit, []
    keep = set(strongest_words(exp, int(max_words)))  # tokens with credit first, then by |evidence|
    return [t for t in pool if t in keep], no_credit, [t for t in pool if t not in keep]


def _rest_line(tokens: Sequence[str], no_credit: list[int], beyond: list[int], max_words: int | None,
               limit: int = 60) -> str:
    """One line naming the tokens not drawn (the first ``limit`` of each kind, then a count)."""

    def names(ix: list[int]) -> str:
        shown = ", ".join(_clean(tokens[t]).strip() or repr(str(tokens[t])) for t in ix[:limit])
        return shown + (f" \u2026 (+{len(ix) - limit})" if len(ix) > limit else "")

    parts = []
    if no_credit:
        parts.append(f"no credit: {names(no_credit)}")
    if beyond:
        parts.append(f"not drawn, beyond the {max_words} strongest: {names(beyond)}")
    return "; ".join(parts)


def _power_of_ten(vmax: float) -> int:
    """The power of ten the colorbar's ticks are given in: 0 for scales 0.01 .. 1000."""
    if not (vmax > 0 and math.isfinite(vmax)) or 1e-2 <= vmax < 1e3:
        return 0
    return int(math.floor(math.log10(vmax)))


def _superscript(n: int) -> str:
    return str(n).translate(str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"))


def _scaled_formatter(power: int) -> Any:
    """Tick labels in units of 10**power, with no offset text."""
    from matplotlib.ticker import FuncFormatter

    scale = 10.0 ** power
    return FuncFormatter(lambda x, _pos: f"{x / scale:g}")


def _token_indices(exp: "Explanation", tokens: Sequence[Union[int, str]] | None) -> list[int]:
    T = len(exp.tokens)
    if tokens is None:
        return list(range(T))
    out = []
    for t in tokens:
        if isinstance(t, str):
            if t not in exp.tokens:
                raise ValueError(f"token {t!r} is not in the caption's tokens {exp.tokens!r}")
            out.append(exp.tokens.index(t))
        else:
            i = int(t)
            if not -T <= i < T:
                raise ValueError(f"token index {i} is out of range for {T} tokens")
            out.append(i % T)
    return out


def _check_limit(limit: Union[int, str, None], n: int) -> int:
    if limit is None or (isinstance(limit, str) and limit.strip().lower() == "all"):
        return n
    if isinstance(limit, str):
        try:
            limit = int(limit)
        except ValueError:
            raise ValueError(f"limit must be a positive integer or 'all', got {limit!r}") from None
    if isinstance(limit, bool) or int(limit) < 1:
        raise ValueError(f"limit must be a positive integer or 'all', got {limit!r}")
    return min(int(limit), n)


def _grid_fill(exp: "Explanation") -> Any:
    mask = exp.params.get("mask", "inpaint_ns")
    if isinstance(mask, list):
        mask = tuple(mask)
    if mask == "background image":
        raise ValueError(
            "this explanation was masked with a background image that is not saved with it; "
            "the masked images cannot be drawn again"
        )
    return mask


def plot_grid(
    exp: "Explanation",
    limit: Union[int, str] = 20,
    *,
    cols: int = 5,
    panel_size: float = 2.0,
    dpi: float = 100,
) -> "Figure":
    """The masked images the explanation evaluated, with what the model made of each.

    Like the SHAP notebook's ``show_grid_plot`` / ``limit_grid``: the first ``limit``
    evaluated coalitions in evaluation order (the first two are everything masked and the
    full image), or all of them with ``limit="all"``. Each panel's title is the caption the
    captioner made for that masked image; for scorers that make no captions (own head) it
    is the scores of the tokens that vary, e.g. ``"bird 3.12"``. Masked images are
    rendered again with the explanation's tree and mask. Returns a Figure.
    """
    _mpl()
    from matplotlib.figure import Figure

    from capshap.masking import Masker

    if exp.tree is None:
        raise ValueError("this explanation has no region tree, so its masked images cannot be drawn")
    n = _check_limit(limit, len(exp.coalitions))
    if n == 0:
        raise ValueError("this explanation holds no evaluated coalitions to draw")
    masker = Masker(np.ascontiguousarray(exp.image), exp.tree, _grid_fill(exp))
    coal = exp.coalitions[:n]
    images = np.concatenate([masker.render(coal[s : s + 64]) for s in range(0, n, 64)])
    scores = np.asarray(exp.scores)
    varying = [t for t in range(scores.shape[1]) if scores.shape[0] and np.ptp(scores[:, t]) > 0] if scores.ndim == 2 else []
    H, W = exp.image.shape[:2]
    cols = max(1, min(int(cols), n))
    rows = math.ceil(n / cols)
    pw, ph = _panel_size(H, W, panel_size)
    title_h, gap, margin, top = 0.62, 0.15, 0.15, 0.3
    fig_w = 2 * margin + cols * pw + (cols - 1) * gap
    fig_h = top + rows * (title_h + ph) + margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    chars = max(10, int(pw * 9.5))
    for k in range(n):
        r, c = divmod(k, cols)
        left = margin + c * (pw + gap)
        bottom = fig_h - top - (r + 1) * (title_h + ph)
        ax = fig.add_axes((left / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h))
        ax.set_axis_off()
        ax.imshow(images[k], extent=(0, W, H, 0), aspect="equal", interpolation="antialiased")
        if exp.captions is not None and k < len(exp.captions):
            label = exp.captions[k] or "(empty caption)"
        elif varying and k < scores.shape[0]:
            label = ", ".join(f"{exp.tokens[t]} {scores[k, t]:.2f}" for t in varying[:3])
        else:
            label = ""
        tag = "all masked" if k == 0 and not exp.coalitions[0] else ("full image" if k == 1 else f"#{k}")
        ax.set_title(f"{tag}\n" + _wrap(label, chars, max_lines=3), fontsize=8, loc="center", pad=2, **_PLAIN)
    shown = f"{n} of {len(exp.coalitions)}"
    fig.text(0.5, 1 - 0.08 / fig_h, _wrap(f"{_clean(exp.caption)}  ({shown} masked images)", int(fig_w * 11), max_lines=2),
             ha="center", va="top", fontsize=11, **_PLAIN)
    fig.capshap_info = {"panels": n}  # type: ignore[attr-defined]
    return displayable(fig)


def displayable(fig: "Figure") -> "Figure":
    """Give one Figure a ``_repr_png_`` (drawn with Agg, no pyplot) so that Jupyter shows
    it even without ``%matplotlib inline`` (a bare Figure otherwise shows as text);
    returns the figure."""

    def _repr_png_() -> bytes:
        import io

        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", facecolor="white")
        return buf.getvalue()

    fig._repr_png_ = _repr_png_  # type: ignore[attr-defined]
    return fig


def save_figure(fig: "Figure", path: Any, dpi: float | None = None, metadata: dict[str, str] | None = None) -> None:
    """Write ``fig`` as PNG with text metadata (``capshap:panels`` etc. from
    ``fig.capshap_info``), without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    meta = {"Software": "capshap"}
    info = getattr(fig, "capshap_info", {}) or {}
    if "panels" in info:
        meta["capshap:panels"] = str(info["panels"])
    if "tokens" in info:
        import json

        meta["capshap:tokens"] = json.dumps(info["tokens"], ensure_ascii=True)
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    # missing glyphs (a caption in a script the font lacks) are worth a log line, not a raw warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(path, format="png", dpi=dpi or fig.dpi, metadata=meta, facecolor="white")
    for w in caught:
        logger.warning("%s: %s", path, _clean(w.message))
