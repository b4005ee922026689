"""index.html and summary.html in headless Chromium: each image shows its strongest grounded
word's heatmap on load, words are marked by grounding, and the two pages link to each other."""

from __future__ import annotations

import numpy as np
import pytest
from known_words import word_scores

from capshap import Explanation, FunctionScorer, explain_image
from capshap.summary import Summary, write_summary
from capshap.viz.report import Report

H = W = 32


def _img(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 256, size=(H, W, 3), dtype=np.uint8)


_f = word_scores(H, scale=255.0, bird=8.0, dog=12.0)  # 'dog' falls more than 'bird' rises


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> tuple[object, list[Explanation]]:
    out = tmp_path_factory.mktemp("run")
    scorer = FunctionScorer(_f, ["a", "bird", "dog"], caption="a bird dog")
    exps = [explain_image(_img(k), scorer, mask=0, max_evals=32, name=f"im{k}.jpg") for k in range(2)]
    acc = Summary()
    for e in exps:
        e.save(out / e.name.replace(".jpg", ""))
        acc.add(e, link=e.name.replace(".jpg", ".png"))
    write_summary(acc.to_dict(), out)
    rep = Report()
    rep.extra_links["words across the run"] = "summary.html"
    for e in exps:
        rep.add(e)
    rep.write(out / "index.html")
    return out, exps


def _shown(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".item",
        """items => items.map(it => {
             const on = [...it.querySelectorAll('.overlay.on')];
             const pinned = it.querySelector('.tok.pinned');
             return {on: on.map(o => o.dataset.token),
                     opacity: on.map(o => parseFloat(getComputedStyle(o).opacity)),
                     natural: on.map(o => o.naturalWidth),
                     pinned: pinned ? pinned.dataset.token : null,
                     grounding: [...it.querySelectorAll('.tok')].map(b => b.dataset.grounding)};
           })""",
    )


def test_index_shows_each_images_strongest_grounded_heatmap_on_load(chromium_page, run_folder):
    out, exps = run_folder
    page = chromium_page.page
    page.goto((out / "index.html").as_uri())
    page.wait_for_timeout(300)  # the overlay's opacity transition (0.12 s)
    shown = _shown(page)
    assert len(shown) == 2
    for item, e in zip(shown, exps):
        assert e.labels() == ["prior", "grounded", "contradicted"]
        assert abs(e.evidence[2]) > abs(e.evidence[1])  # the contradicted word moves more
        assert item["on"] == ["1"] and item["pinned"] == "1"  # ... yet the grounded one is shown
        assert item["opacity"][0] > 0.5 and item["natural"][0] > 0  # visible, decoded
        assert item["grounding"] == e.labels()
    # the button clears every pin, and pins them again
    page.click("#strongest-btn")
    assert all(s["on"] == [] for s in _shown(page))
    page.click("#strongest-btn")
    assert all(s["on"] == ["1"] for s in _shown(page))
    assert chromium_page.errors == [] and chromium_page.dialogs == []


def test_summary_and_index_link_to_each_other(chromium_page, run_folder):
    out, _ = run_folder
    page = chromium_page.page
    page.goto((out / "index.html").as_uri())
    page.click("text=words across the run")
    page.wait_for_load_state()
    assert page.url.endswith("/summary.html")
    heads = page.eval_on_selector_all("th", "els => els.map(e => e.textContent)")
    # the prior column is left out: the only prior word, "a", has no credit and is listed under the table
    assert heads[:4] == ["word", "images", "\u25bc contradicted", "\u25b2 grounded"] and heads[-1] == "which images"
    assert "mean share inside" not in heads  # no regions in this run
    words = page.eval_on_selector_all("td.word", "els => els.map(e => e.textContent)")
    assert words == ["dog", "bird"]  # the hallucination candidate first; 'a' has no credit
    assert "a" in page.inner_text(".silent")
    # an image link opens that image's PNG next to the page
    href = page.get_attribute("td.imgs a", "href")
    assert href == "./im0.png"
    page.click("text=every image (index.html) >> nth=0")
    page.wait_for_load_state()
    assert page.url.endswith("/index.html")
    assert chromium_page.errors == [] and chromium_page.dialogs == []
