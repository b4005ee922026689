"""Hugging Face own-head scorers stack: the masked batches of several captions go through one
forward pass (padded teacher forcing), for every family, equal to scoring them one by one
within float32 rounding; and through the in-flight runner, equal to a serial run.

Tolerances: a row's logits change in the last float32 bits with the batch it is computed
in (padding included), so stacked scores are compared with atol 5e-5 (measured on 2 CPU
cores: at most 2e-5, GIT bit for bit), as tests/captioners/hf already allow for batched
against one-at-a-time scoring. Padding that leaked into a caption's positions would move
its scores by the image's effect or more (> 1e-3, checked below).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import logging
import re
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402
import tiny_vlms as tv  # noqa: E402

import capshap  # noqa: E402
from capshap.captioners.hf import HFCaptioner  # noqa: E402
from capshap.runners.flight import Batcher  # noqa: E402
from capshap.interfaces import FunctionCaptioner  # noqa: E402

CLASSIC = {"vit-gpt2": tm.vit_gpt2_dir, "blip": tm.blip_dir, "git": tm.git_dir}
FAMILIES = list(CLASSIC) + list(tv.FAMILIES)
# three captions whose answers have different lengths (the padding is exercised)
TEXTS = ["a dog", "two cats sleeping on a couch", "a man riding a horse on the beach in the rain"]
ATOL, RTOL = 5e-5, 1e-5

_CAPS: dict = {}


def captioner(family: str, batch_size: int) -> HFCaptioner:
    key = (family, batch_size)
    if key not in _CAPS:
        folder = CLASSIC[family]() if family in CLASSIC else tv.path(family, std={"gemma3": 0.1}.get(family, 0.5))
        _CAPS[key] = HFCaptioner(folder, device="cpu", batch_size=batch_size)
    return _CAPS[key]


class Forwards:
    """Counts the model's forward passes (a forward hook: independent of capshap's code)."""

    def __init__(self, model):
        self.n = 0
        self._lock = threading.Lock()
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        with self._lock:
            self.n += 1

    def close(self):
        self._handle.remove()


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    return tm.images(8, size=40, seed=4)


def _scorers(cap: HFCaptioner):
    scorers = [cap.own_scorer(t) for t in TEXTS]
    assert len({len(s.answer_ids) for s in scorers}) == 3, "the captions must differ in length"
    return scorers


@pytest.mark.parametrize("family", FAMILIES)
def test_stacked_scores_equal_one_by_one_in_fewer_forward_passes(family, imgs, caplog):
    caplog.set_level(logging.ERROR)  # given captions may not round-trip a tiny tokenizer
    cap = captioner(family, batch_size=4)
    a, b, c = _scorers(cap)
    assert a.stack_key == b.stack_key == c.stack_key is not None
    requests = [(a, imgs[:2]), (b, imgs[2:5]), (c, imgs[5:6]), (a, imgs[6:7]), (c, imgs[:0])]
    fw = Forwards(cap.model)
    try:
        stacked = a.score_stacked(requests)
        n_stacked = fw.n
        alone = [sc.score(im) for sc, im in requests]
        n_alone = fw.n - n_stacked
    finally:
        fw.close()
    assert n_stacked == 2 and n_alone == 4  # 7 images in passes of 4, against one pass per request
    for (sc, im), got, ref in zip(requests, stacked, alone):
        assert got.shape == ref.shape == (len(im), len(sc.tokens)) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    # the images matter far more than the tolerance: padding seen by a caption would show
    assert np.abs(alone[1] - alone[1][0]).max() > 10 * ATOL  # (blip measured 9e-4 here)


@pytest.mark.parametrize("family", FAMILIES)
def test_images_of_different_sizes_stack_too(family, imgs, caplog):
    """Requests of images of different sizes (images of different sizes in flight):
    processors that resize to one size take them in one pass, dynamic-resolution ones
    (Qwen2-VL, Idefics3) one pass per size; either way equal to one by one."""
    caplog.set_level(logging.ERROR)
    cap = captioner(family, batch_size=8)
    a, b, c = _scorers(cap)
    wide = tm.images(2, size=56, seed=5)[:, 8:48]  # 40 x 56
    requests = [(a, imgs[:2]), (b, wide), (c, imgs[2:3])]
    stacked = a.score_stacked(requests)
    for (sc, im), got in zip(requests, stacked):
        np.testing.assert_allclose(got, sc.score(im), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("family", ["git", "llava", "paligemma"])
def test_a_short_caption_stacked_with_a_long_one_is_not_changed_by_the_padding(family, imgs, caplog):
    """The short caption's rows computed beside a long caption (padded) equal its rows
    computed beside the same images under its own caption (no padding) up to rounding."""
    caplog.set_level(logging.ERROR)
    cap = captioner(family, batch_size=4)
    short, _, long = _scorers(cap)
    beside_long = short.score_stacked([(short, imgs[:2]), (long, imgs[2:4])])[0]
    beside_self = short.score_stacked([(short, imgs[:2]), (short, imgs[2:4])])[0]
    np.testing.assert_allclose(beside_long, beside_self, rtol=RTOL, atol=ATOL)


def test_stacking_other_scorers_is_refused(imgs):
    cap = captioner("git", batch_size=4)
    other = captioner("blip", batch_size=4)
    with pytest.raises(TypeError, match="cannot stack"):
        cap.own_scorer("a dog").score_stacked([(cap.own_scorer("a dog"), imgs[:1]), (other.own_scorer("a dog"), imgs[:1])])


@pytest.mark.parametrize("family", ["blip", "qwen2_vl"])
def test_the_batcher_stacks_queued_requests_of_different_captions_into_one_call(family, imgs, caplog):
    caplog.set_level(logging.ERROR)
    cap = captioner(family, batch_size=16)
    scorers = _scorers(cap)
    batcher = Batcher(64)
    gate = threading.Event()
    blocker = threading.Thread(target=lambda: batcher.call(lambda: gate.wait(10)))
    blocker.start()
    while batcher.requests == 0:  # the model thread is busy with the blocker
        threading.Event().wait(0.001)
    results: dict[int, np.ndarray] = {}

    def submit(i):
        results[i] = batcher.score(scorers[i], imgs[2 * i : 2 * i + 2])[0]

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    while len(batcher._queue) < 3:  # all three queued behind the blocker
        threading.Event().wait(0.001)
    fw = Forwards(cap.model)
    gate.set()
    for t in threads + [blocker]:
        t.join(timeout=30)
    batcher.close()
    fw.close()
    assert (batcher.calls, batcher.requests) == (2, 4)  # the blocker, then one stacked call
    assert fw.n == 1  # 6 masked images of 3 captions in one forward pass
    for i, sc in enumerate(scorers):
        np.testing.assert_allclose(results[i], sc.score(imgs[2 * i : 2 * i + 2]), rtol=RTOL, atol=ATOL)


class _Captions(FunctionCaptioner):
    """Gives each image its own caption of TEXTS, after all images in flight have asked:
    the three images then reach the model together. Declared concurrent, so it runs in the
    image threads (the barrier would deadlock on the one model thread)."""

    concurrent_calls = True

    def __init__(self, arrays, parties: int):
        self.texts = {a.tobytes(): t for a, t in zip(arrays, TEXTS)}
        self.barrier = threading.Barrier(parties, timeout=30)
        super().__init__(self._one)

    def _one(self, image):
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return self.texts[image.tobytes()]


@pytest.mark.parametrize("family", FAMILIES)
def test_in_flight_explain_equals_serial_and_stacks_model_calls(family, caplog):
    caplog.set_level(logging.ERROR)
    cap = captioner(family, batch_size=16)
    arrays = list(tm.images(3, size=24, seed=10))
    kw = dict(scorer=capshap.OwnHeadFactory(cap), max_evals=30, batch_size=6, mask="128", progress=False)
    fw = Forwards(cap.model)
    try:
        serial = capshap.explain(arrays, captioner=_Captions(arrays, 1), runner="serial", **kw)
        n_serial = fw.n
        with caplog.at_level(logging.INFO):
            flight = capshap.explain(arrays, captioner=_Captions(arrays, 3), runner="in_flight", in_flight=3, **kw)
        n_flight = fw.n - n_serial
    finally:
        fw.close()
    assert [e.caption for e in serial] == TEXTS
    for a, b in zip(serial, flight):
        assert a.caption == b.caption and a.tokens == b.tokens and a.coalitions == b.coalitions
        scale = max(1.0, float(np.abs(a.scores).max()))
        np.testing.assert_allclose(b.scores, a.scores, rtol=0, atol=ATOL * scale)
        np.testing.assert_allclose(b.node_values, a.node_values, rtol=0, atol=4 * ATOL * scale)
    calls, requests = (int(x) for x in re.search(r"(\d+) model calls served (\d+) requests", caplog.text).groups())
    assert calls < requests  # some model calls served several images' batches
    assert n_flight < n_serial  # and so the model ran fewer forward passes


@pytest.mark.parametrize("family", ["blip", "idefics3"])
def test_contrast_scorers_stack_both_captions(family, imgs, caplog):
    """A contrast scorer (log p(caption) - log p(other)) stacks where its two own-head
    scorers do: both captions of several requests in shared passes, equal to score()."""
    from capshap.scoring.contrast import ContrastScorer

    caplog.set_level(logging.ERROR)
    cap = captioner(family, batch_size=8)
    factory = ContrastScorer(capshap.OwnHeadFactory(cap, score="logprob"), TEXTS[1])
    a, c = factory.bind(TEXTS[0]), factory.bind(TEXTS[2])
    assert a.stack_key is not None and a.stack_key == c.stack_key
    requests = [(a, imgs[:3]), (c, imgs[3:5])]
    fw = Forwards(cap.model)
    try:
        stacked = a.score_stacked(requests)
    finally:
        fw.close()
    assert fw.n == 2  # 10 rows (two captions each) in passes of 8
    for (sc, im), got in zip(requests, stacked):
        assert got.shape == (len(im), 1)
        np.testing.assert_allclose(got, sc.score(im), rtol=RTOL, atol=ATOL)
