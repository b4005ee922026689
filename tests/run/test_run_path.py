"""The one run path (capshap.run): settings validated before any image, the auto scorer,
objects in place of specs, a given caption, the contrast score, load-time limits."""

from __future__ import annotations

import numpy as np
import pytest

import capshap
from capshap.interfaces import Captioner, FunctionCaptioner, FunctionScorer, ImageLimits
from capshap.registry import SpecError
from capshap.settings import SettingError, Settings


def _image(h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Counting(Captioner):
    """A captioner that counts its calls and has no language head."""

    def __init__(self, text="a red square"):
        self.text, self.calls = text, 0

    def caption(self, images):
        self.calls += len(images)
        return [self.text] * len(images)


class Head(Captioner):
    """A captioner with an own head whose per-token log-probabilities are known functions
    of the image: 'cat' depends on the left half's brightness, 'dog' on the right half's."""

    def caption(self, images):
        return ["a cat"] * len(images)

    def own_scorer(self, caption, score="logodds", merge_words=False):
        assert score == "logprob"

        def fn(imgs):
            imgs = np.asarray(imgs, np.float64) / 255.0
            w = imgs.shape[2] // 2
            left, right = imgs[:, :, :w].mean(axis=(1, 2, 3)), imgs[:, :, w:].mean(axis=(1, 2, 3))
            cols = [-0.1 * np.ones(len(imgs))]  # 'a'
            cols.append(-(1.0 - left) * 3.0 if caption.endswith("cat") else -(1.0 - right) * 2.0)
            return np.stack(cols, axis=1)

        return FunctionScorer(fn, caption.split(), caption=caption)


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"mask": "gauss(3)"}, "mask"),
        ({"max_evals": 1}, "max_evals"),
        ({"fixed_context": 2}, "fixed_context"),
        ({"tokens": "letters"}, "tokens"),
        ({"render_size": "huge"}, "render_size"),
        ({"caption": "  "}, "caption"),
        ({"tree": "hexagons"}, "--tree"),
        ({"scorer": "magic"}, "--scorer"),
    ],
)
def test_bad_settings_raise_before_any_image_is_captioned(kwargs, setting):
    cap = Counting()
    with pytest.raises(ValueError, match=setting):
        capshap.explain([_image()], captioner=cap, **kwargs)
    assert cap.calls == 0


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="max_eval"):
        capshap.explain([_image()], captioner=Counting(), max_eval=10)


def test_a_plain_function_gets_word_presence_by_default():
    """0.1 returned [] here (it asked for an own head that a function has not got)."""
    exps = capshap.explain([_image()], captioner=lambda im: "a red square", max_evals=20, batch_size=10,
                           mask="0", progress=False)
    assert len(exps) == 1
    exp = exps[0]
    assert exp.tokens == ["a", "red", "square"] and exp.params["scorer"] == "_BoundPresence"
    assert exp.settings.scorer == "auto" and exp.settings.captioner is None
    np.testing.assert_allclose(exp.node_values.sum(0), exp.outputs - exp.base_values, atol=1e-9)


def test_given_caption_is_explained_without_captioning():
    cap = Counting("a blue circle")
    exp = capshap.explain([_image()], captioner=cap, caption="a green cat", max_evals=10, batch_size=10,
                          mask="0", scorer="presence", progress=False)[0]
    assert exp.caption == "a green cat" and exp.tokens == ["a", "green", "cat"]
    # the captioner captioned only masked images (presence), never the full image first
    assert cap.calls == exp.n_evals


def test_contrast_equals_the_difference_of_the_two_captions_values():
    img = _image(8, 8, seed=3)  # small enough for the budget to reach every leaf: exact values
    kw = dict(max_evals=3000, batch_size=100, mask="0", tree="axis", progress=False)
    exp = capshap.explain([img], captioner=Head(), contrast="a dog", **kw)[0]
    assert exp.tokens == ["a cat | not a dog"]
    # independent: explain each caption's whole-sentence log-probability, then subtract
    def total(caption):
        sc = Head().own_scorer(caption, score="logprob")
        return FunctionScorer(lambda x: sc.score(x).sum(axis=1, keepdims=True), ["all"], caption=caption)

    a = capshap.explain_image(img, total("a cat"), **{k: v for k, v in kw.items() if k != "progress"})
    b = capshap.explain_image(img, total("a dog"), **{k: v for k, v in kw.items() if k != "progress"})
    # exact Owen values are linear in the score
    np.testing.assert_allclose(exp.node_values.sum(0), (a.node_values.sum(0) - b.node_values.sum(0)), atol=1e-9)
    np.testing.assert_allclose(exp.values[..., 0], a.values[..., 0] - b.values[..., 0], atol=1e-6)
    np.testing.assert_allclose(exp.outputs - exp.base_values,
                               (a.outputs - a.base_values) - (b.outputs - b.base_values), atol=1e-9)
    # known answer: brightness on the left raises 'cat' (3x), on the right raises 'dog' (2x)
    v = exp.values[..., 0]
    assert v[:, :4].sum() > 0 > v[:, 4:].sum()


def test_contrast_needs_log_probabilities():
    with pytest.raises(ValueError, match="contrast"):
        capshap.explain([_image()], captioner=Counting(), contrast="a dog", scorer="presence")
    with pytest.raises(ValueError, match="no language head"):
        capshap.explain([_image()], captioner=Counting(), contrast="a dog")


def test_captioner_limits_are_checked_at_load_time():
    class Picky(Counting):
        limits = ImageLimits(min_side=50)
        name = "picky"

    cap = Picky()
    exps = capshap.explain([_image(20, 60), _image(60, 60)], captioner=cap, scorer="presence", max_evals=4,
                           batch_size=4, mask="0", progress=False)
    assert [e.name for e in exps] == ["image1"]  # the small one was refused before any call
    assert cap.calls == 1 + exps[0].n_evals
    with pytest.raises(capshap.ImageError, match="picky accepts"):
        capshap.explain([_image(20, 60)], captioner=Picky(), scorer="presence", on_error="raise", progress=False)


def test_path_captioner(tmp_path):
    seen = []

    def get_caption(path):  # the SHAP notebook's shape of captioner
        from PIL import Image

        with Image.open(path) as im:
            seen.append((path, im.size))
        return "a photo"

    with pytest.raises(TypeError, match="paths=True"):
        FunctionCaptioner(lambda p: open(p).read()).caption([_image()])
    cap = FunctionCaptioner(get_caption, paths=True)
    assert cap.caption([_image(10, 12)]) == ["a photo"]
    assert seen[0][1] == (12, 10)
    import os

    assert not os.path.exists(seen[0][0])  # the temporary file is gone


def test_settings_round_trip_and_errors():
    s = Settings(max_evals=100, mask="blur(16,16)", contrast="a dog", captioner_options={"top_k": 2})
    assert Settings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown settings"):
        Settings.from_dict({"max_evalz": 3})
    with pytest.raises(SettingError) as e:
        Settings(max_evals=0).validate()
    assert e.value.as_option().startswith("--max-evals 0:")
    with pytest.raises(SpecError, match="--captioner-opt"):
        Settings(captioner="builtin", captioner_options={"temperature": 1}).validate()


def test_registered_captioner_is_usable_by_name():
    from capshap.captioners import CAPTIONERS

    CAPTIONERS.register("const", lambda arg, options, context: FunctionCaptioner(lambda im: arg or "x"),
                        help="const:TEXT, a test captioner")
    try:
        exp = capshap.explain([_image()], settings=Settings(captioner="const:a red square", scorer="presence"),
                              max_evals=4, batch_size=4, mask="0", progress=False)[0]
        assert exp.caption == "a red square" and exp.settings.captioner == "const:a red square"
        assert "const:TEXT" in CAPTIONERS.help_text()
    finally:
        CAPTIONERS.unregister("const")
    assert "const" not in CAPTIONERS


def test_own_masker_and_tree_objects():
    img = _image(12, 12)
    tree = capshap.axis_aligned(12, 12)
    masker = capshap.Masker(img, tree, "inpaint_telea")
    sc = FunctionScorer(lambda x: x.reshape(len(x), -1).mean(1, keepdims=True) / 255.0, ["m"])
    a = capshap.explain_image(img, sc, masker=masker, max_evals=30, batch_size=10)
    b = capshap.explain_image(img, sc, mask="inpaint_telea", tree=tree, max_evals=30, batch_size=10)
    np.testing.assert_array_equal(a.values, b.values)
    exps = capshap.explain([img], captioner=Counting(), scorer=sc, masker=masker, max_evals=30, batch_size=10,
                           progress=False)
    np.testing.assert_array_equal(exps[0].values, a.values)
    assert exps[0].settings.tree == "custom"


def test_render_size_auto_renders_at_the_captioners_input_size():
    class Sized(Counting):
        input_size = (16, 12)

    seen = []

    def fn(batch):
        seen.append(batch.shape[1:3])
        return batch.reshape(len(batch), -1).mean(1, keepdims=True) / 255.0

    img = _image(40, 30)
    exp = capshap.explain([img], captioner=Sized(), scorer=FunctionScorer(fn, ["m"]), render_size="auto",
                          max_evals=20, batch_size=10, mask="inpaint_telea", progress=False)[0]
    assert set(seen) == {(16, 12)}
    assert exp.values.shape[:2] == (40, 30)  # values stay per pixel of the loaded image
    assert exp.params["render_size"] == [16, 12] and exp.settings.render_size == "auto"
    np.testing.assert_allclose(exp.node_values.sum(0), exp.outputs - exp.base_values, atol=1e-9)
    seen.clear()
    full = capshap.explain([img], captioner=Sized(), scorer=FunctionScorer(fn, ["m"]), max_evals=20,
                           batch_size=10, mask="inpaint_telea", progress=False)[0]
    assert set(seen) == {(40, 30)} and full.params["render_size"] is None
