"""A fake Azure AI Vision server for tests: real HTTP on 127.0.0.1, in a background thread.

It speaks the two APIs :class:`capshap.captioners.azure.AzureCaptioner` uses:

- ``POST /vision/v3.2/analyze?visualFeatures=Description`` (and ``v3.1``): answers
  ``{"description": {"captions": [{"text": ...}]}, ...}``;
- ``POST /computervision/imageanalysis:analyze?api-version=2023-10-01&features=caption``:
  answers ``{"captionResult": {"text": ...}, ...}``.

It checks the ``Ocp-Apim-Subscription-Key`` header (401 if wrong, as Azure does), the
content type, and decodes the image with PIL. The caption is derived from the image: the
name of the palette colour nearest to its mean colour, and "square" or "rectangle" (v3.x:
``"a red square"``; 4.0: ``"a man with a red square"``, or ``"a person with ..."`` with
``gender-neutral-caption=true``). :func:`expected_caption` computes the same caption.

Failures are injected with :meth:`FakeAzure.inject`; the server counts requests per API
(``requests["v3.2"]``, ``requests["v4"]``) and the most requests it handled at once
(``max_in_flight``).

Use it as a context manager, or through the pytest fixture :func:`fake_azure`
(``from fake_azure import fake_azure`` in a conftest or test module).
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

PALETTE = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "cyan": (30, 210, 220),
    "magenta": (210, 30, 210),
}

_KINDS = {"429", "500", "slow", "malformed", "401", "400", "empty", "trickle", "huge", "redirect", "echo"}


def colour_name(image: np.ndarray) -> str:
    """Name of the palette colour nearest to the mean colour of ``image`` (H, W, 3)."""
    mean = image.reshape(-1, 3).astype(np.float64).mean(axis=0)
    names = list(PALETTE)
    dist = [float(np.sum((mean - np.array(PALETTE[n])) ** 2)) for n in names]
    return names[int(np.argmin(dist))]


def expected_caption(image: np.ndarray, api: str = "v3.2", gender_neutral: bool = False) -> str:
    """The caption the fake server gives ``image`` (H, W, 3) uint8 under ``api``."""
    h, w = image.shape[:2]
    base = f"a {colour_name(image)} {'square' if h == w else 'rectangle'}"
    if api == "v4":
        return f"a {'person' if gender_neutral else 'man'} with {base}"
    return base


class FakeAzure:
    """The fake service. ``endpoint`` is its URL, ``key`` the key it accepts.

    ``delay``: seconds every answer waits before it is sent (makes requests overlap so
    concurrency shows in ``max_in_flight``).
    """

    def __init__(self, key: str = "fake-key-0123456789abcdef", delay: float = 0.0):
        self.key = key
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self.queries: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.bytes_sent = 0  # body bytes of trickled and huge answers actually written
        self.headers_seen: list[dict[str, str]] = []
        self._rules: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> "FakeAzure":
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()  # ends trickling and huge answers
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeAzure":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def total(self) -> int:
        """All analyze requests received, over all APIs."""
        with self._lock:
            return sum(self.requests.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.queries.clear()
            self.max_in_flight = 0

    def inject(self, kind: str, *, times: int | None = 1, when: str | None = None, **params: Any) -> None:
        """Make the next ``times`` matching requests (None: all) fail in the way ``kind`` says.

        ``when``: a colour name (see :data:`PALETTE`); the rule then only matches images of
        that colour. Rules are tried in the order given; the first match applies.

        kinds and their params:
          "429"        retry_after="1" (Retry-After header value), retry_after_ms=None
          "500"        status=500 (any 5xx)
          "slow"       seconds=1.0: wait that long, then answer normally
          "malformed"  body='{"description": ' (sent as a 200 answer)
          "401"        a wrong-key answer, whatever key was sent
          "400"        code="InvalidImageSize", message="The image is too small."
          "empty"      v3.x: a 200 answer with an empty caption list
          "trickle"    seconds=0.3, size=60: a 200 answer of ``size`` bytes sent one byte
                       every ``seconds`` (stops when the client leaves or the server closes)
          "huge"       size=1 GiB, declare=True: a 200 answer of ``size`` zero bytes, with
                       its Content-Length if ``declare`` (else until the connection closes)
          "redirect"   location="http://elsewhere.invalid/": a 307 answer
          "echo"       a 400 whose message repeats the key that was sent
        """
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {sorted(_KINDS)}")
        if when is not None and when not in PALETTE:
            raise ValueError(f"unknown colour {when!r}; use one of {list(PALETTE)}")
        with self._lock:
            self._rules.append({"kind": kind, "times": times, "when": when, "params": params})

    def _take_rule(self, colour: str | None) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._rules:
                if rule["when"] is not None and rule["when"] != colour:
                    continue
                if rule["times"] is not None:
                    rule["times"] -= 1
                    if rule["times"] <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    # ------------------------------------------------------------------ serving

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, body, headers = self._serve(h)
            if callable(body):  # a streamed answer: headers first, then the body writes itself
                return self._stream(h, status, headers, body)
        finally:
            with self._lock:  # counted as done before the answer leaves, so a client's
                self.in_flight -= 1  # next request never overlaps this one in the count
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (time-out test)

    def _stream(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: Any) -> None:
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.flush()
            body(h.wfile)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up: what the test wants
        h.close_connection = True

    def _trickle(self, data: bytes, seconds: float) -> Any:
        def write(wfile: Any) -> None:
            for i in range(len(data)):
                wfile.write(data[i:i + 1])
                wfile.flush()
                with self._lock:
                    self.bytes_sent += 1
                if self._stop.wait(seconds):
                    return
        return write

    def _zeros(self, size: int) -> Any:
        def write(wfile: Any) -> None:
            chunk = b"\0" * 65536
            left = size
            while left > 0 and not self._stop.is_set():
                part = chunk[: min(left, len(chunk))]
                wfile.write(part)
                left -= len(part)
                with self._lock:
                    self.bytes_sent += len(part)
        return write

    def _serve(self, h: BaseHTTPRequestHandler) -> tuple[int, bytes, dict[str, str]]:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path in ("/vision/v3.2/analyze", "/vision/v3.1/analyze"):
            api = url.path.split("/")[2]
            ok = "Description" in query.get("visualFeatures", "").split(",")
        elif url.path == "/computervision/imageanalysis:analyze":
            api = "v4"
            ok = query.get("api-version") == "2023-10-01" and "caption" in query.get("features", "").split(",")
        else:
            return self._answer(404, {"error": {"code": "404", "message": "Resource not found"}})
        with self._lock:
            self.requests[api] += 1
            self.queries.append(query)
            self.headers_seen.append({k.lower(): v for k, v in h.headers.items()})
        if not ok:
            return self._error(api, 400, "InvalidRequest", f"missing or bad query {url.query!r}")
        if h.headers.get("Ocp-Apim-Subscription-Key") != self.key:
            return self._unauthorised()
        if h.headers.get("Content-Type") != "application/octet-stream":
            return self._error(api, 415, "InvalidRequest", "Content-Type must be application/octet-stream")
        try:
            image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        except Exception:  # noqa: BLE001
            return self._error(api, 400, "InvalidImageFormat", "Input data is not a valid image.")
        hh, ww = image.shape[:2]
        if min(hh, ww) < 50:
            return self._error(api, 400, "InvalidImageSize", "Image must be at least 50 pixels in width and height.")
        colour = colour_name(image)
        rule = self._take_rule(colour)
        kind = rule["kind"] if rule else None
        p = rule["params"] if rule else {}
        if kind == "401":
            return self._unauthorised()
        if kind == "429":
            headers = {}
            if p.get("retry_after", "1") is not None:
                headers["Retry-After"] = str(p.get("retry_after", "1"))
            if p.get("retry_after_ms") is not None:
                headers["retry-after-ms"] = str(p["retry_after_ms"])
            return self._answer(429, {"error": {"code": "429", "message": "Rate limit is exceeded. Try again later."}}, headers)
        if kind == "500":
            return self._answer(int(p.get("status", 500)), {"error": {"code": "InternalServerError", "message": "Oops."}})
        if kind == "400":
            return self._error(api, 400, p.get("code", "InvalidImageSize"), p.get("message", "The image is too small."))
        if kind == "redirect":
            return self._answer(307, {}, {"Location": str(p.get("location", "http://elsewhere.invalid/"))})
        if kind == "echo":
            sent = h.headers.get("Ocp-Apim-Subscription-Key", "")
            return self._error(api, 400, "InvalidRequest", f"bad request for key {sent} (from {sent!r})")
        if kind == "trickle":
            payload = json.dumps({"description": {"captions": [{"text": "x" * int(p.get("size", 60))}]}}).encode()
            return 200, self._trickle(payload, float(p.get("seconds", 0.3))), {
                "Content-Type": "application/json", "Content-Length": str(len(payload))}
        if kind == "huge":
            size = int(p.get("size", 1 << 30))
            headers = {"Content-Type": "application/json"}
            if p.get("declare", True):
                headers["Content-Length"] = str(size)
            else:
                headers["Connection"] = "close"
            return 200, self._zeros(size), headers
        if kind == "slow":
            self._stop.wait(float(p.get("seconds", 1.0)))
        if self.delay:
            self._stop.wait(self.delay)
        if kind == "malformed":
            return 200, str(p.get("body", '{"description": ')).encode(), {}
        caption = expected_caption(image, api, query.get("gender-neutral-caption") == "true")
        if api == "v4":
            payload = {
                "modelVersion": "2023-10-01",
                "captionResult": {"text": caption, "confidence": 0.9},
                "metadata": {"width": ww, "height": hh},
            }
        else:
            captions = [] if kind == "empty" else [{"text": caption, "confidence": 0.9}]
            payload = {
                "description": {"tags": [colour], "captions": captions},
                "requestId": "00000000-0000-0000-0000-000000000000",
                "metadata": {"width": ww, "height": hh, "format": "Png"},
                "modelVersion": "2021-05-01",
            }
        return self._answer(200, payload)

    def _unauthorised(self) -> tuple[int, bytes, dict[str, str]]:
        return self._answer(401, {"error": {"code": "401", "message": (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.")}})

    def _error(self, api: str, status: int, code: str, message: str) -> tuple[int, bytes, dict[str, str]]:
        if api == "v4":  # 4.0 nests the error
            body = {"error": {"code": "InvalidRequest", "message": message,
                              "innererror": {"code": code, "message": message}}}
        else:  # v3.x: flat
            body = {"code": code, "requestId": "00000000-0000-0000-0000-000000000000", "message": message}
        return self._answer(status, body)

    @staticmethod
    def _answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(payload).encode(), dict(headers or {})


@pytest.fixture
def fake_azure():
    """A running :class:`FakeAzure` (closed after the test)."""
    with FakeAzure() as server:
        yield server
