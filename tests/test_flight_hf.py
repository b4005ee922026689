"""Stacked own-head scoring of Hugging Face captioners (padded teacher forcing)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402
from capshap.captioners.hf import HFCaptioner  # noqa: E402


@pytest.mark.parametrize("kind", ["vit-gpt2", "blip"])
def test_stacked_scores_of_captions_of_different_lengths_equal_one_by_one(kind):
    folder = {"vit-gpt2": tm.vit_gpt2_dir, "blip": tm.blip_dir}[kind]()
    cap = HFCaptioner(folder, device="cpu", batch_size=3, generate_kwargs={"max_new_tokens": 4})
    imgs = tm.images(5, size=40, seed=2)
    long_ = cap.own_scorer("the cat sat on the mat")
    short = cap.own_scorer("a dog")
    assert len(long_._input) != len(short._input)
    reqs = [(long_, imgs[:2]), (short, imgs[2:5]), (long_, imgs[4:5])]
    got = long_.score_stacked(reqs)
    for (sc, ims), g in zip(reqs, got):
        want = sc.score(ims)
        assert g.shape == want.shape == (len(ims), len(sc.tokens))
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-6)
