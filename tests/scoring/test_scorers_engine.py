"""Own-head and surrogate scores plugged into the core engine: efficiency end to end."""

import numpy as np
import pytest
import tiny_models as tiny  # a local helper: an error in it must fail, not skip

import capshap
from capshap import explain_image


@pytest.mark.parametrize("kind", ["vit_gpt2", "blip", "git"])
def test_own_head_explanation_sums_to_score_gap(kind):
    from capshap.captioners.hf import HFCaptioner

    folder = getattr(tiny, f"{kind}_dir")()
    cap = HFCaptioner(folder, device="cpu", generate_kwargs={"max_new_tokens": 6, "min_new_tokens": 3})
    image = tiny.images(1, size=40, seed=3)[0]
    caption = cap.caption([image])[0]
    scorer = capshap.OwnHeadFactory(cap).bind(caption)
    exp = explain_image(image, scorer, mask="blur(5,5)", max_evals=40, batch_size=20)
    # the two ends scored independently of the engine
    full = scorer.score(image[None])[0]
    empty = scorer.score(capshap.Masker(image, exp.tree, "blur(5,5)").render([()]))[0]
    np.testing.assert_allclose(exp.outputs, full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exp.base_values, empty, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exp.node_values.sum(0), full - empty, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exp.values.astype(np.float64).sum((0, 1)), full - empty, rtol=1e-4, atol=1e-4)
    assert exp.tokens == scorer.tokens and len(exp.tokens) >= 1


def test_surrogate_explanation_logs_captions():
    from capshap.scoring.surrogate import SurrogateFactory

    names = ["a dog running on the grass", "a cat sitting on top of a laptop", "a red car parked on the street"]

    def captioner(img):  # depends on the image's mean brightness
        return names[int(img.mean()) % 3]

    image = tiny.images(1, size=32, seed=1)[0]
    factory = SurrogateFactory(captioner, tiny.bart_dir(), tiny.bart_dir(), device="cpu")
    scorer = factory.bind(captioner(image))
    exp = explain_image(image, scorer, mask="inpaint_telea", max_evals=30, batch_size=10)
    assert exp.captions is not None and len(exp.captions) == exp.n_evals
    assert exp.captions[1] == captioner(image)  # the full coalition is the image itself
    np.testing.assert_allclose(exp.node_values.sum(0), exp.outputs - exp.base_values, atol=1e-9)
