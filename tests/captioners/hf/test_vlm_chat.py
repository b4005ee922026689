"""Chat vision-language models in process (LLaVA, Qwen2-VL, Idefics3, PaliGemma, Gemma 3) on tiny
random models built on the spot (tests/tiny_vlms.py), loaded through HFCaptioner(folder) as a
user would."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_vlms as tv  # noqa: E402

import capshap  # noqa: E402
from capshap.captioners.hf import CHAT_PROMPT, EmptyCaptionError, HFCaptioner, OwnHeadScorer  # noqa: E402
from capshap.scoring.logodds import log1mexp  # noqa: E402

# init std: large enough that the image matters and greedy captions vary (Gemma 3 at 0.5
# repeats one whitespace token, so less there)
STD = {"gemma3": 0.1}
GEN = {"max_new_tokens": 6}
KIND = {"llava": "llava", "qwen2_vl": "qwen2-vl", "idefics3": "idefics3", "paligemma": "paligemma", "gemma3": "gemma3"}

_CAPS: dict = {}


def captioner(family: str, **kw) -> HFCaptioner:
    """One HFCaptioner per (family, options) for the whole session."""
    key = (family, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if key not in _CAPS:
        opts = {"device": "cpu", "batch_size": 3, "generate_kwargs": GEN, **kw}
        _CAPS[key] = HFCaptioner(tv.path(family, std=STD.get(family, 0.5)), **opts)
    return _CAPS[key]


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    return tv.images(5, size=40, seed=1)


def _reference_generation(cap: HFCaptioner, image: np.ndarray):
    """Greedy generate(output_scores=True) on the captioner's inputs -> (ids after the prompt,
    log-softmax of the score of each picked id)."""
    enc = cap.adapter.encode([image])
    with torch.no_grad():
        out = cap.model.generate(**enc, do_sample=False, output_scores=True, return_dict_in_generate=True, **GEN)
    steps = len(out.scores)
    chosen = out.sequences[0, -steps:]
    assert out.sequences.shape[1] == enc["input_ids"].shape[1] + steps
    lp = torch.stack([torch.log_softmax(out.scores[i][0].double(), -1)[chosen[i]] for i in range(steps)])
    return chosen.tolist(), lp.numpy()


def _answer_length(cap: HFCaptioner, chosen: list[int]) -> int:
    """Answer tokens in a generated continuation: up to EOS or an image placeholder."""
    stop = cap.adapter.eos_ids({}) | cap.adapter.placeholder_ids()
    for j, t in enumerate(chosen):
        if t in stop:
            return j
    return len(chosen)


@pytest.mark.parametrize("family", tv.FAMILIES)
def test_loads_from_a_folder_with_the_familys_default_prompt(family, tmp_path):
    cap = captioner(family)
    assert cap.kind == KIND[family]
    assert cap.prompt == ("caption en" if family == "paligemma" else CHAT_PROMPT)
    text = cap.adapter.prompt_text()
    assert cap.prompt in text
    # the size the processor resizes to (Qwen2-VL and Idefics3 keep the aspect ratio: None)
    expected = {"llava": (32, 32), "paligemma": (32, 32), "gemma3": (32, 32)}.get(family)
    assert cap.input_size == expected
    # a tiny model is small and quick to build, and builds the same weights every time
    folder = tv.build(family, str(tmp_path / family), std=STD.get(family, 0.5))
    assert sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) < 1_000_000
    other = HFCaptioner(folder, device="cpu", generate_kwargs=GEN)
    im = tv.images(1, size=40, seed=9)
    assert other.caption(list(im)) == cap.caption(list(im))


@pytest.mark.parametrize("family", tv.FAMILIES)
def test_own_head_logprob_equals_the_generation_scores(family, imgs):
    cap = captioner(family, batch_size=2)
    four = imgs[:4]
    captions = cap.caption(list(four))  # two batches of 2
    assert captions[1:3] == cap.caption(list(four[1:3])) and captions[0] == cap.caption([four[0]])[0]
    checked = 0
    for image, caption in zip(four, captions):
        chosen, ref = _reference_generation(cap, image)
        n = _answer_length(cap, chosen)
        ids = cap.caption_ids(caption)
        assert ids == chosen[:n]  # the caption is the whole answer, nothing of the prompt
        special = cap.adapter.special_ids()
        keep = [j for j in range(n) if chosen[j] not in special]
        scorer = cap.own_scorer(caption, score="logprob")
        assert isinstance(scorer, OwnHeadScorer)
        assert scorer.token_ids == [chosen[j] for j in keep] and len(scorer.tokens) == len(keep)
        got = scorer.score(image[None])
        assert got.shape == (1, len(keep)) and got.dtype == np.float64
        np.testing.assert_allclose(got[0], ref[keep], rtol=1e-5, atol=1e-5)  # float32 cache vs one pass
        lo = capshap.OwnHeadFactory(cap).bind(caption).score(image[None])  # log-odds of the same tokens
        np.testing.assert_allclose(lo[0], got[0] - log1mexp(got[0]), atol=1e-5)
        checked += len(keep)
    assert checked >= 8


@pytest.mark.parametrize("family", tv.FAMILIES)
def test_masked_batch_equals_one_at_a_time_and_the_image_matters(family, imgs):
    cap = captioner(family)
    caption = cap.caption([imgs[0]])[0]
    scorer = cap.own_scorer(caption)
    masked = np.repeat(imgs[:1], 7, axis=0)
    for k in range(1, 7):  # grey out different parts, as a masker would
        masked[k, (k * 5) % 40 :, : (k * 7) % 40 + 5] = 128
    together = scorer.score(masked)  # batches of 3, 3, 1
    alone = np.concatenate([scorer.score(m[None]) for m in masked])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=5e-5)  # float32 batched matmuls
    assert np.abs(together - together[0]).max() > 1e-3
    assert scorer.score(masked[:0]).shape == (0, len(scorer.tokens))


@pytest.mark.parametrize("family", tv.FAMILIES)
def test_efficiency_through_explain_image(family, imgs):
    cap = captioner(family, batch_size=16)
    image = imgs[1][:24, :24]
    caption = cap.caption([image])[0]
    scorer = cap.own_scorer(caption)
    exp = capshap.explain_image(image, scorer, max_evals=40, batch_size=16, mask=128)
    T = len(scorer.tokens)
    answer = [t for t in cap.caption_ids(caption) if t not in cap.adapter.special_ids()]
    assert exp.values.shape == (24, 24, T) and T == len(answer) > 0
    np.testing.assert_allclose(exp.values.astype(np.float64).sum((0, 1)), exp.outputs - exp.base_values, atol=1e-3)
    np.testing.assert_allclose(exp.outputs, scorer.score(image[None])[0], atol=1e-5)
    blank = np.full_like(image, 128)
    np.testing.assert_allclose(exp.base_values, scorer.score(blank[None])[0], atol=1e-5)


def _official_inputs(cap: HFCaptioner, family: str, image: np.ndarray, text: str) -> dict:
    """The family's own processor on the whole text (prompt + answer), independent of capshap."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen2VLProcessor

    folder = cap.model_id
    pil = Image.fromarray(image)
    if family == "qwen2_vl":  # its processor wants a video processor (torchvision): leave that out

        class ImageOnly(Qwen2VLProcessor):
            def __init__(self, image_processor, tokenizer):
                self.image_processor, self.tokenizer, self.chat_template = image_processor, tokenizer, None
                self.image_token, self.image_token_id = tokenizer.image_token, tokenizer.image_token_id
                self.video_token, self.video_token_id = "<|video_pad|>", tokenizer.convert_tokens_to_ids("<|video_pad|>")

        proc = ImageOnly(AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
        return dict(proc(images=[pil], text=[text], return_tensors="pt"))
    proc = AutoProcessor.from_pretrained(folder)
    if family == "idefics3":
        return dict(proc(images=[[pil]], text=[text], return_tensors="pt"))
    return dict(proc(images=[pil], text=[text], return_tensors="pt"))


@pytest.mark.parametrize("family", tv.FAMILIES)
def test_a_given_caption_is_scored_as_the_answer_after_the_prompt(family, imgs, caplog):
    cap = captioner(family)
    caption = "a dog running on the grass"
    image = imgs[3]
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.hf"):
        scorer = cap.own_scorer(caption, score="logprob")
    assert "round-trip" not in caplog.text
    ids = scorer.token_ids
    assert cap.tokenizer.decode(ids, skip_special_tokens=True).strip() == caption
    got = scorer.score(image[None])[0]
    # independent: the processor tokenizes prompt + answer as one text; the logits at the
    # last prompt position and the answer positions predict the answer's tokens
    if family == "paligemma":
        from PIL import Image
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(cap.model_id)
        enc = dict(proc(images=[Image.fromarray(image)], text=[cap.prompt], suffix=[caption], return_tensors="pt"))
        enc.pop("labels")
        full = enc["input_ids"][0].tolist()[:-1]  # drop the EOS the suffix gets
        enc = {k: v[:, :-1] if k in ("input_ids", "attention_mask", "token_type_ids") else v for k, v in enc.items()}
    else:
        enc = _official_inputs(cap, family, image, cap.adapter.prompt_text() + cap.adapter.answer_sep + caption)
        full = enc["input_ids"][0].tolist()
    assert full[-len(ids):] == ids  # the same answer ids as in context
    with torch.no_grad():
        logits = cap.model(**enc).logits[0].double()
    L = len(full)
    rows = torch.log_softmax(logits[L - len(ids) - 1 : L - 1], -1)
    expected = rows[torch.arange(len(ids)), torch.tensor(ids)].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # a different caption on the same images: the scores a contrast needs
    other = cap.own_scorer("a cat sitting on top of a laptop", score="logprob").score(imgs[:2])
    assert other.shape == (2, len(cap.own_scorer("a cat sitting on top of a laptop").tokens))
    words = cap.own_scorer(caption, score="logprob", merge_words=True)
    assert words.tokens == caption.split()
    np.testing.assert_allclose(words.score(image[None])[0].sum(), got.sum(), atol=1e-9)


@pytest.mark.parametrize("family", ["llava", "paligemma"])
def test_prompt_option_changes_the_inputs_and_is_never_scored(family, imgs):
    plain, asked = captioner(family), captioner(family, prompt="What is in the picture?")
    assert asked.prompt == "What is in the picture?" and "What is in the picture?" in asked.adapter.prompt_text()
    caption = "a red car parked on the street"
    a, b = plain.own_scorer(caption), asked.own_scorer(caption)
    assert a.tokens == b.tokens and not {"What", "picture", "ASSISTANT", "caption"} & set(b.tokens)
    assert np.abs(a.score(imgs[:2]) - b.score(imgs[:2])).max() > 1e-4


def test_special_token_text_in_a_given_caption_stays_text(imgs, caplog):
    cap = captioner("llava")
    caption = "a dog <image> running </s>"
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.hf"):
        scorer = cap.own_scorer(caption)
    assert "round-trip" not in caplog.text
    assert not set(scorer.answer_ids) & (cap.adapter.special_ids() | cap.adapter.placeholder_ids())
    assert cap.tokenizer.decode(scorer.answer_ids).strip() == caption
    assert np.isfinite(scorer.score(imgs[:2])).all()  # no stray image token reaches the model


def test_an_empty_answer_names_the_prompt_and_min_new_tokens(imgs):
    cap = captioner("qwen2_vl")
    eos = cap.adapter.eos_ids({})

    class AlwaysEos:  # stands in for a prompt the model answers with nothing
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, -float("inf"))
            out[:, sorted(eos)[0]] = 0.0
            return out

    from transformers import LogitsProcessorList

    mute = captioner("qwen2_vl", generate_kwargs={**GEN, "logits_processor": LogitsProcessorList([AlwaysEos()])})
    with pytest.raises(EmptyCaptionError) as err:
        mute.caption(list(imgs[:2]))
    msg = str(err.value)
    assert "image 0, 1" in msg and "min_new_tokens" in msg and repr(CHAT_PROMPT) in msg and "--generate" in msg
    with pytest.raises(EmptyCaptionError, match="min_new_tokens"):
        cap.own_scorer("  ")
