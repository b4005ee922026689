"""HTTPClient unit tests: httpx.MockTransport instead of sockets, a fake clock instead of waits."""

from __future__ import annotations

import _thread
import email.utils
import logging
import pickle
import random
import threading
import time

import httpx
import pytest

from capshap.captioners.cache import CaptionCache
from capshap.captioners.http import (
    BadAnswer,
    BatchStopped,
    Cancelled,
    ClientError,
    HTTPClient,
    RedirectRefused,
    Request,
    ResponseTooLarge,
    RetriesExhausted,
    RetryAnswer,
    Secret,
    parse_retry_after,
    scrub,
)

KEY = "sk-test-0123456789-do-not-leak"
URL = "https://api.example.test/v1/caption"


from fake_clock import FakeClock  # noqa: E402


class Server:
    """A MockTransport handler that plays ``answers`` (callables or Responses) in order,
    then ``default``; records every request."""

    def __init__(self, *answers, default=None):
        self.answers = list(answers)
        self.default = default or (lambda req: httpx.Response(200, json={"ok": req.url.path}))
        self.seen: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.seen.append(request)
            a = self.answers.pop(0) if self.answers else self.default
        return a(request) if callable(a) else a


def client(server, clock=None, **kw) -> HTTPClient:
    clock = clock or FakeClock()
    opts = dict(secret_headers={"Authorization": Secret(KEY, prefix="Bearer ")}, transport=httpx.MockTransport(server),
                sleep=clock.sleep, clock=clock, backoff=0.5, max_backoff=60.0, poll=1000.0)
    opts.update(kw)
    return HTTPClient(**opts)


def req(body: bytes = b"x", label: str = "item 0", url: str = URL) -> Request:
    return Request("POST", url, body, {"Content-Type": "application/octet-stream"}, label=label)


def jitter(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 + 0.1 * rng.random() for _ in range(n)]


# ----------------------------------------------------------------------- secrets


def test_secret_is_hidden_validated_and_unpicklable():
    s = Secret("  " + KEY + "\n", prefix="Bearer ")
    assert s.reveal() == KEY and s.header_value() == "Bearer " + KEY
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in repr([s]) and KEY not in f"{s}"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    with pytest.raises(ValueError, match="empty"):
        Secret(" \n ")
    for bad in ("abc\ndef", "abc\tdef", "abc\x1bdef", "abc\u2028def", "abcédef", "abc\x7fdef"):
        with pytest.raises(ValueError, match=r"my token \(from TOKEN_ENV\) contains .* at position 3 of 7") as info:
            Secret(bad, name="my token", source="TOKEN_ENV")
        assert "abc" not in str(info.value) and "def" not in str(info.value)


def test_scrub_removes_plain_and_quoted_forms():
    s = Secret("a+b/c=d")
    text = "key a+b/c=d, quoted a%2Bb%2Fc%3Dd, plus a%2Bb%2Fc%3Dd"
    out = scrub(text, [s])
    assert "a+b/c=d" not in out and "a%2Bb" not in out and out.count("***") == 3
    assert scrub("nothing here", [s]) == "nothing here"


def test_secret_header_is_sent_and_never_in_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)

    def boom(request):
        raise httpx.ConnectError(f"cannot reach, header was {request.headers['authorization']}")

    def echo(request):
        return httpx.Response(400, text=f"bad key {KEY}")

    srv = Server(echo, default=boom)
    c = client(srv, max_retries=1)
    resp = c.send(req())
    assert resp.status == 400 and srv.seen[0].headers["authorization"] == "Bearer " + KEY
    with pytest.raises(RetriesExhausted, match=r"item 0: failed after 2 tries; last: network error") as info:
        c.send(req())

    def parse(r):
        raise ValueError(f"parser saw {KEY}")

    (perr,) = c.map([req(b"other")], parse)
    texts = [str(info.value), repr(info.value), str(perr), repr(perr), caplog.text, repr(c), repr(vars(c))]
    assert "***" in str(info.value) and "***" in str(perr)
    for t in texts:
        assert KEY not in t
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(c)


def test_plain_http_with_a_key_warns_once_per_client(caplog):
    srv = Server()
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.http"):
        c = client(srv)
        c.map([req(b"1", url="http://plain.test/x"), req(b"2", url="http://plain.test/x")])
        c.send(req(url="http://plain.test/y"))
        client(srv).send(req(url="https://secure.test/"))  # https: silent
        client(srv, secret_headers={}).send(req(url="http://plain.test/"))  # no key: silent
    msgs = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(msgs) == 1 and "plain.test" in msgs[0]


# ----------------------------------------------------------------------- retries


def test_retryable_statuses_back_off_exponentially_with_seeded_jitter():
    srv = Server(httpx.Response(503), httpx.Response(500), httpx.Response(429), httpx.Response(408))
    clock = FakeClock()
    resp = client(srv, clock, seed=7, backoff=0.5).send(req())
    assert resp.status == 200 and resp.attempts == 5 and len(srv.seen) == 5
    expected = [0.5 * 2 ** k * j for k, j in enumerate(jitter(7, 4))]
    assert clock.sleeps == pytest.approx(expected)


def test_final_statuses_are_not_retried():
    for status in (400, 401, 403, 404, 422):
        srv = Server(httpx.Response(status, text="nope"))
        clock = FakeClock()
        resp = client(srv, clock).send(req())
        assert resp.status == status and resp.text() == "nope" and len(srv.seen) == 1 and clock.sleeps == []


def test_retry_after_seconds_ms_and_date_are_honoured_and_capped(caplog):
    clock = FakeClock()
    srv = Server(httpx.Response(429, headers={"Retry-After": "7"}),
                 httpx.Response(429, headers={"Retry-After": "7", "retry-after-ms": "250"}),
                 httpx.Response(503, headers={"Retry-After": "86400"}))
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.http"):
        client(srv, clock, seed=1, max_backoff=60.0).send(req())
    assert "Retry-After 86400 s, capped at max_backoff=60 s" in caplog.text
    j = jitter(1, 3)
    assert clock.sleeps == pytest.approx([7 * j[0], 0.25 * j[1], 60 * j[2]])

    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(120)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 50, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"x-ms-retry-after-ms": "1500"}) == 1.5
    for junk in ("soon", "nan", ""):
        assert parse_retry_after({"Retry-After": junk}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_long_wait_is_logged_as_a_warning_with_its_length_and_reason(caplog):
    srv = Server(httpx.Response(429, headers={"Retry-After": "240"}, text="slow down"), httpx.Response(500))
    with caplog.at_level(logging.DEBUG, logger="capshap.captioners.http"):
        client(srv, warn_wait=5.0, backoff=0.5, max_backoff=600).send(req(label="image 4"))
    waits = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert [r.levelno for r in waits] == [logging.WARNING, logging.DEBUG]  # 240 s warns, 0.5 s does not
    msg = waits[0].getMessage()
    assert "image 4" in msg and "Retry-After 240" in msg and "HTTP 429" in msg and "slow down" in msg
    assert 240 <= float(msg.split("waiting ")[1].split(" s")[0]) <= 264


def test_waits_are_sliced_so_an_interrupt_is_seen_within_poll():
    clock = FakeClock()
    client(Server(httpx.Response(429, headers={"Retry-After": "3"})), clock, poll=0.25, seed=0).send(req())
    assert max(clock.sleeps) <= 0.25 and sum(clock.sleeps) == pytest.approx(3 * jitter(0, 1)[0])


def test_timeouts_and_network_errors_are_retried_then_reported():
    def timeout(request):
        assert request.extensions["timeout"]["read"] == 12.0  # each read bounded by the timeout
        raise httpx.ReadTimeout("read timed out")

    def refused(request):
        raise httpx.ConnectError("connection refused")

    srv = Server(timeout, refused)
    assert client(srv, timeout=12.0).send(req()).status == 200 and len(srv.seen) == 3
    srv = Server(default=timeout)
    with pytest.raises(RetriesExhausted, match=r"item 0: failed after 3 tries; last: no answer within timeout=12 s") as info:
        client(srv, timeout=12.0, max_retries=2).send(req())
    assert info.value.status is None and info.value.attempts == 3 and len(srv.seen) == 3
    with pytest.raises(RetriesExhausted, match="network error.*ConnectError.*connection refused"):
        client(Server(default=refused), max_retries=0).send(req())


def test_retries_exhausted_keeps_last_status():
    srv = Server(default=lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(RetriesExhausted, match=r"3 tries; last: HTTP 502: bad gateway") as info:
        client(srv, max_retries=2).send(req())
    assert info.value.status == 502


def test_parser_may_ask_for_a_retry_a_bounded_number_of_times():
    calls = []

    def parse(resp):
        calls.append(resp.attempts)
        raise RetryAnswer("malformed JSON")

    srv = Server()
    with pytest.raises(BadAnswer, match=r"item 0: malformed JSON \(3 times\)"):
        client(srv, max_retries=5, max_bad_answers=2).send(req(), parse)
    assert calls == [1, 2, 3] and len(srv.seen) == 3


# ----------------------------------------------------------------------- deadline and size


class Trickle(httpx.SyncByteStream):
    """One byte per read; each read moves the fake clock on by ``step`` seconds."""

    def __init__(self, clock: FakeClock, size: int, step: float):
        self.clock, self.size, self.step, self.sent = clock, size, step, 0

    def __iter__(self):
        for _ in range(self.size):
            self.clock.now += self.step
            self.sent += 1
            yield b"x"


def test_deadline_covers_the_whole_answer_not_each_read():
    clock = FakeClock()
    stream = Trickle(clock, size=1000, step=0.3)
    srv = Server(default=lambda r: httpx.Response(200, stream=stream))
    with pytest.raises(RetriesExhausted, match=r"no complete answer within timeout=2 s") as info:
        client(srv, clock, timeout=2.0, max_retries=0).send(req())
    assert info.value.status is None
    assert stream.sent <= 8  # 2 s / 0.3 s per byte, not 1000 bytes (300 s)


def test_answer_larger_than_the_cap_is_refused():
    class Endless(httpx.SyncByteStream):
        chunks = 0

        def __iter__(self):
            for _ in range(100_000):
                Endless.chunks += 1
                yield b"z" * 1024

    srv = Server(default=lambda r: httpx.Response(200, stream=Endless()))
    with pytest.raises(ResponseTooLarge, match=r"item 0: .*sent more than 10000 bytes.*max_response_bytes=10000") as info:
        client(srv, max_response_bytes=10_000).send(req())
    assert info.value.status == 200 and len(srv.seen) == 1  # not retried
    assert Endless.chunks == 10  # stopped at the first chunk past the cap

    declared = Endless()
    Endless.chunks = 0
    srv = Server(default=lambda r: httpx.Response(200, headers={"Content-Length": str(10**9)}, stream=declared))
    with pytest.raises(ResponseTooLarge, match="declares 1000000000 bytes"):
        client(srv, max_response_bytes=10_000).send(req())
    assert Endless.chunks == 0  # refused from the header, nothing read
    assert client(Server(httpx.Response(200, content=b"y" * 10_000)), max_response_bytes=10_000).send(req()).content == b"y" * 10_000


def test_redirects_are_not_followed():
    srv = Server(httpx.Response(302, headers={"Location": "https://evil.test/collect"}))
    with pytest.raises(RedirectRefused, match=r"HTTP 302 \(redirect to 'https://evil.test/collect'\).*not followed") as info:
        client(srv).send(req())
    assert info.value.status == 302 and [r.url.host for r in srv.seen] == ["api.example.test"]


# ----------------------------------------------------------------------- batches


def test_map_keeps_order_and_every_result_when_some_fail():
    def answer(request):
        body = request.content.decode()
        if body == "bad":
            return httpx.Response(400, text="rejected")
        return httpx.Response(200, text=body.upper())

    def parse(resp):
        if resp.status != 200:
            raise ValueError(f"{resp.request.label}: {resp.text()}")
        return resp.text()

    reqs = [req(b, label=f"item {i}") for i, b in enumerate([b"a", b"bad", b"c", b"d"])]
    out = client(Server(default=answer), max_concurrency=3).map(reqs, parse)
    assert out[0] == "A" and out[2] == "C" and out[3] == "D"
    assert isinstance(out[1], ValueError) and str(out[1]) == "item 1: rejected"


def test_identical_requests_are_sent_once():
    srv = Server(default=lambda r: httpx.Response(200, text=r.content.decode()))
    c = client(srv)
    out = c.map([req(b"a"), req(b"b"), req(b"a"), req(b"a", url=URL + "?v=2")], lambda r: r.text())
    assert out == ["a", "b", "a", "a"] and len(srv.seen) == 3 and c.requests_sent == 3
    assert req(b"a").fingerprint() == req(b"a", label="other").fingerprint() != req(b"a", url=URL + "?v=2").fingerprint()


def test_cache_answers_repeats_and_is_keyed_on_url_and_body(tmp_path):
    srv = Server(default=lambda r: httpx.Response(200, text=f"{r.url.host}:{r.content.decode()}"))
    cache = CaptionCache(tmp_path)
    c = client(srv, cache=cache)
    assert c.map([req(b"a"), req(b"b")], lambda r: r.text()) == ["api.example.test:a", "api.example.test:b"]
    c2 = client(srv, cache=CaptionCache(tmp_path))  # another process, same folder
    assert c2.map([req(b"a"), req(b"b")], lambda r: r.text()) == ["api.example.test:a", "api.example.test:b"]
    assert len(srv.seen) == 2 and c2.cache_hits == 2 and c2.requests_sent == 0
    other = "https://other.test/v1/caption"
    assert c2.map([req(b"a", url=other)], lambda r: r.text()) == ["other.test:a"]  # another server: no hit
    assert len(srv.seen) == 3


def test_stop_predicate_stops_the_rest_of_the_batch():
    def answer(request):
        return httpx.Response(401 if request.content == b"1" else 200, text="ok")

    def parse(resp):
        if resp.status == 401:
            raise PermissionError("wrong key")
        return resp.text()

    srv = Server(default=answer)
    reqs = [req(str(i).encode(), label=f"item {i}") for i in range(5)]
    out = client(srv, max_concurrency=1).map(reqs, parse, stop=lambda e: isinstance(e, PermissionError))
    assert out[0] == "ok" and isinstance(out[1], PermissionError)
    assert all(isinstance(e, BatchStopped) and e.first is out[1] and "not sent" in str(e) for e in out[2:])
    assert len(srv.seen) == 2


def test_concurrency_limit_is_shared_by_all_callers():
    limit = 3
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    full = threading.Event()

    def answer(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            if state["now"] >= limit:
                full.set()
        full.wait(5.0)  # hold the first requests until the limit is reached
        with lock:
            state["now"] -= 1
        return httpx.Response(200, text=request.content.decode())

    c = client(Server(default=answer), max_concurrency=limit)
    results: dict[int, list] = {}

    def caller(k):
        results[k] = c.map([req(f"{k}-{i}".encode()) for i in range(6)], lambda r: r.text())

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(results[k] == [f"{k}-{i}" for i in range(6)] for k in range(3))
    assert state["max"] == limit and c.requests_sent == 18


def test_keyboard_interrupt_in_a_worker_propagates_and_stops_the_batch():
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        raise KeyboardInterrupt

    srv = Server(httpx.Response(429, headers={"Retry-After": "300"}))
    c = client(srv, sleep=sleep, max_concurrency=1)
    with pytest.raises(KeyboardInterrupt):
        c.map([req(str(i).encode()) for i in range(5)])
    assert len(calls) == 1 and len(srv.seen) <= 2  # the rest of the batch was not sent


def test_ctrl_c_in_the_caller_ends_a_long_retry_wait():
    """The worker waits out a 300 s Retry-After on a clock that never moves: only the
    interrupt can end it. With one worker, a second batch runs only if it did."""
    clock = FakeClock()
    interrupted = []

    def sleep(seconds):  # a real (tiny) sleep that does not move the fake clock
        if not interrupted:
            interrupted.append(True)
            _thread.interrupt_main()
        time.sleep(0.005)

    srv = Server(httpx.Response(429, headers={"Retry-After": "300"}))
    c = client(srv, clock=clock, sleep=sleep, max_concurrency=1, poll=0.05)
    try:
        with pytest.raises(KeyboardInterrupt):
            c.map([req(b"a"), req(b"b")])
        done = []
        t = threading.Thread(target=lambda: done.append(c.map([req(b"c")], lambda r: r.text())))
        t.start()
        t.join(10)
    finally:
        c.close()  # frees the worker should the interrupt have been lost
    assert done and done[0] == ['{"ok":"/v1/caption"}']
    assert [r.content for r in srv.seen] == [b"a", b"c"]  # "b" was never sent


def test_closed_client_sends_nothing_and_stops_waits():
    c = client(Server())
    c.close()
    with pytest.raises(Cancelled, match="interrupted"):
        c.send(req())
    clock = FakeClock()
    c = client(Server(httpx.Response(503)), clock=clock, poll=1.0)
    orig = clock.sleep

    def sleep(s):
        orig(s)
        c.close()

    c._sleep = sleep
    with pytest.raises(Cancelled, match="interrupted while waiting to retry after HTTP 503"):
        c.send(req())
    assert len(clock.sleeps) == 1


def test_invalid_settings_are_refused_with_the_value():
    for kw, word in [({"max_concurrency": 0}, "max_concurrency"), ({"timeout": 0}, "timeout"),
                     ({"max_retries": -1}, "max_retries"), ({"max_response_bytes": 0}, "max_response_bytes"),
                     ({"backoff": -1}, "backoff"), ({"poll": 0}, "poll")]:
        with pytest.raises(ValueError, match=word):
            HTTPClient(**kw)
    with pytest.raises(TypeError, match="must be a Secret"):
        HTTPClient(secret_headers={"Authorization": KEY})
    assert issubclass(RetriesExhausted, ClientError)


def test_idle_workers_end_and_new_ones_start_on_demand():
    c = client(Server(default=lambda r: httpx.Response(200, text=r.content.decode())), max_concurrency=4)
    c._pool.idle = 0.01
    assert c.map([req(b"a"), req(b"b"), req(b"c")], lambda r: r.text()) == ["a", "b", "c"]
    for _ in range(500):  # bounded poll until the idle workers have left
        with c._pool._lock:
            if not c._pool._threads:
                break
        time.sleep(0.01)
    assert c._pool._threads == []
    assert c.map([req(b"d")], lambda r: r.text()) == ["d"]  # the pool starts again
