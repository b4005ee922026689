"""Dataset summary: per-word statistics across images, against a direct computation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from capshap.summary import box_regions, summarize, write_summary


def _exp(name, tokens, values, image_shape=None):
    H, W = values.shape[:2]
    return SimpleNamespace(name=name, tokens=tokens, values=values, image=np.zeros((H, W, 3), np.uint8),
                           params={}, info={}, original_size=None)


def test_word_stats_counts_credit_and_share_inside_boxes():
    rng = np.random.default_rng(0)
    v1 = rng.normal(size=(10, 12, 3))
    v2 = rng.normal(size=(10, 12, 2))
    e1 = _exp("a.jpg", ["a", "Dog,", "runs"], v1)
    e2 = _exp("b.jpg", ["dog", "sleeps"], v2)
    boxes = {"a.jpg": [[0, 0, 6, 10]]}  # left half of a.jpg; b.jpg has none
    s = summarize([e1, e2], box_regions(boxes))
    by = {w["word"]: w for w in s["words"]}
    assert s["images"] == 2 and s["words"][0]["word"] == "dog"
    assert by["dog"]["images"] == 2 and by["runs"]["images"] == 1
    assert by["dog"]["mean_credit"] == pytest.approx((v1[..., 1].sum() + v2[..., 0].sum()) / 2)
    pos = np.clip(v1[..., 1], 0, None)
    share = pos[:, :6].sum() / pos.sum()  # pixel centres x + 0.5 <= 6: columns 0..5
    assert by["dog"]["mean_share_inside"] == pytest.approx(share)
    assert by["dog"]["images_with_regions"] == 1
    assert by["dog"]["mostly_outside"] == (["a.jpg"] if share < 0.5 else [])


def test_credit_outside_the_box_is_flagged_and_files_are_escaped(tmp_path):
    v = np.zeros((8, 8, 1))
    v[:, 6:, 0] = 1.0  # all credit on the right
    e = _exp("<b>x</b>.jpg", ["<script>cat"], v)
    s = summarize([e], box_regions({"<b>x</b>.jpg": [[0, 0, 4, 8]]}))
    assert s["words"][0]["mean_share_inside"] == 0.0
    assert s["words"][0]["mostly_outside"] == ["<b>x</b>.jpg"]
    j, h = write_summary(s, tmp_path)
    assert [w["word"] for w in json.loads(j.read_text())["words"]] == ["cat", "script"]
    page = h.read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_mask_folder_regions(tmp_path):
    from PIL import Image

    from capshap.summary import mask_regions

    (tmp_path / "cat").mkdir()
    m = np.zeros((8, 8), np.uint8)
    m[:, :2] = 255
    Image.fromarray(m).save(tmp_path / "cat" / "left.png")
    m2 = np.zeros((8, 8), np.uint8)
    m2[:2, :] = 255
    Image.fromarray(m2).save(tmp_path / "cat_top.png")
    v = np.arange(64, dtype=float).reshape(8, 8, 1)
    s = summarize([_exp("cat.jpg", ["cat"], v), _exp("dog.jpg", ["cat"], v)], mask_regions(tmp_path))
    inside = (m > 0) | (m2 > 0)
    w = s["words"][0]
    assert w["images"] == 2 and w["images_with_regions"] == 1  # dog.jpg has no masks
    assert w["mean_share_inside"] == pytest.approx(v[..., 0][inside].sum() / v.sum())
    assert w["mostly_outside"] == ["cat.jpg"]
