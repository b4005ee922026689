"""SurrogateFactory against shap.models.TeacherForcing, on tiny offline BART and GPT-2 models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402

from capshap.captioners.hf import ModelLoadError  # noqa: E402
from capshap.scoring.logodds import log1mexp  # noqa: E402
from capshap.interfaces import FunctionCaptioner  # noqa: E402
from capshap.scoring.surrogate import SurrogateFactory, boundary_tokens  # noqa: E402

TARGET = "a dog running on the grass"
CAPTIONS = [
    "a dog on the grass",
    "two cats sleeping",
    "a man riding a horse on the beach",
    "a red car parked on the street",
    "grass",
]
LMS = {"bart": tm.bart_dir, "gpt2": tm.gpt2_dir}


def _images(indices: list[int]) -> np.ndarray:
    """Images whose pixel (0, 0, 0) names the caption FunctionCaptioner gives them."""
    out = np.zeros((len(indices), 6, 6, 3), dtype=np.uint8)
    out[:, 0, 0, 0] = indices
    return out


def _fixed_caption(image: np.ndarray) -> str:
    return CAPTIONS[int(image[0, 0, 0])]


def _load(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = LMS[kind]()
    auto = AutoModelForSeq2SeqLM if kind == "bart" else AutoModelForCausalLM
    return auto.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _shap_scores(lm, tokenizer, images: np.ndarray, target: str, batch_size: int = 4, model_out: list | None = None):
    shap = pytest.importorskip("shap")
    tf = shap.models.TeacherForcing(
        lambda X: [_fixed_caption(x) for x in X],
        similarity_model=lm,
        similarity_tokenizer=tokenizer,
        batch_size=batch_size,
    )
    if model_out is not None:
        model_out.append(tf)
    with np.errstate(all="ignore"):
        return tf(images, np.array([target] * len(images)))


@pytest.mark.parametrize("kind", list(LMS))
def test_scores_equal_shap_teacher_forcing(kind):
    images = _images([0, 1, 2, 3, 4, 2, 0])
    ours_scorer = SurrogateFactory(FunctionCaptioner(_fixed_caption), LMS[kind](), device="cpu", batch_size=3)
    bound = ours_scorer.bind(TARGET)
    scores, captions = bound.score_with_captions(images)
    assert captions == [_fixed_caption(im) for im in images]
    lm, tok = _load(kind)  # shap gets its own instances (it sets a pad token on the tokenizer)
    shap_model: list = []
    ref = _shap_scores(lm, tok, images, TARGET, model_out=shap_model)
    assert ref.shape == scores.shape == (7, len(bound.tokens))
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(scores, ref, rtol=0, atol=1e-5)
    # the same target ids and token names as shap's
    assert bound.token_ids == shap_model[0].get_outputs(np.array([TARGET]))[0].tolist()
    assert bound.tokens == shap_model[0].output_names
    # loading by path and passing objects give the same scorer
    lm2, tok2 = _load(kind)
    by_object = SurrogateFactory(FunctionCaptioner(_fixed_caption), lm2, tok2, batch_size=5).bind(TARGET)
    np.testing.assert_allclose(by_object.score(images), scores, atol=1e-5)


@pytest.mark.parametrize("kind", list(LMS))
def test_ours_stay_finite_where_shap_overflows(kind):
    lm, tok = _load(kind)
    head = lm.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach() * 1000.0)  # logits of several hundred
    images = _images([0, 1, 2, 3, 4])
    ref = _shap_scores(lm, tok, images, TARGET)
    ours = SurrogateFactory(FunctionCaptioner(_fixed_caption), lm, tok).bind(TARGET).score(images)
    finite = np.isfinite(ref)
    assert not finite.all()  # shap's log(p / (1 - p)) really overflows here
    assert np.isfinite(ours).all()
    assert np.abs(ours[~finite]).max() > 30  # the overflowed ones are confident tokens
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-7, atol=1e-5)


def test_identical_captions_are_scored_once():
    lm, tok = _load("bart")
    rows = []
    lm.register_forward_hook(lambda mod, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    factory = SurrogateFactory(FunctionCaptioner(_fixed_caption), lm, tok, batch_size=2)
    bound = factory.bind(TARGET)
    first = bound.score(_images([0, 1, 0, 1, 2, 2, 0, 1]))  # 3 distinct captions
    assert rows == [2, 1] and factory.lm_calls == 2 and factory.captions_scored == 3
    np.testing.assert_array_equal(first[0], first[2])
    again = bound.score(_images([2, 1, 0]))  # all cached: no model call
    assert rows == [2, 1]
    np.testing.assert_array_equal(again, first[[4, 1, 0]])
    bound.score(_images([3, 0, 3]))  # one new caption
    assert rows == [2, 1, 1] and factory.captions_scored == 4
    # a different target has its own cache
    factory.bind("two cats").score(_images([0]))
    assert rows == [2, 1, 1, 1]


def test_logprob_option_merge_words_and_empty_captions():
    path = tm.gpt2_dir()
    images = _images([0, 1, 2])
    cap = FunctionCaptioner(_fixed_caption)
    lo = SurrogateFactory(cap, path).bind(TARGET).score(images)
    lp_scorer = SurrogateFactory(cap, path, score="logprob").bind(TARGET)
    lp = lp_scorer.score(images)
    assert (lp < 0).all()
    np.testing.assert_allclose(lo, lp - log1mexp(lp), atol=1e-9)
    words = SurrogateFactory(cap, path, score="logprob", merge_words=True).bind(TARGET)
    assert words.tokens == TARGET.split() and len(lp_scorer.tokens) > len(words.tokens)
    raw = lp_scorer.factory.tokenizer.convert_ids_to_tokens(lp_scorer.token_ids)
    starts = [i for i, t in enumerate(raw) if i == 0 or t.startswith("Ġ")] + [len(raw)]
    expected = np.stack([lp[:, a:b].sum(1) for a, b in zip(starts[:-1], starts[1:])], axis=1)
    np.testing.assert_allclose(words.score(images), expected, atol=1e-12)
    # an empty masked caption still gives finite scores, also for a causal model
    empty = SurrogateFactory(lambda im: "" if im[0, 0, 0] == 0 else "a dog", path).bind(TARGET).score(_images([0, 1]))
    assert np.isfinite(empty).all() and not np.allclose(empty[0], empty[1])


def test_tokenizer_boundaries_and_errors(monkeypatch):
    from huggingface_hub import constants

    _, bart_tok = _load("bart")
    _, gpt2_tok = _load("gpt2")
    assert boundary_tokens(bart_tok) == (1, 1)  # <s> ... </s>
    assert boundary_tokens(gpt2_tok) == (0, 0)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        SurrogateFactory(FunctionCaptioner(_fixed_caption), "capshap-tests/no-such-lm")
    assert "capshap-tests/no-such-lm" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    with pytest.raises(ValueError, match="score='odds'"):
        SurrogateFactory(FunctionCaptioner(_fixed_caption), tm.gpt2_dir(), score="odds")
    with pytest.raises(ValueError, match="no tokens"):
        SurrogateFactory(FunctionCaptioner(_fixed_caption), tm.gpt2_dir()).bind("")
