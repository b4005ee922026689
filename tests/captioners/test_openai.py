"""OpenAICaptioner against a fake vLLM-like server on 127.0.0.1 that serves a tiny random
chat VLM (tests/tiny_vlms.py) through HFCaptioner, so captions and prompt log-probabilities
are real model outputs, compared with the same model in process."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import logging

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_vlms as tv
from fake_openai import MODEL, FakeOpenAI

from capshap.captioners import CAPTIONERS
from capshap.captioners.cache import CaptionCache
from capshap.captioners.hf import HFCaptioner
from capshap.captioners.openai import (
    NotOpenAICompatible,
    OpenAIAuthError,
    OpenAICaptioner,
    OpenAIError,
    OpenAIOwnHeadCaptioner,
    PromptLogprobsUnsupported,
    open_captioner,
)
from capshap.interfaces import OwnHeadCaptioner
from capshap.registry import SpecError
from capshap.scoring import build_scorer
from capshap.scoring.presence import PresenceFactory

KEY = "sk-test-DO-NOT-LEAK-4e1f9a"


from fake_clock import FakeClock  # noqa: E402


@pytest.fixture(scope="module")
def hf() -> HFCaptioner:
    return HFCaptioner(tv.path("llava", std=0.5), device="cpu", batch_size=8, generate_kwargs={"max_new_tokens": 6})


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    return tv.images(4, size=40, seed=1)


@pytest.fixture(scope="module")
def server(hf):
    with FakeOpenAI(hf) as s:
        yield s


def make(server: FakeOpenAI, own_head: str = "auto", **kw) -> OpenAICaptioner:
    clock = FakeClock()
    opts = {"base_url": server.base_url, "api_key": "", "proxies": {}, "backoff": 0.01, "timeout": 10.0,
                "sleep": clock.sleep, "clock": clock, "max_retries": 3}
    opts.update(kw)
    cap = open_captioner(MODEL, own_head=own_head, **opts)
    cap.test_clock = clock
    return cap


def worded_caption(captions: list[str]) -> str:
    """A caption with at least two words (so merging words is tested)."""
    return max(captions, key=lambda c: len(c.split()))


# ----------------------------------------------------------------------- captions


def test_captions_are_the_served_models_and_repeats_come_from_the_cache(server, hf, imgs):
    cap = make(server)
    assert isinstance(cap, OpenAIOwnHeadCaptioner) and isinstance(cap, OwnHeadCaptioner)
    n0 = len(server.bodies)
    out = cap.caption(list(imgs))
    assert out == hf.caption(list(imgs))
    body = server.bodies[n0]
    assert body["temperature"] == 0.0 and body["seed"] == 0 and body["model"] == MODEL
    parts = body["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "Describe this image in one sentence."}
    sent = cap.requests_sent
    assert cap.caption(list(imgs)) == out
    assert cap.requests_sent == sent and cap.cache_hits == len(imgs)


def test_the_cache_namespace_holds_url_model_prompt_and_generation_settings(server):
    base = make(server, own_head="no")
    others = [make(server, own_head="no", temperature=0.5), make(server, own_head="no", seed=1),
              make(server, own_head="no", prompt="Caption it."), make(server, own_head="no", max_tokens=5),
              make(server, own_head="no", base_url=server.base_url.replace("127.0.0.1", "localhost"))]
    names = {base.namespace} | {o.namespace for o in others}
    assert len(names) == 1 + len(others)


def test_a_shared_cache_does_not_answer_for_another_prompt(server, imgs):
    cache = CaptionCache()
    make(server, own_head="no", cache=cache).caption([imgs[0]])
    other = make(server, own_head="no", cache=cache, prompt="Caption it.")
    with pytest.raises(OpenAIError, match="HTTP 400"):  # the fake serves one prompt: it was asked
        other.caption([imgs[0]])


# ----------------------------------------------------------------------- own head


@pytest.mark.parametrize("score", ["logodds", "logprob"])
@pytest.mark.parametrize("merge_words", [False, True])
def test_own_head_through_the_server_equals_in_process(server, hf, imgs, score, merge_words):
    cap = make(server)
    caption = worded_caption(cap.caption(list(imgs)))
    remote = cap.own_scorer(caption, score=score, merge_words=merge_words)
    local = hf.own_scorer(caption, score=score, merge_words=merge_words)
    assert remote.token_ids == local.token_ids
    assert remote.tokens == local.tokens
    a, b = remote.score(imgs), local.score(imgs)
    assert a.shape == b.shape == (len(imgs), len(local.tokens))
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert np.ptp(a, axis=0).max() > 1e-3  # the image matters: the values are not the fake's constants


def test_scoring_retries_a_429_and_a_500_and_keeps_the_values(server, hf, imgs):
    cap = make(server)
    caption = cap.caption([imgs[0]])[0]
    remote = cap.own_scorer(caption)
    server.inject("429", retry_after="3")
    server.inject("500")
    a = remote.score(imgs)
    np.testing.assert_allclose(a, hf.own_scorer(caption).score(imgs), atol=1e-4, rtol=0)
    assert 3.0 <= sum(cap.test_clock.sleeps)


def test_base_url_and_key_come_from_the_environment(server, hf, imgs, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cap = open_captioner(MODEL, own_head="no", proxies={})
    assert cap.base_url == server.base_url and not cap._client.secret_headers
    assert cap.caption([imgs[0]]) == hf.caption([imgs[0]])


def test_a_caption_tokenized_differently_next_to_the_image_fails_loudly(hf, imgs):
    with FakeOpenAI(hf, retokenize=True) as s:
        cap = make(s)
        sc = cap.own_scorer(cap.caption([imgs[0]])[0])
        with pytest.raises(OpenAIError, match="tokenizes the caption differently"):
            sc.score(imgs[:2])


def test_explanations_through_the_server_equal_in_process(server, hf, imgs):
    from capshap.run import explain_image

    cap = make(server)
    img = imgs[2]
    caption = cap.caption([img])[0]
    kw = {"max_evals": 40, "batch_size": 20, "seed": 0}
    remote = explain_image(img, cap.own_scorer(caption), **kw)
    local = explain_image(img, hf.own_scorer(caption), **kw)
    assert remote.values.shape == local.values.shape
    np.testing.assert_allclose(remote.values, local.values, atol=1e-4, rtol=0)
    assert np.abs(local.values).max() > 1e-3


@pytest.mark.parametrize("plp", ["reject", "ignore"])
def test_a_server_without_prompt_logprobs_falls_back_and_names_the_scorers_that_work(hf, plp):
    with FakeOpenAI(hf, plp=plp) as s:
        cap = make(s)
        assert type(cap) is OpenAICaptioner and not isinstance(cap, OwnHeadCaptioner)
        assert isinstance(build_scorer("auto", cap), PresenceFactory)
        with pytest.raises(SpecError, match="presence.*surrogate"):
            build_scorer("own", cap)
        forced = make(s, own_head="yes")
        with pytest.raises(PromptLogprobsUnsupported, match="presence.*surrogate") as e:
            forced.own_scorer("a cat")
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------- faults


def test_429_waits_as_long_as_retry_after_says(server, hf, imgs):
    cap = make(server, own_head="no")
    server.inject("429", retry_after="7")
    assert cap.caption([imgs[1]]) == hf.caption([imgs[1]])
    assert cap.requests_sent == 2
    assert 7.0 <= sum(cap.test_clock.sleeps) <= 7.0 * 1.1 + 1e-9


def test_500s_and_malformed_answers_are_retried(server, hf, imgs):
    cap = make(server, own_head="no", max_retries=4)
    server.inject("500", times=2)
    server.inject("malformed")
    assert cap.caption([imgs[3]]) == hf.caption([imgs[3]])
    assert cap.requests_sent == 4


def test_malformed_answers_every_time_fail_the_image_naming_it(server, imgs):
    cap = make(server, own_head="no", max_retries=4)
    server.inject("malformed", times=3)
    res = cap.caption_each([imgs[0]], names=["cat.png"])
    assert isinstance(res[0], OpenAIError)
    assert "malformed JSON" in str(res[0]) and "cat.png" in str(res[0])


def test_a_slow_answer_past_the_timeout_fails_the_image(server, imgs):
    cap = open_captioner(MODEL, own_head="no", base_url=server.base_url, proxies={}, timeout=0.3, max_retries=0)
    server.inject("slow", seconds=1.5)
    res = cap.caption_each([imgs[0]])
    assert isinstance(res[0], OpenAIError) and "timeout" in str(res[0])


def test_a_wrong_key_fails_clearly_without_showing_it(hf, imgs, caplog, monkeypatch):
    with FakeOpenAI(hf, key="the-right-key") as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(OpenAIAuthError) as e:
            make(s, api_key=None)  # the own-head check is the first request
        msg = str(e.value)
        assert "401" in msg and "OPENAI_API_KEY" in msg and KEY not in msg and "\n" not in msg
        cap = make(s, api_key=None, own_head="no", max_concurrency=1)
        res = cap.caption_each(list(imgs[:3]))
        assert all(isinstance(r, OpenAIAuthError) for r in res)
        assert s.requests["/v1/chat/completions"] == 2  # the batch stopped after the first refusal
        assert KEY not in repr(cap) and KEY not in caplog.text
        assert "plain http" in caplog.text  # the key went over http://: warned
        monkeypatch.setenv("MY_KEY", "the-right-key")
        ok = make(s, api_key=None, api_key_env="MY_KEY")
        assert isinstance(ok, OpenAIOwnHeadCaptioner)
        assert ok.caption([imgs[0]]) == hf.caption([imgs[0]])


def test_a_url_that_is_not_an_openai_api_fails_in_one_line(hf, imgs):
    with FakeOpenAI(hf, html=True) as s:
        with pytest.raises(NotOpenAICompatible) as e:
            make(s)
        assert "\n" not in str(e.value) and "/v1" in str(e.value)
        cap = make(s, own_head="no", max_concurrency=1)
        res = cap.caption_each(list(imgs))
        assert all(isinstance(r, NotOpenAICompatible) for r in res)
        assert s.total == 2  # the probe, then one caption request stopped the batch


def test_bad_base_urls_and_missing_models_are_refused_up_front():
    with pytest.raises(ValueError, match="API root"):
        OpenAICaptioner(MODEL, base_url="http://localhost:8000/v1/chat/completions")
    with pytest.raises(ValueError, match="http"):
        OpenAICaptioner(MODEL, base_url="localhost:8000")
    with pytest.raises(SpecError, match="openai"):
        CAPTIONERS.create("openai", {}, {})


def test_the_registry_builds_it_with_options_and_the_run_prompt(server, hf, imgs):
    cap = CAPTIONERS.create(f"openai:{MODEL}", {"base_url": server.base_url, "timeout": 10, "max_concurrency": 2},
                            {"prompt": hf.prompt, "generate": {"max_new_tokens": 7}})
    assert isinstance(cap, OpenAIOwnHeadCaptioner) and cap.max_tokens == 7 and cap.prompt == hf.prompt
    assert cap.caption([imgs[0]]) == hf.caption([imgs[0]])
    assert json.loads(cap.namespace.split("|")[4])["max_tokens"] == 7
