"""The HTML report and the notebook view in a real browser (headless Chromium).

Links must open exactly the file they name, whatever characters the name holds, and no
text from a file name, caption, token, failure reason or meta value may run script.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

from capshap import Explanation, FunctionScorer, explain_image
from capshap.viz.report import Report, report, safe_href

# payloads: each would open a dialog (or set window.pwned) if it ever ran
XSS = [
    "<img src=x onerror=alert('img')>",
    "<script>alert('script')</script>",
    "\"><svg onload=alert('attr')>",
    "'><b onmouseover=alert('single')>x</b>",
    "</title><script>window.pwned=1</script>",
    "&amp; &lt;b&gt; ünïcødé ✓ \u202e",
]


def _scorer(tokens: list[str], caption: str) -> FunctionScorer:
    def f(batch: np.ndarray) -> np.ndarray:
        b = batch.astype(np.float64) / 255.0
        left = b[:, :, : b.shape[2] // 2].mean(axis=(1, 2, 3))
        right = b[:, :, b.shape[2] // 2 :].mean(axis=(1, 2, 3))
        cols = [left * (k + 1) - right * k for k in range(len(tokens))]
        return np.stack(cols, axis=1)

    return FunctionScorer(f, tokens, caption=caption)


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def hostile_exp() -> Explanation:
    tokens = [XSS[2], XSS[3], "bird"]
    return explain_image(_image(), _scorer(tokens, XSS[1]), mask=0, max_evals=16, name=XSS[0])


# --------------------------------------------------------------------------- pure checks
@pytest.mark.parametrize(
    "path",
    ["javascript:alert(document.domain).jpg", "a#b.png", "q?x=1.png", "100%.png", "sp ace.png",
     'q"uote\'s.png', "<lt>&amp.png", "ünï ✓.png", "data:text/html,hi.png", "sub/dir/x.png"],
)
def test_safe_href_is_relative_and_percent_encoded(path):
    href = safe_href(path)
    assert href.startswith("./")
    # only unreserved characters, '/', and %XX escapes remain: no scheme, query, fragment or quote
    assert re.fullmatch(r"\./(?:[A-Za-z0-9._~\-/]|%[0-9A-F]{2})+", href), href
    from urllib.parse import unquote

    assert unquote(href[2:]) == path


@pytest.mark.parametrize("path", ["/etc/passwd", "../up.png", "a/../../b.png", "", "."])
def test_safe_href_refuses_paths_outside_the_folder(path):
    assert safe_href(path) is None


def test_unsafe_links_are_left_out_with_a_warning(hostile_exp, caplog):
    rep = Report("t")
    with caplog.at_level("WARNING", logger="capshap.viz.report"):
        rep.add(hostile_exp, links={"up": "../secret.json", "ok": "ok.png"})
    assert rep.entries[0].links == {"ok": "./ok.png"}
    assert "secret.json" in caplog.text and "up" in caplog.text


def test_report_returns_page_with_repr_html_and_writes_it(hostile_exp, tmp_path):
    page = report([hostile_exp], title="T <x>")
    assert page.path is None and not list(tmp_path.iterdir())
    frag = page._repr_html_()
    assert frag.startswith("<iframe") and 'sandbox="allow-scripts"' in frag
    assert "allow-same-origin" not in frag  # the page's script cannot reach the notebook
    # the whole page is inside one attribute: no raw '<' or '"' from it leaks out
    srcdoc = re.search(r'srcdoc="([^"]*)"', frag).group(1)
    assert "<" not in srcdoc and len(srcdoc) > len(page.html)
    out = report(hostile_exp, path=tmp_path / "r" / "index.html")
    assert out.path == tmp_path / "r" / "index.html"
    assert out.path.read_text(encoding="utf-8") == out.html


def test_undecodable_file_names_do_not_break_the_page(tmp_path):
    name = os.fsdecode(b"bad\xff name")  # a lone surrogate, as os.listdir gives it
    exp = explain_image(_image(1), _scorer(["a"], "a"), mask=0, max_evals=8, name=name)
    rep = Report(name)
    rep.add(exp, links={"PNG": name + ".png"})
    rep.add_failure(name, name)
    p = rep.write(tmp_path / "index.html")
    page = p.read_text(encoding="utf-8")
    assert "bad\ufffd name" in page
    assert 'href="./bad%FF%20name.png"' in page


# --------------------------------------------------------------------------- in Chromium
LINK_NAMES = [
    "javascript:alert(document.domain).txt",
    "a#b?c=1.txt",
    "100% done.txt",
    "q\"uote's <x> & y.txt",
    "ünïcødé ✓ 日本.txt",
    "data:text/html,<script>alert(1)</script>.txt",
    "sub dir/in #sub.txt",
]


def test_links_open_exactly_their_files_and_never_run_script(chromium_page, tmp_path, hostile_exp):
    names = list(LINK_NAMES)
    if sys.platform.startswith("linux"):
        names.append(os.fsdecode(b"raw\xfe byte.txt"))
    for k, n in enumerate(names):
        f = tmp_path / n
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"file number {k}", encoding="utf-8")
    rep = Report("links")
    rep.add(hostile_exp, links={f"L{k}": n for k, n in enumerate(names)})
    index = rep.write(tmp_path / "index.html")
    page = chromium_page.page
    for k in range(len(names)):
        page.goto(index.as_uri())
        with page.expect_navigation(timeout=5_000):
            page.click(f"a:text-is('L{k}')")
        assert page.url.startswith("file://"), page.url
        assert page.inner_text("body").strip() == f"file number {k}", (names[k], page.url)
    assert chromium_page.dialogs == []
    assert chromium_page.errors == []


def test_report_text_is_shown_literally_and_runs_nothing(chromium_page, tmp_path, hostile_exp):
    rep = Report(XSS[4])
    rep.add(hostile_exp, meta={XSS[5]: XSS[0], "s": XSS[1]})
    rep.add_failure(XSS[3], XSS[2])
    index = rep.write(tmp_path / "index.html")
    page = chromium_page.page
    page.goto(index.as_uri())
    assert page.title() == XSS[4]
    assert page.inner_text("h1") == XSS[4]
    assert page.inner_text(".item h2") == XSS[0]
    assert page.get_attribute(".item", "data-name") == XSS[0]
    assert page.get_attribute(".item .photo", "alt") == XSS[0]
    assert page.inner_text(".caption") == XSS[1]
    labels = page.eval_on_selector_all(".tok", "els => els.map(e => e.firstChild.textContent)")
    assert labels == hostile_exp.tokens
    # the right-to-left override is shown as an escape, not obeyed (it would reorder the text)
    shown = XSS[5].replace("\u202e", "\\u202e")
    assert XSS[0] in page.inner_text(".meta") and shown in page.inner_text(".meta")
    assert "\u202e" not in page.content()
    assert page.inner_text(".failure") == f"{XSS[3]}: {XSS[2]}"
    # hover and click every token, pin the strongest words: handlers run, payloads do not
    for b in page.query_selector_all(".tok"):
        b.hover()
        b.click()
    page.click("#strongest-btn")
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # only the report's own
    assert page.evaluate("document.querySelectorAll('svg, iframe, [onerror], [onload], [onmouseover]').length") == 0
    assert chromium_page.dialogs == [] and chromium_page.errors == []
    decoded = page.eval_on_selector_all(".stage img", "els => els.map(e => e.naturalWidth)")
    assert decoded and all(w == 32 for w in decoded)


def test_explanation_repr_html_in_chromium(chromium_page, hostile_exp):
    exp = hostile_exp
    exp.params["original_size"] = [480, 640]
    page = chromium_page.page
    page.set_content(f"<!doctype html><meta charset=utf-8><body>{exp._repr_html_()}</body>")
    assert page.inner_text(".capshap-caption") == XSS[1]
    assert XSS[0] in page.inner_text(".capshap-explanation b")
    summary = page.inner_text(".capshap-summary")
    assert "original 640x480 px" in summary and "explained at 32x24 px" in summary
    labels = page.eval_on_selector_all(".capshap-token", "els => els.map(e => e.firstChild.textContent)")
    assert labels == exp.tokens
    imgs = page.eval_on_selector_all(
        ".capshap-explanation img", "els => els.map(e => [e.className, e.complete, e.naturalWidth, e.naturalHeight])")
    assert [i[0] for i in imgs] == ["capshap-photo", "capshap-heatmap"]
    assert all(c and w == 32 and h == 24 for _, c, w, h in imgs)
    assert page.evaluate("document.querySelectorAll('script, svg, [onerror], [onload], [onmouseover]').length") == 0
    assert chromium_page.dialogs == [] and chromium_page.errors == []
