"""How an explanation shows itself in Jupyter: an HTML summary and one-token figures.

:func:`explanation_html` is :meth:`capshap.Explanation._repr_html_`: the image's name and
caption, its size (and the original size, where the run recorded it), the strongest word's
heatmap next to the photo as small inline PNGs (``data:`` URIs, in the colours and on the
scale of :func:`capshap.viz.plots.plot`), every token with its total credit (its evidence),
tinted and marked by its grounding label (see :mod:`capshap.grounding`; the tooltip gives
prior and evidence), a legend with the thresholds and counts, and the settings of the run. All text from the image, the captioner or the settings is escaped;
the fragment has no script and no ``<style>`` (inline styles only), so it cannot restyle
the notebook around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from capshap.grounding import LABELS
from capshap.viz.marks import BACKGROUND, BORDER, MEANING, SYMBOL, legend_text, strongest_words
from capshap.viz.plots import (
    DEFAULT_PERCENTILE,
    grey_background,
    overlay_rgba,
    value_scale,
)
from capshap.viz.report import MAX_WORDS, _data_uri, original_size, text

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from capshap import Explanation

__all__ = ["explanation_html", "summary", "strongest_token", "heatmap_rgb", "show"]

#: Longest side, in pixels, of the inline pictures of :func:`explanation_html`.
INLINE_SIDE = 256


def totals(exp: "Explanation") -> np.ndarray:
    """(T,) float64: each token's total credit, ``outputs - base_values``."""
    return np.asarray(exp.outputs, dtype=np.float64) - np.asarray(exp.base_values, dtype=np.float64)


def strongest_token(exp: "Explanation") -> int | None:
    """Index of the token with the largest |total credit| among those some region changes
    (then among all tokens); None when there are no tokens."""
    T = len(exp.tokens)
    if T == 0:
        return None
    tot = np.abs(np.nan_to_num(totals(exp), nan=0.0))
    pv = exp.pixel_values()
    live = [t for t in range(T) if np.any(np.asarray(pv[..., t]) != 0)]
    pool = live or list(range(T))
    return max(pool, key=lambda t: tot[t])


def _details(exp: "Explanation") -> str:
    h, w = (int(v) for v in np.asarray(exp.image).shape[:2])
    size = f"explained at {w}x{h} px"
    orig = original_size(exp)
    if orig is not None and orig != (h, w):
        size += f" (original {orig[1]}x{orig[0]} px)"
    elif orig is not None:
        size += " (original size)"
    return f"{size}, {len(exp.tokens)} tokens, {exp.n_evals} evaluations"


def summary(exp: "Explanation") -> str:
    """One line: name, caption, explained size and the original size where recorded."""
    return f"{exp.name}: {exp.caption!r}, {_details(exp)}"


def _fit(rgb: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BILINEAR))


def heatmap_rgb(exp: "Explanation", token: int, vmax: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8: one token's values over a light grey copy of the image, as in
    :func:`capshap.viz.plots.plot` (red raises the token's score, blue lowers it).

    vmax: the colour scale; default the shared scale of all the explanation's tokens.
    """
    pv = exp.pixel_values()
    if vmax is None:
        vmax = value_scale(pv, DEFAULT_PERCENTILE)
    light = 0.35 * grey_background(exp.image) + 0.6  # (H, W) in [0.6, 0.95]
    over = overlay_rgba(np.asarray(pv[..., token], dtype=np.float64), vmax).astype(np.float64) / 255.0
    a = over[..., 3:4]
    rgb = over[..., :3] * a + light[..., None] * (1.0 - a)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _photo_rgb(image: np.ndarray) -> np.ndarray:
    from capshap.viz.plots import _display_image

    return np.clip(np.rint(_display_image(image) * 255.0), 0, 255).astype(np.uint8)


def _settings_rows(exp: "Explanation") -> list[tuple[str, Any]]:
    if exp.settings is not None:
        return list(exp.settings.to_dict().items())
    return [(str(k), v) for k, v in (exp.params or {}).items()]


def _fmt(v: float) -> str:
    return f"{v:+.3g}" if np.isfinite(v) else str(v)


def explanation_html(exp: "Explanation", token: int | str | None = None, side: int = INLINE_SIDE,
                     max_words: int = MAX_WORDS) -> str:
    """An HTML fragment showing ``exp`` (see the module docstring).

    token: which token's heatmap to show (index or string); default the strongest one.
    side: longest side in pixels of the inline pictures. max_words: at most this many
    tokens are shown as cells (the strongest; the others are named in one line).
    """
    e = text
    tot = totals(exp)
    t_show = strongest_token(exp) if token is None else _token_index(exp, token)
    photo = _photo_rgb(exp.image)
    pics = [
        '<figure style="margin:0">'
        f'<img class="capshap-photo" alt="{e(exp.name)}" src="{_data_uri(_fit(photo, side), "png")}">'
        '<figcaption style="font-size:.85em;color:#666">image</figcaption></figure>'
    ]
    if t_show is not None:
        heat = _fit(heatmap_rgb(exp, t_show), side)
        pics.append(
            '<figure style="margin:0">'
            f'<img class="capshap-heatmap" alt="{e("heatmap of " + repr(exp.tokens[t_show]))}" '
            f'src="{_data_uri(heat, "png")}">'
            f'<figcaption style="font-size:.85em;color:#666">{"strongest word " if token is None else ""}'
            f"<b>{e(exp.tokens[t_show])}</b> total {_fmt(float(tot[t_show]))}"
            "<br>red raises its score, blue lowers it</figcaption></figure>"
        )
    grounding = exp.grounding()
    legend = legend_text(exp.grounding_thresholds)
    T = len(exp.tokens)
    shown = range(T) if T <= max_words else strongest_words(exp, max_words)
    cells = []
    for t in shown:
        tok, g = exp.tokens[t], grounding[t]
        border = "2px solid #222" if t == t_show else f"1px solid {BORDER[g.label]}"
        tip = f"{tok}: prior {_fmt(g.prior)}, evidence {_fmt(g.evidence)}; {g.label}: {MEANING[g.label]}"
        cells.append(
            f'<span class="capshap-token" data-grounding="{g.label}" title="{e(tip)}" '
            'style="display:inline-block;margin:2px;padding:1px 6px;'
            f'border:{border};border-radius:4px;background:{BACKGROUND[g.label]};text-align:center">'
            f'{e(tok) or "&#9251;"}<br><small style="color:#555">{_fmt(float(tot[t]))} {SYMBOL[g.label]}</small></span>'
        )
    if T > max_words:
        rest = [exp.tokens[t] for t in sorted(set(range(T)) - set(shown))]
        cells.append(
            f'<div class="capshap-rest" style="font-size:.8em;color:#777">{len(rest)} more words '
            f'(the {max_words} strongest are shown): {e(", ".join(rest[:200]))}{" …" if len(rest) > 200 else ""}</div>'
        )
    counts = {k: sum(g.label == k for g in grounding) for k in LABELS}
    key = " &nbsp; ".join(
        f'<span style="white-space:nowrap">{e(legend[k])}: <b>{counts[k]}</b></span>' for k in LABELS
    )
    cells.append(
        f'<div class="capshap-grounding-legend" style="font-size:.8em;color:#555;margin-top:2px">'
        f"evidence = score on the image &minus; score with it all masked (the prior). {key}</div>"
    )
    rows = "".join(
        f'<tr><td style="text-align:left;padding:0 8px 0 0"><code>{e(k)}</code></td>'
        f'<td style="text-align:left"><code>{e(v)}</code></td></tr>'
        for k, v in _settings_rows(exp)
    )
    which = "settings" if exp.settings is not None else "parameters"
    return (
        '<div class="capshap-explanation" style="font-family:system-ui,sans-serif;line-height:1.35">'
        f'<div style="font-size:1.1em"><b>{e(exp.name)}</b>: <q class="capshap-caption">{e(exp.caption)}</q></div>'
        f'<div class="capshap-summary" style="font-size:.85em;color:#666">{e(_details(exp))}</div>'
        f'<div style="display:flex;flex-wrap:wrap;gap:10px;margin:6px 0">{"".join(pics)}</div>'
        f'<div class="capshap-tokens">{"".join(cells)}</div>'
        f'<details style="margin-top:4px"><summary style="cursor:pointer;font-size:.9em">{which}</summary>'
        f'<table style="font-size:.85em">{rows}</table></details>'
        "</div>"
    )


def _token_index(exp: "Explanation", token: int | str) -> int:
    from capshap.viz.plots import _token_indices

    return _token_indices(exp, [token])[0]


def show(exp: "Explanation", token: int | str | None = None, **kwargs: Any) -> "Figure":
    """The image and one token's heatmap (default the strongest token) as a Figure that
    displays itself in a notebook; kwargs go to :func:`capshap.viz.plots.plot`."""
    from capshap.viz.plots import plot

    t = strongest_token(exp) if token is None else _token_index(exp, token)
    if t is None:
        raise ValueError(f"{exp.name}: the explanation has no tokens to show")
    return plot(exp, [t], **kwargs)  # plot() figures display themselves in Jupyter
