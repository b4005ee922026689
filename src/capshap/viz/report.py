"""One self-contained HTML page for a run: every image, its caption, per-word heatmaps.

:class:`Report` collects explanations one at a time (so a long run never holds them all in
memory) and writes ``index.html``: for each image the photo, its caption, and one button
per token (at most ``max_words``, the strongest; the rest are named in one line), tinted and
marked by its grounding label (see :mod:`capshap.grounding`). On load each image shows its
strongest grounded word's heatmap (``#bare`` in the URL shows the bare photos); hovering
(or focusing) a token shows its heatmap over the photo, clicking pins it; a slider sets the
heatmap opacity and a checkbox the segment outlines. Heatmaps are
pre-rendered RGBA PNG overlays in the colours and on the scale of :func:`capshap.viz.plots.plot`
(one symmetric scale per image, shared by its tokens).

The page needs no network: CSS and JavaScript are inline and every picture is a ``data:``
URI. Images that could not be explained are listed with the reason.

Nothing a file name, caption, token, failure reason or meta value holds can run script or
break the page: all text goes through :func:`text` (HTML-escaped, quotes included;
undecodable file-name bytes shown as U+FFFD), and links to files next to the page go
through :func:`safe_href` (relative ``./`` paths, every segment percent-encoded).

:func:`report` is the public entry point (``capshap.report``): it returns a
:class:`ReportPage` that displays itself in a notebook and can write the file.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from capshap.grounding import CONTRADICTED, GROUNDED, LABELS, PRIOR
from capshap.viz.marks import MEANING, SYMBOL, strongest_grounded, strongest_words
from capshap.viz.plots import (
    DEFAULT_PERCENTILE,
    NEGATIVE_RGB,
    POSITIVE_RGB,
    overlay_rgba,
    segment_boundaries,
    value_scale,
)

if TYPE_CHECKING:  # pragma: no cover
    from capshap import Explanation

__all__ = ["Report", "ReportPage", "report", "safe_href", "text"]

logger = logging.getLogger(__name__)

#: At most this many words per image get a button and a heatmap in the page (see
#: :class:`Report`); a caption with more lists the rest in one line.
MAX_WORDS = 40


def text(value: Any) -> str:
    """Any value as HTML text: ``str()``, undecodable bytes of file names (lone surrogates)
    shown as U+FFFD, control and bidirectional characters shown as escapes (``\\u202e``),
    then escaped with quotes, so it is safe in element text and in double- or
    single-quoted attribute values and cannot reorder itself on the page."""
    from capshap.text import visible

    s = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(visible(s), quote=True)  # bidi and control characters shown, not obeyed


def safe_href(path: str) -> str | None:
    """A relative file path as a link that can only open that file next to the page.

    Every segment is percent-encoded (so ``#``, ``?``, ``%``, ``:``, quotes, spaces and
    non-ASCII name the file instead of changing the URL; raw bytes of undecodable names
    are kept) and the result starts with ``./`` (so a name such as
    ``javascript:alert(1).png`` cannot be read as a scheme). Returns None, and the link is
    left out, for paths that are absolute or climb out with ``..``.
    """
    raw = str(path).replace("\\", "/") if os.sep == "\\" else str(path)
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":" and os.sep == "\\"):
        return None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "./" + "/".join(quote(p.encode("utf-8", "surrogateescape"), safe="") for p in parts)


def _data_uri(array: np.ndarray, fmt: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(array))
    if fmt == "jpeg":
        im.convert("RGB").save(buf, format="JPEG", quality=88)
        mime = "image/jpeg"
    else:
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _rgb_css(rgb: tuple[float, float, float]) -> str:
    return "rgb({},{},{})".format(*(int(round(c * 255)) for c in rgb))


@dataclass
class _Entry:
    name: str
    caption: str
    width: int
    height: int
    photo: str
    tokens: list[str]
    totals: list[float]
    overlays: list[str | None]
    outline: str | None
    vmax: float
    meta: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    original: tuple[int, int] | None = None  # (height, width) before resizing, where recorded
    labels: list[str] = field(default_factory=list)  # grounding label per token (capshap.grounding)
    priors: list[float] = field(default_factory=list)  # score with the image all masked, per token
    shown: list[int] | None = None  # the tokens drawn as buttons (None: all); the rest listed in one line
    strongest: int = -1  # the token whose heatmap shows on load (-1: none)


class Report:
    """Builds the HTML report of a run; add explanations, then :meth:`write`.

    title: the page title. percentile: of |values| over each image's tokens, for its
    colour scale (as in :func:`capshap.viz.plots.plot`).
    """

    def __init__(self, title: str = "capshap explanations", percentile: float = DEFAULT_PERCENTILE,
                 *, per_page: int | None = None, thumb_side: int | None = None, max_words: int = MAX_WORDS):
        self.title = title
        #: at most this many words per image get a button and a heatmap: the caption's words
        #: when it has no more, else the strongest by |evidence|; the rest are listed in one line
        self.max_words = _positive(max_words, "max_words")
        self.percentile = percentile
        #: entries per page (None: one page); :meth:`write` writes index.html, index-2.html, ...
        self.per_page = per_page if per_page is None else max(1, int(per_page))
        #: longest side of the embedded photo and heatmaps (None: the explained size); the
        #: full-size picture stays in the linked NAME.png
        self.thumb_side = thumb_side if thumb_side is None else max(16, int(thumb_side))
        self.extra_links: dict[str, str] = {}
        self.entries: list[_Entry] = []
        self.failures: list[tuple[str, str]] = []

    def add(self, exp: "Explanation", links: dict[str, str] | None = None, meta: dict[str, Any] | None = None) -> None:
        """Add one explanation. links: label -> relative URL (e.g. {"PNG": "1.png"});
        meta: label -> value shown under the caption (e.g. seconds, evaluations)."""
        pv = exp.pixel_values()
        H, W = pv.shape[:2]
        vmax = value_scale(pv, self.percentile)
        shrink = _thumb(H, W, self.thumb_side)
        grounding = exp.grounding()
        T = len(exp.tokens)
        shown = None if T <= self.max_words else strongest_words(exp, self.max_words)
        keep = set(range(T) if shown is None else shown)
        overlays: list[str | None] = []
        for t in range(T):
            v = np.asarray(pv[..., t], dtype=np.float64)
            live = t in keep and np.any(v != 0)
            overlays.append(_data_uri(shrink(overlay_rgba(v, vmax)), "png") if live else None)
        first = strongest_grounded(exp)
        strongest = first if first is not None and overlays[first] is not None else _strongest_shown(overlays, grounding)
        bounds = segment_boundaries(exp.tree)
        outline = None
        if bounds is not None:
            rgba = np.zeros((H, W, 4), dtype=np.uint8)
            rgba[bounds] = (255, 255, 110, 170)
            outline = _data_uri(shrink(rgba), "png")
        totals = [float(o - b) for o, b in zip(np.asarray(exp.outputs), np.asarray(exp.base_values))]
        self.entries.append(
            _Entry(
                name=str(exp.name),
                caption=str(exp.caption),
                width=int(W),
                height=int(H),
                photo=_data_uri(shrink(np.asarray(exp.image)), "jpeg"),
                tokens=[str(t) for t in exp.tokens],
                totals=totals,
                overlays=overlays,
                outline=outline,
                vmax=vmax,
                meta=dict(meta or {}),
                links=_links(exp.name, links),
                original=original_size(exp),
                labels=[g.label for g in grounding],
                priors=[g.prior for g in grounding],
                shown=shown,
                strongest=strongest,
            )
        )

    def __len__(self) -> int:
        return len(self.entries) + len(self.failures)

    def add_failure(self, name: str, reason: str) -> None:
        """List an image that could not be explained, with why."""
        self.failures.append((str(name), str(reason)))

    # ------------------------------------------------------------------------ output
    def pages(self) -> int:
        """How many pages :meth:`write` writes."""
        if not self.per_page:
            return 1
        return max(1, -(-len(self.entries) // self.per_page))

    def html(self, page: int = 1, page_name: Any = None) -> str:
        """The page as one string: all entries, or with ``per_page`` those of ``page``
        (1-based; failures are listed on the last page). ``page_name(k)`` names page k's
        file for the navigation links."""
        e = text
        n_pages = self.pages()
        if not 1 <= page <= n_pages:
            raise ValueError(f"page must be from 1 to {n_pages}, got {page!r}")
        start = (page - 1) * self.per_page if self.per_page else 0
        shown = self.entries[start:start + self.per_page] if self.per_page else self.entries
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(self.title)}</title>",
            f"<style>{_CSS.replace('POS', _rgb_css(POSITIVE_RGB)).replace('NEG', _rgb_css(NEGATIVE_RGB))}</style>",
            "</head><body>",
            "<header>",
            f"<h1>{e(self.title)}</h1>",
            f'<p class="summary">{len(self.entries)} image{"s" if len(self.entries) != 1 else ""} explained'
            + (f", {len(self.failures)} skipped" if self.failures else "")
            + ". Each image shows its strongest grounded word; hover over a word to see which regions made "
            "the captioner say it, click to keep it. Words are marked by what the image adds to them "
            "(evidence: score on the image minus score with it all masked): "
            f"{SYMBOL[GROUNDED]} grounded, {SYMBOL[PRIOR]} from the language prior, "
            f"{SYMBOL[CONTRADICTED]} contradicted by the image.</p>",
            '<div class="controls">',
            '<label>heatmap opacity <input type="range" id="opacity" min="0" max="100" value="70"></label>',
            '<button type="button" id="strongest-btn" title="pin, in every image, its strongest grounded word, '
            'or clear every pin">clear the shown words</button>',
            (
                '<label><input type="checkbox" id="outlines" checked> segment outlines</label>'
                if any(en.outline is not None for en in self.entries)
                else ""
            ),
            '<span class="legend"><span class="neg">lowers the word\'s score</span>'
            '<span class="bar"></span><span class="pos">raises it</span></span>',
            '<span class="glegend">'
            + "".join(
                f'<span class="g" data-grounding="{k}" title="{e(MEANING[k])}">{SYMBOL[k]} {k}</span>' for k in LABELS
            )
            + "</span>",
            "</div>",
            "</header>",
            self._nav(page, n_pages, page_name),
            "<main>",
        ]
        for i, en in enumerate(shown, start=start):
            parts.append(self._entry_html(i, en))
        if self.failures and page == n_pages:
            parts.append('<section class="failures"><h2>Skipped</h2><ul>')
            for name, reason in self.failures:
                parts.append(f'<li class="failure"><b>{e(name)}</b>: {e(reason)}</li>')
            parts.append("</ul></section>")
        parts += ["</main>", self._nav(page, n_pages, page_name), f"<script>{_JS}</script>", "</body></html>"]
        return "\n".join(parts)

    def _nav(self, page: int, n_pages: int, page_name: Any) -> str:
        extra = [f'<a href="{text(u)}">{text(k)}</a>' for k, u in self.extra_links.items()]
        if n_pages == 1:
            return f'<nav class="pages">{" &middot; ".join(extra)}</nav>' if extra else ""
        name = page_name or _page_file
        links = []
        for k in range(1, n_pages + 1):
            if k == page:
                links.append(f"<b>{k}</b>")
            elif k in (1, n_pages) or abs(k - page) <= 3:
                links.append(f'<a href="{text(name(k))}">{k}</a>')
            elif links[-1] != "&hellip;":
                links.append("&hellip;")
        return f'<nav class="pages">page {" ".join(links)}{" &middot; " if extra else ""}{" &middot; ".join(extra)}</nav>'


    def _entry_html(self, i: int, en: _Entry) -> str:
        e = text
        live = [t for t, uri in enumerate(en.overlays) if uri is not None]
        if en.labels:
            strongest = en.strongest
        else:  # an entry built without grounding
            strongest = max(live, key=lambda t: abs(en.totals[t])) if live else -1
        # at least 320 px wide (small images are scaled up), at most 440 px tall
        shown_w = int(round(min(max(en.width, 320), 440 * en.width / en.height)))
        out = [
            f'<section class="item" id="item-{i}" data-name="{e(en.name)}" data-strongest="{strongest}">',
            f"<h2>{e(en.name)}</h2>",
            f'<div class="stage" style="max-width:{shown_w}px;aspect-ratio:{en.width}/{en.height}">',
            f'<img class="photo" alt="{e(en.name)}" src="{en.photo}">',
        ]
        for t, uri in enumerate(en.overlays):
            if uri is not None:
                out.append(f'<img class="overlay" alt="" data-token="{t}" src="{uri}">')
        if en.outline is not None:
            out.append(f'<img class="outline" alt="" src="{en.outline}">')
        out.append("</div>")
        out.append(f'<p class="caption">{e(en.caption)}</p>')
        out.append('<p class="tokens">')
        buttons = range(len(en.tokens)) if en.shown is None else sorted(en.shown)
        for t in buttons:
            tok, total = en.tokens[t], en.totals[t]
            zero = en.overlays[t] is None
            g = en.labels[t] if t < len(en.labels) else ""
            tip = f"{tok}: total credit {total:+.3g}" + (" (no region changes it)" if zero else "")
            if g:
                prior = en.priors[t] if t < len(en.priors) else float("nan")
                tip += f"; prior {prior:+.3g}, evidence {total:+.3g}: {g}, {MEANING[g]}"
            mark = f" {SYMBOL[g]}" if g else ""
            out.append(
                f'<button class="tok" type="button" data-token="{t}" data-zero="{int(zero)}" data-grounding="{g}" '
                f'title="{e(tip)}">{e(tok) or "&#9251;"}<small>{total:+.2f}{mark}</small></button>'
            )
        out.append("</p>")
        if en.shown is not None:
            rest = [t for t in range(len(en.tokens)) if t not in set(en.shown)]
            out.append(f'<p class="rest">{_rest_line(en.tokens, rest, len(en.shown))}</p>')
        meta = [f"{e(v)} {e(k)}" for k, v in en.meta.items()]
        if en.original is not None and en.original != (en.height, en.width):
            meta.insert(0, f"explained at {en.width}&times;{en.height} px (original {en.original[1]}&times;{en.original[0]})")
        meta.append(f"colour scale &plusmn;{en.vmax:.3g} per pixel")
        links = [f'<a href="{e(u)}">{e(k)}</a>' for k, u in en.links.items()]
        out.append(f'<p class="meta">{" &middot; ".join(meta + links)}</p>')
        out.append("</section>")
        return "\n".join(out)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page (atomically) and return its path. With ``per_page``, page k > 1
        goes next to it as STEM-k.html (index-2.html, ...)."""
        p = Path(path)

        def name(k: int) -> str:
            return p.name if k == 1 else f"{p.stem}-{k}{p.suffix}"

        for k in range(2, self.pages() + 1):
            _write_text(p.with_name(name(k)), self.html(k, name))
        return _write_text(p, self.html(1, name))


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _strongest_shown(overlays: list[str | None], grounding: list[Any]) -> int:
    live = [t for t, uri in enumerate(overlays) if uri is not None]
    return max(live, key=lambda t: abs(grounding[t].evidence)) if live else -1


def _rest_line(tokens: list[str], rest: list[int], n_shown: int, limit: int = 200) -> str:
    """One line naming the words left out (the first ``limit``, then a count)."""
    named = ", ".join(text(tokens[t]) for t in rest[:limit])
    more = f" &hellip; (+{len(rest) - limit})" if len(rest) > limit else ""
    return f"{len(rest)} more words (the {n_shown} strongest are shown): {named}{more}"


def _page_file(k: int) -> str:
    return "index.html" if k == 1 else f"index-{k}.html"


def _thumb(H: int, W: int, side: int | None) -> Any:
    """A function that shrinks (H, W, C) uint8 pictures to ``side`` pixels on the longer
    side (area-averaged), or returns them as they are."""
    if side is None or max(H, W) <= side:
        return lambda a: a
    scale = side / max(H, W)
    size = (max(1, round(W * scale)), max(1, round(H * scale)))

    def shrink(a: np.ndarray) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize(size, Image.Resampling.BOX))

    return shrink


def original_size(exp: "Explanation") -> tuple[int, int] | None:
    """(height, width) of the image before it was fitted for explaining, from
    ``exp.params["original_size"]`` ([H, W]); None where the run did not record it."""
    value = (exp.params or {}).get("original_size")
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def _links(name: Any, links: dict[str, str] | None) -> dict[str, str]:
    """label -> safe relative href (see :func:`safe_href`); unsafe paths are dropped with a warning."""
    out: dict[str, str] = {}
    for label, path in (links or {}).items():
        href = safe_href(path)
        if href is None:
            logger.warning("report: left out the %r link of %s: %r is not a path inside the report's folder",
                           label, name, path)
        else:
            out[str(label)] = href
    return out


class ReportPage:
    """The HTML report of some explanations, for notebooks and files.

    Displays itself in Jupyter (``_repr_html_``: the page in a sandboxed ``iframe``, so its
    styles and script stay inside it); :attr:`html` is the whole page and :attr:`path`
    where it was written, if it was.
    """

    def __init__(self, report: Report, path: Path | None = None):
        self.report = report
        self.html = report.html()
        self.path = path

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page (atomically) to ``path``; returns the path."""
        self.path = _write_text(path, self.html)
        return self.path

    def _repr_html_(self) -> str:
        n = len(self.report.entries)
        height = min(900, 190 + 600 * max(1, -(-n // 2)))
        return (
            f'<iframe class="capshap-report" sandbox="allow-scripts" title="{text(self.report.title)}" '
            f'style="width:100%;height:{height}px;border:1px solid #ddd" srcdoc="{html.escape(self.html, quote=True)}">'
            "</iframe>"
        )

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (f"ReportPage(title={self.report.title!r}, images={len(self.report.entries)}, "
                f"skipped={len(self.report.failures)}{where})")


def report(
    explanations: Any,
    path: str | os.PathLike[str] | None = None,
    title: str = "capshap explanations",
    percentile: float = DEFAULT_PERCENTILE,
) -> ReportPage:
    """The HTML report of some explanations: one self-contained page (no network needed).

    Parameters
    ----------
    explanations : Explanation or iterable of Explanation
    path : path, optional
        Where to write the page (e.g. ``"out/index.html"``); nothing is written without it.
    title : str
        The page's title.
    percentile : float
        Of |values| over each image's tokens, for its colour scale.

    Returns
    -------
    ReportPage
        Shows the page in a notebook (``display(capshap.report(exps))``); ``.html`` is the
        page as a string, ``.path`` where it was written.
    """
    from capshap import Explanation

    rep = Report(title, percentile=percentile)
    for exp in [explanations] if isinstance(explanations, Explanation) else explanations:
        rep.add(exp)
    page = ReportPage(rep)
    if path is not None:
        page.write(path)
    return page


def _write_text(path: str | os.PathLike[str], content: str) -> Path:
    from capshap.atomic import atomic_write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(p, content)  # a unique temporary name: two writers never clash


_CSS = """
nav.pages{margin:10px 0;font-size:.95em}nav.pages a,nav.pages b{padding:0 4px}
:root{--ov:0.7;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fafafa}
body{margin:0 auto;max-width:1200px;padding:0 16px 40px}
header{position:sticky;top:0;background:#fafafaee;padding:8px 0 10px;border-bottom:1px solid #ddd;z-index:5}
h1{font-size:1.4em;margin:.3em 0}
.summary{margin:.2em 0;color:#555}
#strongest-btn{font:inherit;font-size:.95em;padding:2px 8px;border:1px solid #bbb;border-radius:4px;background:#fff;cursor:pointer}
.controls{display:flex;flex-wrap:wrap;gap:18px;align-items:center;font-size:.92em}
.legend{display:inline-flex;align-items:center;gap:6px;color:#555}
.legend .bar{display:inline-block;width:120px;height:10px;border:1px solid #bbb;
 background:linear-gradient(to right,NEG,rgba(255,255,255,0) 50%,POS)}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:22px;margin-top:16px}
.item{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:10px 12px}
.item h2{font-size:.95em;margin:0 0 6px;color:#666;font-weight:600;word-break:break-all}
.stage{position:relative;width:100%;background:#eee}
.stage img{position:absolute;left:0;top:0;width:100%;height:100%;display:block}
.stage .overlay{opacity:0;transition:opacity .12s;pointer-events:none}
.stage .overlay.on{opacity:var(--ov)}
.stage .outline{pointer-events:none}
body.no-outlines .stage .outline{display:none}
.stage.active .photo{filter:grayscale(1) contrast(.75) brightness(1.15)}
.caption{font-size:1.05em;margin:.6em 0 .3em}
.tokens{display:flex;flex-wrap:wrap;gap:4px;margin:.3em 0}
.tok{font:inherit;font-size:.95em;border:1px solid #ccc;background:#f4f4f4;border-radius:4px;
 padding:2px 7px;cursor:pointer;line-height:1.25}
.tok small{display:block;font-size:.68em;color:#777}
.tok[data-grounding=grounded]{background:#ffe3ea;border-color:#e0577a}
.tok[data-grounding=prior]{background:#efefef;border-color:#c4c4c4;border-style:dashed}
.tok[data-grounding=contradicted]{background:#e1efff;border-color:#3f86d6}
.tok[data-zero="1"]{color:#999;cursor:default}
.glegend{display:inline-flex;gap:6px}.glegend .g{padding:0 6px;border:1px solid #ccc;border-radius:4px}
.glegend .g[data-grounding=grounded]{background:#ffe3ea;border-color:#e0577a}
.glegend .g[data-grounding=prior]{background:#efefef;border-style:dashed}
.glegend .g[data-grounding=contradicted]{background:#e1efff;border-color:#3f86d6}
.rest{font-size:.8em;color:#777;margin:.2em 0;overflow-wrap:anywhere}
.tok:hover,.tok:focus{border-color:#888;outline:none}
.tok.pinned{background:#222;color:#fff;border-color:#222}
.tok.pinned small{color:#ddd}
.meta{font-size:.8em;color:#777;margin:.4em 0 0}
.meta a{color:#357}
.failures{grid-column:1/-1;background:#fff4f4;border:1px solid #f0caca;border-radius:8px;padding:8px 14px}
.failures h2{font-size:1em;margin:.3em 0}
"""

_JS = """
(function(){
  var root=document.documentElement;
  var op=document.getElementById('opacity');
  function setOp(){root.style.setProperty('--ov',(op.value/100).toString());}
  op.addEventListener('input',setOp);setOp();
  var ol=document.getElementById('outlines');
  if(ol){ol.addEventListener('change',function(){document.body.classList.toggle('no-outlines',!ol.checked);});}
  var pins=[];
  document.querySelectorAll('.item').forEach(function(item){
    var stage=item.querySelector('.stage');
    var pinned=null;
    function show(t){
      stage.querySelectorAll('.overlay').forEach(function(o){o.classList.toggle('on',o.dataset.token===t);});
      stage.classList.toggle('active',t!==null);
    }
    function pin(t){
      pinned=t;
      item.querySelectorAll('.tok').forEach(function(x){x.classList.toggle('pinned',x.dataset.token===pinned);});
      show(pinned);
    }
    item.querySelectorAll('.tok').forEach(function(b){
      var t=b.dataset.token;
      b.addEventListener('mouseenter',function(){show(t);});
      b.addEventListener('focus',function(){show(t);});
      b.addEventListener('mouseleave',function(){show(pinned);});
      b.addEventListener('blur',function(){show(pinned);});
      b.addEventListener('click',function(){pin(pinned===t?null:t);});
    });
    pins.push(function(on){var s=item.dataset.strongest;pin(on&&s!=='-1'?s:null);});
  });
  var all=false;var sb=document.getElementById('strongest-btn');
  function strongest(on){all=on;pins.forEach(function(f){f(on);});
    sb.textContent=on?'clear the shown words':"show each image's strongest word";}
  sb.addEventListener('click',function(){strongest(!all);});
  strongest(location.hash!=='#bare');
})();
"""
