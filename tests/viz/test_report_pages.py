"""A report of many images: pages of per_page entries, thumbnails, navigation links."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from capshap.explanation import Explanation
from capshap.run import explain_image
from capshap.interfaces import FunctionScorer
from capshap.viz.report import Report


def _exp(i: int) -> Explanation:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    sc = FunctionScorer(lambda ims: ims.reshape(len(ims), -1, 3).mean(1)[:, :2] / 255.0, ["red", "green"])
    return explain_image(img, sc, mask=0, max_evals=12, batch_size=4, name=f"img{i}.png")


def _photo_sizes(page: str) -> list[tuple[int, int]]:
    out = []
    for b64 in re.findall(r'class="photo" alt="[^"]*" src="data:image/jpeg;base64,([^"]+)"', page):
        out.append(Image.open(io.BytesIO(base64.b64decode(b64))).size)
    return out


def test_pages_hold_per_page_entries_and_link_each_other(tmp_path):
    rep = Report("many", per_page=2, thumb_side=30)
    for i in range(5):
        rep.add(_exp(i))
    rep.add_failure("bad.png", "not an image")
    rep.extra_links["words across the run"] = "summary.html"
    first = rep.write(tmp_path / "index.html")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["index-2.html", "index-3.html", "index.html"]
    pages = [first.read_text(), (tmp_path / "index-2.html").read_text(), (tmp_path / "index-3.html").read_text()]
    names = [re.findall(r'data-name="([^"]+)"', p) for p in pages]
    assert names == [["img0.png", "img1.png"], ["img2.png", "img3.png"], ["img4.png"]]
    assert all("5 images explained" in p for p in pages)
    assert "bad.png" in pages[2] and "bad.png" not in pages[0]
    assert 'href="index-3.html"' in pages[0] and 'href="index.html"' in pages[2]
    assert all('href="summary.html"' in p for p in pages)
    # thumbnails: the longer side is 30 px, not the explained 90 px
    assert all(size == (30, 20) for p in pages for size in _photo_sizes(p))


def test_without_per_page_one_full_size_page(tmp_path):
    rep = Report("few")
    for i in range(3):
        rep.add(_exp(i))
    rep.write(tmp_path / "index.html")
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]
    assert _photo_sizes((tmp_path / "index.html").read_text()) == [(90, 60)] * 3
