"""Every run is bounded: a caption too long to explain fails its image with a clear reason,
whatever the captioner, and the other images go on."""

from __future__ import annotations

import numpy as np

import capshap
from capshap.job import MAX_CAPTION_CHARS, MAX_TOKENS


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(n)]


def test_a_huge_caption_fails_its_image_only_before_any_scoring():
    imgs = _images(2)

    def caption(im):
        return "x" * 100_000 if im is imgs[0] or np.array_equal(im, imgs[0]) else "a grey square"

    run = capshap.Run(imgs, capshap.Settings(max_evals=6, batch_size=6, scorer="presence"), captioner=caption)
    outs = {o.name: o for o in run.outcomes()}
    bad, good = outs["image0"], outs["image1"]
    assert not bad.ok and bad.stage == "captioning"
    assert "100000 characters" in bad.error and str(MAX_CAPTION_CHARS) in bad.error
    assert good.ok and good.explanation.tokens == ["a", "grey", "square"]


def test_too_many_tokens_fail_with_the_cap_named():
    words = " ".join(f"w{i}" for i in range(MAX_TOKENS + 1))
    run = capshap.Run(_images(1), capshap.Settings(max_evals=6, batch_size=6, scorer="presence"),
                      captioner=lambda im: words)
    (out,) = list(run.outcomes())
    assert not out.ok and out.stage == "scoring"
    assert f"{MAX_TOKENS + 1} tokens" in out.error and f"at most {MAX_TOKENS}" in out.error
