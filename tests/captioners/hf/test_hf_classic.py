"""HFCaptioner, own-head scoring and the stable log-odds helpers, on tiny offline models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402

from capshap.captioners.hf import HFCaptioner, ModelLoadError, OwnHeadScorer, resolve_device  # noqa: E402
from capshap.scoring.logodds import SCORE_CAP, log1mexp, token_scores_torch  # noqa: E402
from logodds_reference import logodds_from_logprob, token_logodds, token_logprob  # noqa: E402
from capshap.scoring.own import OwnHeadFactory  # noqa: E402

KINDS = {"vit-gpt2": tm.vit_gpt2_dir, "blip": tm.blip_dir, "git": tm.git_dir}
EXPECTED_KIND = {"vit-gpt2": "encoder-decoder", "blip": "blip", "git": "git"}
GEN = {"max_new_tokens": 5, "min_new_tokens": 5}


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    return tm.images(5, size=40, seed=1)


_CAPTIONERS: dict = {}


def captioner(kind: str, prompt: str | None = None, **kw) -> HFCaptioner:
    """One HFCaptioner per (kind, prompt, options) for the whole module."""
    key = (kind, prompt, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if key not in _CAPTIONERS:
        opts = {"device": "cpu", "batch_size": 2, "generate_kwargs": GEN, **kw}
        _CAPTIONERS[key] = HFCaptioner(KINDS[kind](), prompt=prompt, **opts)
    return _CAPTIONERS[key]


# ---------------------------------------------------------------------------- log-odds


def _naive(logits: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        py = np.take_along_axis(p, ids[..., None], -1)[..., 0]
        return np.log(py), np.log(py / (1 - py))


def test_logodds_helpers_match_the_definition_on_moderate_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 6, 50))
    ids = rng.integers(0, 50, size=(4, 6))
    lp, lo = _naive(logits, ids)
    np.testing.assert_allclose(token_logprob(logits, ids), lp, atol=1e-10)
    np.testing.assert_allclose(token_logodds(logits, ids), lo, atol=1e-10)
    np.testing.assert_allclose(logodds_from_logprob(lp), lo, atol=1e-9)
    t = torch.tensor(logits, dtype=torch.float32)
    for score, ref in (("logodds", lo), ("logprob", lp)):
        got = token_scores_torch(t, torch.tensor(ids), score)
        assert got.dtype == np.float64 and got.shape == (4, 6)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_logodds_is_finite_where_p_rounds_to_one_or_overflows():
    V = 20
    logits = np.zeros((3, V))
    logits[0, 3] = 40.0  # p = 1 - 19 e^-40: rounds to exactly 1.0 in float64
    logits[1, 3] = 800.0  # exp(800) overflows float64
    logits[2, 3] = -800.0  # p underflows to 0
    ids = np.array([3, 3, 3])
    _, naive = _naive(logits, ids)
    assert not np.isfinite(naive).all()  # the case really is extreme for log(p / (1 - p))
    got = token_logodds(logits, ids)
    assert np.isfinite(got).all()
    expected = logits[:, 3] - np.log(V - 1)  # z_y - logsumexp of the other V-1 zeros
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(token_logprob(logits, ids)[1:], [0.0, -800.0 - np.log(V - 1)], atol=1e-9)
    # the torch path agrees, also in float32
    t = token_scores_torch(torch.tensor(logits, dtype=torch.float32)[None], torch.tensor(ids))
    np.testing.assert_allclose(t[0], expected, rtol=1e-6)
    # from log-probabilities: accurate near 0 and far below it
    np.testing.assert_allclose(log1mexp(np.array([-1e-20, -50.0])), [np.log(1e-20), -np.exp(-50.0)], rtol=1e-12)
    assert logodds_from_logprob(np.array([-1e-20]))[0] == pytest.approx(np.log(1e20), rel=1e-12)
    assert logodds_from_logprob(np.array([0.0]))[0] == SCORE_CAP
    inf = token_logodds(np.array([[np.inf, 0.0, 0.0]]), np.array([0]))
    assert inf[0] == SCORE_CAP


# ---------------------------------------------------------------------------- captioning


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_loads_from_a_local_folder_and_captions_a_batch(kind, imgs):
    cap = captioner(kind)
    assert cap.kind == EXPECTED_KIND[kind]
    assert cap.device.type == "cpu" and cap.model.dtype == torch.float32
    batch = cap.caption(list(imgs))  # 5 images in batches of 2
    assert len(batch) == 5 and all(isinstance(c, str) and c for c in batch)
    assert batch == [cap.caption([im])[0] for im in imgs]
    # generation settings pass through: exactly max_new_tokens = min_new_tokens = 5 ids
    assert all(len(cap.caption_ids(c)) == 5 for c in batch)
    if kind == "blip":  # a loaded model object works too, with its processor and tokenizer found by path
        from transformers import BlipForConditionalGeneration

        model = BlipForConditionalGeneration.from_pretrained(tm.blip_dir())
        obj = HFCaptioner(model, device="cpu", generate_kwargs=GEN)
        assert obj.kind == "blip" and obj.caption(list(imgs[:2])) == batch[:2]
    short = captioner(kind, generate_kwargs={"max_new_tokens": 2})
    assert all(len(short.caption_ids(c)) <= 2 for c in short.caption(list(imgs[:2])))


def _reference_generation(cap: HFCaptioner, image: np.ndarray, prompt: str | None, extra: dict | None = None):
    """Greedy generation the way the model cards do it, with the raw logits of each step.

    Returns (generated ids after any prompt, log-softmax of each chosen id)."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer

    path = cap.model_id
    pv = AutoImageProcessor.from_pretrained(path)(images=[Image.fromarray(image)], return_tensors="pt").pixel_values
    tok = AutoTokenizer.from_pretrained(path)
    kw = dict(GEN, output_logits=True, return_dict_in_generate=True, **(extra or {}))
    if cap.kind == "blip" and prompt:
        kw["input_ids"] = tok(prompt, return_tensors="pt").input_ids  # [CLS] prompt [SEP], as BlipProcessor
    elif cap.kind == "git" and prompt:
        ids = tok(prompt, add_special_tokens=False).input_ids
        kw["input_ids"] = torch.tensor([[tok.cls_token_id] + ids])  # GIT's VQA recipe
    with torch.no_grad():
        out = cap.model.generate(pixel_values=pv, **kw)
    steps = len(out.logits)
    chosen = out.sequences[0, -steps:]
    lp = torch.stack([torch.log_softmax(out.logits[i][0].double(), -1)[chosen[i]] for i in range(steps)])
    return chosen.tolist(), lp.numpy()


class _ForceAt:
    """A logits processor that forces ``token`` when the sequence is ``length`` ids long."""

    def __init__(self, token: int, length: int):
        self.token, self.length = token, length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.length:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


@pytest.mark.parametrize(
    "kind,prompt,force_special",
    [
        ("vit-gpt2", None, False),
        ("blip", None, False),
        ("blip", "a picture of", False),
        ("git", None, False),
        ("git", "a picture of", True),
    ],
)
def test_own_head_logprob_equals_the_models_greedy_generation(kind, prompt, force_special, imgs):
    from transformers import LogitsProcessorList

    extra = {}
    if force_special:  # a special token inside the caption is fed to the decoder but not scored
        tok = captioner(kind).tokenizer
        at = 1 + len(tok(prompt, add_special_tokens=False).input_ids) + 2  # [CLS] prompt x x <here>
        extra = {"logits_processor": LogitsProcessorList([_ForceAt(tok.unk_token_id, at)])}
    cap = captioner(kind, prompt=prompt, generate_kwargs={**GEN, **extra})
    image = imgs[2]
    caption = cap.caption([image])[0]
    chosen, ref_lp = _reference_generation(cap, image, prompt, extra)
    special = set(cap.tokenizer.all_special_ids)
    keep = [i for i, t in enumerate(chosen) if t not in special]
    assert len(keep) == (4 if force_special else 5)

    scorer = cap.own_scorer(caption, score="logprob")
    assert isinstance(scorer, OwnHeadScorer) and scorer.caption == caption
    assert scorer.token_ids == [chosen[i] for i in keep]  # prompt and special tokens are not in T
    assert len(scorer.tokens) == len(keep)
    got = scorer.score(image[None])
    assert got.shape == (1, len(keep)) and got.dtype == np.float64
    np.testing.assert_allclose(got[0], ref_lp[keep], atol=2e-5)
    # log-odds of the same tokens, through the OwnHeadFactory factory
    lo = OwnHeadFactory(cap).bind(caption).score(image[None])
    np.testing.assert_allclose(lo[0], got[0] - log1mexp(got[0]), atol=1e-6)


def test_prompt_conditions_the_scores_but_is_not_a_token(imgs):
    plain, prompted = captioner("blip"), captioner("blip", prompt="a picture of")
    caption = "a dog running on the grass"
    s0, s1 = plain.own_scorer(caption), prompted.own_scorer(caption)
    expected = plain.tokenizer.convert_ids_to_tokens(plain.tokenizer(caption, add_special_tokens=False).input_ids)
    assert s0.tokens == s1.tokens == [t.removeprefix("##") for t in expected]
    assert not {"[CLS]", "[SEP]", "[DEC]", "[PAD]", "picture"} & set(s1.tokens)
    a, b = s0.score(imgs[:2]), s1.score(imgs[:2])
    assert a.shape == b.shape == (2, len(s0.tokens))
    assert np.abs(a - b).max() > 1e-4  # the prompt is fed to the decoder


@pytest.mark.parametrize("kind,caption,marker", [("vit-gpt2", "a dog running on the grass.", "Ġ"), ("git", "two zebras grazing happily", "##")])
def test_merge_words_sums_sub_word_scores_into_words(kind, caption, marker, imgs):
    cap = captioner(kind)
    tokens = cap.own_scorer(caption, score="logprob")
    words = cap.own_scorer(caption, score="logprob", merge_words=True)
    assert words.tokens == caption.split()
    raw = cap.tokenizer.convert_ids_to_tokens(tokens.token_ids)
    assert len(raw) > len(words.tokens)  # some word really is several tokens
    if marker == "Ġ":
        starts = [i for i, t in enumerate(raw) if i == 0 or t.startswith("Ġ")]
    else:
        starts = [i for i, t in enumerate(raw) if not t.startswith("##")]
    t, w = tokens.score(imgs[:3]), words.score(imgs[:3])
    assert w.shape == (3, len(words.tokens))
    bounds = starts + [len(raw)]
    expected = np.stack([t[:, a:b].sum(1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    np.testing.assert_allclose(w, expected, atol=1e-12)
    assert all("Ġ" not in s and not s.startswith("##") for s in tokens.tokens)


def test_scorer_batches_match_one_image_at_a_time(imgs):
    cap = captioner("git")
    s = cap.own_scorer("a cat sitting on a laptop")
    all_at_once = s.score(imgs)  # batches of 2, 2, 1
    one_by_one = np.concatenate([s.score(im[None]) for im in imgs])
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)
    assert np.abs(all_at_once - all_at_once[0]).max() > 0  # the image matters
    assert s.score(imgs[:0]).shape == (0, len(s.tokens))


# ---------------------------------------------------------------------------- errors and options


def test_missing_model_gives_an_error_in_the_users_terms(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        HFCaptioner("capshap-tests/no-such-captioner", device="cpu")
    msg = str(err.value)
    assert "capshap-tests/no-such-captioner" in msg and "HF_HUB_OFFLINE" in msg and "local folder" in msg
    missing = tmp_path / "not-here"
    with pytest.raises(ModelLoadError, match="no folder") as err:
        HFCaptioner(str(missing), device="cpu")
    assert str(missing) in str(err.value)
    with pytest.raises(ValueError, match="image-to-text"):
        HFCaptioner(tm.gpt2_dir(), device="cpu")


def test_bad_options_and_inputs_are_named(imgs, caplog):
    cap = captioner("git")
    with pytest.raises(ValueError, match="score='prob'"):
        cap.own_scorer("a dog", score="prob")
    with pytest.raises(ValueError, match="image 1 has dtype float64"):
        cap.caption([imgs[0], imgs[1].astype(float)])
    with pytest.raises(ValueError, match="device='gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="batch_size"):
        HFCaptioner(tm.git_dir(), device="cpu", batch_size=0)
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.hf"):
        half = HFCaptioner(tm.git_dir(), device="cpu", half=True)
    assert half.model.dtype == torch.float32 and "half=True needs a GPU" in caplog.text
    assert resolve_device(None) == resolve_device("auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            HFCaptioner(tm.git_dir(), device="cuda")
