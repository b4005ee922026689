"""AzureCaptioner and CaptionCache against a fake Azure AI Vision server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import pickle
import socket

import numpy as np
import pytest

from capshap.captioners.azure import (
    AzureAuthError,
    AzureCaptioner,
    AzureError,
    AzureRequestError,
    ImageLimitError,
)
from capshap.captioners.cache import CaptionCache, cache_key
from capshap.interfaces import Captioner
from capshap.scoring.presence import PresenceFactory
from fake_azure import PALETTE, FakeAzure, expected_caption

KEY = "s3cret-KEY-do-not-leak-7f3a9c"


@pytest.fixture
def fake():
    with FakeAzure(key=KEY) as server:
        yield server


from fake_clock import FakeClock  # noqa: E402


def make(fake: FakeAzure, real_clock: bool = False, **kw) -> AzureCaptioner:
    """A captioner for ``fake``; retry waits go to a FakeClock (``cap.test_clock``) unless
    ``real_clock`` (needed where the per-attempt deadline must run in real time)."""
    clock = FakeClock()
    opts = dict(endpoint=fake.endpoint, key=KEY, proxies={}, backoff=0.01, timeout=2.0)
    if not real_clock:
        opts.update(sleep=clock.sleep, clock=clock)
    opts.update(kw)
    cap = AzureCaptioner(**opts)
    cap.test_clock = clock
    return cap


def solid(colour: str, h: int = 64, w: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(PALETTE[colour], np.uint8), (h, w, 3)).copy()


def varied_images() -> list[np.ndarray]:
    """Nine images of different colours and sizes (so their captions differ)."""
    return [solid(c, 60 + 3 * i, 60 + (i % 2) * 10) for i, c in enumerate(PALETTE)]


# ----------------------------------------------------------------------- happy path


@pytest.mark.parametrize("api", ["v3.2", "v3.1", "v4"])
def test_captions_match_server_in_input_order(fake, api):
    images = varied_images()
    cap = make(fake, api=api)
    assert isinstance(cap, Captioner)
    out = cap.caption(images)
    assert out == [expected_caption(im, api) for im in images]
    assert len(set(out)) > 5  # captions really depend on the image
    assert fake.requests[api] == len(images) and fake.total == len(images)
    q = fake.queries[0]
    if api == "v4":
        assert q["api-version"] == "2023-10-01" and q["features"] == "caption"
        assert "gender-neutral-caption" not in q
    else:
        assert q["visualFeatures"] == "Description"
    assert cap.requests_sent == len(images)


def test_gender_neutral_v4_only(fake):
    im = solid("red")
    plain = make(fake, api="v4").caption([im])[0]
    neutral = make(fake, api="v4", gender_neutral=True).caption([im])[0]
    assert plain == "a man with a red square"
    assert neutral == "a person with a red square"
    assert fake.queries[-1]["gender-neutral-caption"] == "true"
    with pytest.raises(ValueError, match="gender_neutral"):
        make(fake, api="v3.2", gender_neutral=True)


def test_empty_caption_list_gives_empty_caption(fake):
    fake.inject("empty")
    assert make(fake).caption([solid("red")]) == [""]


def test_works_with_presence_scorer(fake):
    scorer = PresenceFactory(make(fake)).bind("a red square")
    scores = scorer(np.stack([solid("red"), solid("blue")]))
    np.testing.assert_array_equal(scores, [[1, 1, 1], [1, 0, 1]])


# ----------------------------------------------------------------------- configuration


def test_endpoint_and_key_from_environment(fake, monkeypatch):
    monkeypatch.setenv("AZURE_VISION_ENDPOINT", fake.endpoint + "/")
    monkeypatch.setenv("AZURE_VISION_KEY", KEY)
    cap = AzureCaptioner(proxies={}, backoff=0.01)
    assert cap.caption([solid("green")]) == ["a green square"]

    monkeypatch.delenv("AZURE_VISION_KEY")
    with pytest.raises(ValueError, match="AZURE_VISION_KEY"):
        AzureCaptioner(proxies={})
    monkeypatch.delenv("AZURE_VISION_ENDPOINT")
    with pytest.raises(ValueError, match="AZURE_VISION_ENDPOINT"):
        AzureCaptioner(key=KEY)
    with pytest.raises(ValueError, match="not an http"):
        AzureCaptioner(endpoint="ftp://example.com", key=KEY)
    with pytest.raises(ValueError, match="unknown Azure API"):
        AzureCaptioner(endpoint=fake.endpoint, key=KEY, api="v5")


def test_image_format_must_be_accepted_by_the_api(fake):
    with pytest.raises(ValueError, match="webp.*v3.2"):
        make(fake, api="v3.2", image_format="webp")
    im = solid("cyan", 80, 90)
    assert make(fake, api="v4", image_format="webp").caption([im]) == [expected_caption(im, "v4")]
    assert make(fake, image_format="jpeg").caption([im]) == ["a cyan rectangle"]


# ----------------------------------------------------------------------- concurrency


def test_requests_run_concurrently(fake):
    fake.delay = 0.2
    images = varied_images()[:8]
    out = make(fake, max_concurrency=4).caption(images)
    assert out == [expected_caption(im) for im in images]
    assert 1 < fake.max_in_flight <= 4

    fake.reset_counts()
    make(fake, max_concurrency=1).caption(varied_images()[:3])
    assert fake.max_in_flight == 1


# ----------------------------------------------------------------------- retries


def test_429_honours_retry_after(fake):
    fake.inject("429", retry_after="1")
    cap = make(fake, backoff=0.01)
    assert cap.caption([solid("red")]) == ["a red square"]
    assert fake.total == 2
    waited = sum(cap.test_clock.sleeps)
    assert 1.0 <= waited <= 1.1  # what the server asked (plus <= 10 % jitter), not the 0.01 s backoff
    assert max(cap.test_clock.sleeps) <= 0.25  # in slices, so Ctrl-C is seen at once

    fake.reset_counts()
    fake.inject("429", retry_after=None)  # no header: exponential backoff from 0.01 s
    cap = make(fake, backoff=0.01)
    assert cap.caption([solid("blue")]) == ["a blue square"]
    assert 0.01 <= sum(cap.test_clock.sleeps) <= 0.011 and fake.total == 2

    fake.reset_counts()
    fake.inject("429", retry_after="120", retry_after_ms=300)  # Azure's ms header wins
    cap = make(fake, backoff=0.01)
    cap.caption([solid("green")])
    assert 0.3 <= sum(cap.test_clock.sleeps) <= 0.33 and fake.total == 2

    fake.reset_counts()
    fake.inject("429", retry_after="100000")  # capped at max_backoff
    cap = make(fake, max_backoff=2.0)
    cap.caption([solid("gray")])
    assert 2.0 <= sum(cap.test_clock.sleeps) <= 2.2 and fake.total == 2


def test_long_429_wait_is_logged_as_a_warning(fake, caplog):
    fake.inject("429", retry_after="30")
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.http"):
        assert make(fake).caption([solid("red")]) == ["a red square"]
    (rec,) = [r for r in caplog.records if "waiting" in r.getMessage()]
    msg = rec.getMessage()
    assert rec.levelno == logging.WARNING and "image 0" in msg and "Retry-After 30" in msg and "HTTP 429" in msg
    assert float(msg.split("waiting ")[1].split(" s")[0]) >= 30.0


def test_5xx_retried_then_succeeds(fake):
    fake.inject("500", times=2, status=503)
    assert make(fake).caption([solid("yellow")]) == ["a yellow square"]
    assert fake.total == 3


def test_retries_exhausted_names_image_and_status_others_survive(fake):
    fake.inject("500", times=None, when="red", status=502)
    images = [solid("blue"), solid("red"), solid("green")]
    cap = make(fake, max_retries=2)
    res = cap.caption_each(images)
    assert res[0] == "a blue square" and res[2] == "a green square"
    err = res[1]
    assert isinstance(err, AzureError) and err.status == 502 and err.index == 1
    assert "image 1" in str(err) and "3 tries" in str(err) and "502" in str(err)
    assert fake.total == 2 + 3  # the red image: 1 try + 2 retries


def test_backoff_grows_exponentially(fake):
    fake.inject("500", times=3)
    cap = make(fake, backoff=0.1, max_retries=3)
    cap.caption([solid("red")])
    waited = sum(cap.test_clock.sleeps)
    assert 0.7 <= waited <= 0.7 * 1.1  # 0.1 * (1 + 2 + 4), times <= 10 % jitter
    assert fake.total == 4


def test_timeouts_are_retried(fake):
    fake.inject("slow", seconds=1.0)
    cap = make(fake, timeout=0.2)
    assert cap.caption([solid("magenta")]) == ["a magenta square"]
    assert fake.total == 2 and cap.requests_sent == 2


def test_timeouts_exhausted(fake):
    fake.inject("slow", times=None, seconds=1.0)
    cap = make(fake, timeout=0.15, max_retries=1)
    with pytest.raises(AzureError, match=r"image 0.*2 tries.*timeout=0.15") as info:
        cap.caption([solid("red")])
    assert info.value.status is None


def test_malformed_json_retried_at_most_twice(fake):
    fake.inject("malformed")
    assert make(fake).caption([solid("white")]) == ["a white square"]
    assert fake.total == 2

    fake.reset_counts()
    fake.inject("malformed", times=None, body="<html>gateway</html>")
    with pytest.raises(AzureError, match="malformed JSON") as info:
        make(fake, max_retries=5).caption([solid("black")])
    assert "image 0" in str(info.value) and "gateway" in str(info.value)
    assert fake.total == 3  # 1 try + 2 retries, not max_retries


def test_network_error_retried_then_clear(fake):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    clock = FakeClock()
    cap = AzureCaptioner(endpoint=f"http://127.0.0.1:{port}", key=KEY, proxies={}, backoff=0.01, max_retries=1,
                         sleep=clock.sleep, clock=clock)
    with pytest.raises(AzureError, match=r"image 0.*2 tries.*network error"):
        cap.caption([solid("red")])
    assert cap.requests_sent == 2


# ----------------------------------------------------------------------- client errors


def test_wrong_key_fails_fast_without_retry(fake):
    cap = make(fake, key="wrong-key-123", max_concurrency=2)
    images = varied_images()
    with pytest.raises(AzureAuthError, match="key or endpoint wrong: check AZURE_VISION_KEY / AZURE_VISION_ENDPOINT"):
        cap.caption(images)
    assert fake.total <= 2  # the requests in flight; nothing retried, the rest not sent
    res = cap.caption_each(images)
    assert all(isinstance(r, AzureAuthError) for r in res)
    assert {r.index for r in res} == set(range(len(images)))


def test_401_injected_mid_batch_stops_the_rest(fake):
    fake.inject("401", when="red")
    res = make(fake, max_concurrency=1).caption_each([solid("blue"), solid("red"), solid("green")])
    assert res[0] == "a blue square"
    assert isinstance(res[1], AzureAuthError) and res[1].status == 401
    assert isinstance(res[2], AzureAuthError) and "not sent" in str(res[2])
    assert fake.total == 2


@pytest.mark.parametrize("api", ["v3.2", "v4"])
def test_400_gives_service_message_and_image(fake, api):
    fake.inject("400", when="blue", code="InvalidImageFormat", message="Input data is not a valid image.")
    res = make(fake, api=api).caption_each(
        [solid("red"), solid("blue")], names=["cat.jpg mask 0", "cat.jpg mask 1"]
    )
    assert res[0] == expected_caption(solid("red"), api)
    err = res[1]
    assert isinstance(err, AzureRequestError) and err.status == 400 and err.index == 1
    msg = str(err)
    assert "Input data is not a valid image." in msg and "InvalidImageFormat" in msg
    assert "image 1" in msg and "cat.jpg mask 1" in msg
    assert fake.requests[api] == 2  # no retry of the 400


def test_wrong_endpoint_path_404(fake):
    cap = make(fake, endpoint=fake.endpoint + "/not-vision", max_concurrency=1)
    with pytest.raises(AzureRequestError, match="AZURE_VISION_ENDPOINT") as info:
        cap.caption(varied_images()[:3])
    assert info.value.status == 404 and cap.requests_sent == 1


def test_key_never_in_logs_errors_or_repr(fake, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-KEY-also-secret-99"
    texts = [repr(make(fake)), repr(make(fake, key=wrong)), repr(vars(make(fake)))]
    fake.inject("429", retry_after="0")
    fake.inject("500", times=None, when="red")
    fake.inject("400", when="blue")
    fake.inject("malformed", times=None, when="green")
    fake.inject("slow", times=None, when="yellow", seconds=0.5)
    res = make(fake, max_retries=1, timeout=0.1).caption_each(
        [solid(c) for c in ("white", "red", "blue", "green", "yellow")]
    )
    errors = [r for r in res if isinstance(r, Exception)]
    assert res[0] == "a white square" and len(errors) == 4
    errors += make(fake, key=wrong).caption_each([solid("black")])
    try:
        make(fake, key=wrong).caption([solid("black"), solid("gray")])
    except AzureAuthError as e:
        errors.append(e)
    assert len(errors) == 6
    for e in errors:
        chain = e
        while chain is not None:
            texts += [str(chain), repr(chain), *getattr(chain, "__notes__", [])]
            chain = chain.__cause__ or chain.__context__
    texts.append(caplog.text)
    assert "POST" in caplog.text  # the debug log really was captured
    for t in texts:
        assert KEY not in t and wrong not in t


# ----------------------------------------------------------------------- limits


def test_too_small_image_is_named_and_not_sent(fake):
    res = make(fake).caption_each([solid("red"), solid("blue", 30, 80)])
    assert res[0] == "a red square"
    err = res[1]
    assert isinstance(err, ImageLimitError) and isinstance(err, ValueError)
    assert "image 1" in str(err) and "80x30" in str(err) and "50x50" in str(err)
    assert fake.total == 1


def test_too_large_encoding_is_named_and_not_sent(fake):
    noise = np.random.default_rng(0).integers(0, 256, (1300, 1300, 3), dtype=np.uint8)
    with pytest.raises(ImageLimitError, match=r"image 0 .*MB as PNG.*v3.2.*image_format='jpeg'"):
        make(fake, api="v3.2").caption([noise])
    assert fake.total == 0
    assert make(fake, api="v4").caption([noise]) == [expected_caption(noise, "v4")]  # 20 MB limit
    assert fake.total == 1


def test_bad_arrays_are_per_image_errors(fake):
    res = make(fake).caption_each([solid("red").astype(np.float32), solid("red")[..., :2], solid("red")])
    assert isinstance(res[0], TypeError) and "image 0" in str(res[0]) and "uint8" in str(res[0])
    assert isinstance(res[1], ValueError) and "image 1" in str(res[1])
    assert res[2] == "a red square"


# ----------------------------------------------------------------------- partial failure


def test_caption_raises_only_after_all_others_finished(fake):
    fake.inject("400", when="blue", times=None)
    fake.inject("400", when="green", times=None)
    images = varied_images()
    blue, green = list(PALETTE).index("blue"), list(PALETTE).index("green")
    cap = make(fake)
    with pytest.raises(AzureRequestError) as info:
        cap.caption(images)
    assert info.value.index == min(blue, green)  # the first failure by index
    assert any("2 of 9 images failed" in n for n in getattr(info.value, "__notes__", []))
    assert fake.total == len(images)
    assert len(cap.cache) == len(images) - 2  # every other caption was kept
    fake.reset_counts()
    with pytest.raises(AzureRequestError):
        cap.caption(images)
    assert fake.total == 2  # a retry costs only the failed images


# ----------------------------------------------------------------------- cache


def test_cache_avoids_calls_in_memory_and_on_disk(fake, tmp_path):
    images = varied_images()[:4]
    cap = make(fake, cache_dir=tmp_path)
    first = cap.caption(images)
    assert fake.total == 4
    assert cap.caption(images) == first and fake.total == 4 and cap.cache_hits == 4
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 4 and not list(tmp_path.rglob(".tmp-*"))
    entry = json.loads(files[0].read_text())
    assert entry["caption"] in first and entry["namespace"] == cap.namespace

    fresh = make(fake, cache_dir=tmp_path)  # a new process resuming the run
    assert fresh.caption(images) == first and fake.total == 4 and fresh.cache_hits == 4

    other = make(fake, cache_dir=tmp_path, api="v4")  # another API is another namespace
    assert other.caption(images[:1]) == [expected_caption(images[0], "v4")] and fake.total == 5


def test_duplicate_images_in_a_batch_are_sent_once(fake):
    a, b = solid("red"), solid("blue")
    assert make(fake).caption([a, b, a.copy(), a]) == ["a red square", "a blue square"] + ["a red square"] * 2
    assert fake.total == 2


def test_corrupt_cache_file_is_ignored_with_a_warning(fake, tmp_path, caplog):
    im = solid("red")
    make(fake, cache_dir=tmp_path).caption([im])
    (path,) = tmp_path.rglob("*.json")
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.cache"):
        assert make(fake, cache_dir=tmp_path).caption([im]) == ["a red square"]
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert fake.total == 2
    assert json.loads(path.read_text())["caption"] == "a red square"  # rewritten


def test_caption_cache_unit(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    c = CaptionCache(tmp_path / "c")
    assert c.get("ns", a) is None
    c.put("ns", a, "x")
    assert c.get("ns", a) == "x" and c.get("other", a) is None
    assert c.get("ns", a.reshape(1, 4, 3)) is None  # same bytes, other shape
    assert c.get("ns", a.astype(np.int8)) is None  # same bytes, other dtype
    assert cache_key("ns", a) == cache_key("ns", a.copy()) != cache_key("ns", a + 1)
    assert CaptionCache(tmp_path / "c").get("ns", a) == "x"  # from disk
    assert CaptionCache().get("ns", a) is None  # memory-only caches share nothing
    with pytest.raises(TypeError):
        c.put("ns", a, 3)  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="file"):
        CaptionCache(tmp_path / "file")


def test_cache_is_keyed_on_endpoint_api_and_settings(fake, tmp_path):
    """A cache filled against one server never answers for another (no poisoning)."""
    im = solid("red")
    shared = CaptionCache(tmp_path)
    assert make(fake, cache=shared).caption([im]) == ["a red square"]
    with FakeAzure(key=KEY) as other:  # another endpoint, same key, same image
        cap = make(other, cache=shared)
        assert cap.caption([im]) == ["a red square"] and other.total == 1 and cap.cache_hits == 0
    namespaces = set()
    for kw in ({}, {"language": "de"}, {"api": "v4"}, {"api": "v4", "gender_neutral": True},
               {"image_format": "jpeg"}, {"image_format": "jpeg", "jpeg_quality": 80}):
        namespaces.add(make(fake, **kw).namespace)
    assert len(namespaces) == 6
    assert all(fake.endpoint in ns for ns in namespaces)
    assert fake.total == 1


# ----------------------------------------------------------------------- hostile servers


def test_trickling_server_is_cut_off_at_the_deadline(fake):
    """One byte every 0.3 s: each read is quick, but the attempt as a whole runs out."""
    fake.inject("trickle", times=None, seconds=0.3, size=200)
    cap = make(fake, real_clock=True, timeout=0.5, max_retries=0)
    with pytest.raises(AzureError, match=r"image 0.*1 tries.*no complete answer within timeout=0.5") as info:
        cap.caption([solid("red")])
    assert info.value.status is None
    assert 0 < fake.bytes_sent < 100  # the 200+ byte answer was not waited for


@pytest.mark.parametrize("declare", [True, False])
def test_huge_answer_is_refused_at_the_cap(fake, declare):
    fake.inject("huge", times=None, size=64 * 1024 * 1024, declare=declare)
    cap = make(fake, max_response_bytes=100_000)
    with pytest.raises(AzureError, match=r"image 0.*max_response_bytes=100000") as info:
        cap.caption([solid("red")])
    assert cap.requests_sent == 1  # not retried: a retry would get the same answer
    assert info.value.status == 200
    assert fake.bytes_sent < 16 * 1024 * 1024  # stopped reading long before the end


def test_redirect_is_not_followed(fake):
    fake.inject("redirect", location="http://elsewhere.invalid/steal")
    cap = make(fake)
    with pytest.raises(AzureError, match=r"HTTP 307.*elsewhere.invalid.*not followed") as info:
        cap.caption([solid("red")])
    assert info.value.status == 307 and cap.requests_sent == 1


def test_key_echoed_by_the_server_is_scrubbed(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.inject("echo", times=None)
    (err,) = make(fake).caption_each([solid("red")])
    assert isinstance(err, AzureRequestError) and err.status == 400
    assert "bad request for key ***" in str(err) and KEY not in str(err)
    assert KEY not in caplog.text


@pytest.mark.parametrize("bad", ["abc\ndef", "abc\rdef", "abc\x00def", "ab\u202ecd", "clé-secrète"])
def test_key_with_control_characters_is_refused_without_showing_it(fake, bad, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    secret_part = bad.replace("\n", "").replace("\r", "")
    with pytest.raises(ValueError, match=r"Azure AI Vision key \(from key=\) contains .* at position") as info:
        make(fake, key=bad)
    errors = [info.value]
    if "\x00" not in bad:  # the environment cannot hold a NUL
        monkeypatch.setenv("AZURE_VISION_KEY", bad)
        with pytest.raises(ValueError, match=r"from AZURE_VISION_KEY") as info2:
            AzureCaptioner(endpoint=fake.endpoint)
        errors.append(info2.value)
    for e in errors:
        text = str(e) + repr(e)
        assert bad not in text and "abc" not in text and "def" not in text and "cl" not in text
        assert secret_part not in text
    assert fake.total == 0 and "abc" not in caplog.text


def test_key_with_a_trailing_newline_is_accepted(fake):
    assert make(fake, key=KEY + "\n").caption([solid("red")]) == ["a red square"]
    assert fake.headers_seen[-1]["ocp-apim-subscription-key"] == KEY


def test_plain_http_with_a_key_warns_once_per_captioner(fake, caplog):
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.http"):
        cap = make(fake)
        cap.caption([solid("red"), solid("blue")])
        cap.caption([solid("green")])
    warnings = [r for r in caplog.records if "plain http://" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0].getMessage()
    assert KEY not in caplog.text


def test_captioner_declares_its_input_limits(fake):
    from capshap.interfaces import ImageLimits

    v3, v4 = make(fake).limits, make(fake, api="v4").limits
    assert isinstance(v3, ImageLimits) and (v3.min_side, v3.max_side) == (50, 16000)
    assert v3.max_bytes == 4 * 1024 * 1024 - 1 and v4.max_bytes == 20 * 1024 * 1024
    assert v3.check((49, 80, 3), "Azure") is not None and v3.check((50, 80, 3), "Azure") is None


def test_captioner_with_a_key_cannot_be_pickled(fake):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(make(fake))


def test_registry_passes_the_http_options(fake, monkeypatch):
    from capshap.captioners import build_captioner
    from capshap.registry import SpecError

    monkeypatch.setenv("AZURE_VISION_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("AZURE_VISION_KEY", KEY)
    cap = build_captioner("azure-v4", {"timeout": 5, "max_response_bytes": 2000, "max_backoff": 10, "backoff": 0.2,
                                       "max_concurrency": 2, "jpeg_quality": 80})
    c = cap._client
    assert (c.timeout, c.max_response_bytes, c.max_backoff, c.backoff, c.max_concurrency) == (5.0, 2000, 10.0, 0.2, 2)
    assert cap.jpeg_quality == 80 and cap.spec == "azure-v4"
    with pytest.raises(SpecError, match="timeout"):
        build_captioner("azure", {"timeout": 0})
    monkeypatch.setenv("AZURE_VISION_KEY", "abc\ndef")
    with pytest.raises(SpecError, match="control character") as info:
        build_captioner("azure")
    assert "abc" not in str(info.value)
