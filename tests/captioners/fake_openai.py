"""A fake OpenAI-compatible server (vLLM flavour) for tests: real HTTP on 127.0.0.1, in a
background thread, serving a tiny in-process chat VLM through :class:`HFCaptioner`.

Endpoints:

- ``GET /v1/models``: ``{"object": "list", "data": [{"id": MODEL, ...}]}``;
- ``POST /v1/chat/completions``: checks the bearer key (when the server has one), the model
  and the prompt, decodes the data-URL image, and answers
  - a generation request with ``HFCaptioner.caption`` (real model output);
  - a ``prompt_logprobs`` request as vLLM does: a top-level ``prompt_logprobs`` list with one
    entry per prompt token (``None`` first, else ``{id: {"logprob", "rank",
    "decoded_token"}}``). The prompt's tokens are the tokenized template text (with one
    placeholder per image) and, for a continued assistant message, the answer's tokens,
    whose log-probabilities are ``HFCaptioner.own_scorer(answer, score="logprob")`` on the
    image (real model output; -1.0 without an image). The prompt tokens before the answer
    get arbitrary values, so a client must locate the answer itself. Without
    ``continue_final_message`` an end-of-turn token follows the answer, as a template would.

``plp`` chooses how ``prompt_logprobs`` is treated: "vllm" (served), "ignore" (Ollama:
an ordinary completion) or "reject" (OpenAI: HTTP 400 "Unrecognized request argument").
``retokenize=True`` changes the answer's first token id next to an image (a server whose
tokenization differs in context). ``html=True`` answers every request with a 404 HTML page (a URL that is not an API).

Faults: :meth:`FakeOpenAI.inject` ("429", "500", "slow", "malformed", "401"). The server
answers at most ``max_requests`` requests (then 503) and shuts itself down after
``lifetime`` seconds.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image
from typing_extensions import Self

MODEL = "tiny-llava"
_KINDS = {"429", "500", "slow", "malformed", "401"}


class FakeOpenAI:
    """The fake server; ``base_url`` is its API root (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, hf: Any, key: str | None = None, plp: str = "vllm", html: bool = False,
                 max_requests: int = 3000, lifetime: float = 120.0, model: str = MODEL,
                 retokenize: bool = False):
        self.hf = hf
        self.retokenize = retokenize  # next to an image, the answer's first token id changes
        self.key = key
        self.plp = plp
        self.html = html
        self.model = model
        self.max_requests = max_requests
        self.requests: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self._rules: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread: threading.Thread | None = None
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._timer.start()
        return self

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        with self._model_lock:  # a model call in flight ends before the server counts as closed
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def inject(self, kind: str, *, times: int = 1, **params: Any) -> None:
        """The next ``times`` chat requests fail as ``kind`` says: "429" (retry_after="1"),
        "500", "slow" (seconds=1.0, then a normal answer), "malformed" (a broken 200 body),
        "401"."""
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        with self._lock:
            self._rules.append({"kind": kind, "times": times, "params": params})

    def _take_rule(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._rules:
                return None
            rule = self._rules[0]
            rule["times"] -= 1
            if rule["times"] <= 0:
                self._rules.pop(0)
            return rule

    # ------------------------------------------------------------------ serving

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        if length > 16 * 1024 * 1024:
            status, body, headers = 413, b'{"error": {"message": "too large"}}', {}
        else:
            raw = h.rfile.read(length) if length else b""
            with self._lock:
                self.requests[h.path] += 1
                over = sum(self.requests.values()) > self.max_requests
            if over:
                status, body, headers = 503, b'{"error": {"message": "request budget of the fake spent"}}', {}
            elif self.html:
                status, body, headers = 404, b"<!DOCTYPE html><html><body>Not Found</body></html>", {
                    "Content-Type": "text/html"}
            else:
                try:
                    status, body, headers = self._serve(h, method, raw)
                except Exception as e:  # noqa: BLE001 - a bug in the fake: a 500 the test will see
                    status, body, headers = 500, json.dumps({"error": {"message": f"fake: {e!r}"}}).encode(), {}
        try:
            h.send_response(status)
            h.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(payload).encode(), dict(headers or {})

    def _error(self, status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
        return self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

    def _serve(self, h: BaseHTTPRequestHandler, method: str, raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.key is not None and h.headers.get("Authorization") != f"Bearer {self.key}":
            return self._error(401, "Incorrect API key provided.")
        if method == "GET" and h.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if method != "POST" or h.path != "/v1/chat/completions":
            return self._error(404, f"Not Found: {h.path}")
        rule = self._take_rule()
        kind = rule["kind"] if rule else None
        p = rule["params"] if rule else {}
        if kind == "401":
            return self._error(401, "Incorrect API key provided.")
        if kind == "429":
            return self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": str(p.get("retry_after", "1"))})
        if kind == "500":
            return self._error(500, "internal error")
        if kind == "malformed":
            return 200, b'{"choices": [', {}
        if kind == "slow" and self._stop.wait(float(p.get("seconds", 1.0))):
            return self._error(503, "shutting down")
        req = json.loads(raw)
        with self._lock:
            self.bodies.append(req)
        if req.get("model") != self.model:
            return self._error(404, f"The model `{req.get('model')}` does not exist.")
        msgs = req["messages"]
        user = msgs[0]["content"]
        image = None
        text = None
        for part in user:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                head, b64 = url.split(",", 1)
                assert head == "data:image/png;base64", head
                image = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
            elif part["type"] == "text":
                text = part["text"]
        if text != self.hf.prompt:
            return self._error(400, f"fake serves the prompt {self.hf.prompt!r} only, got {text!r}")
        answer = msgs[1]["content"] if len(msgs) > 1 and msgs[1]["role"] == "assistant" else None
        if "prompt_logprobs" in req and self.plp == "reject":
            return self._error(400, "Unrecognized request argument supplied: prompt_logprobs")
        if req.get("prompt_logprobs") is not None and self.plp == "vllm":
            return self._json(200, self._prompt_logprobs(image, answer, req))
        if image is None:
            caption = "There is no image."  # a text-only chat (the own-head check on a server without it)
        else:
            with self._model_lock:
                if self._stop.is_set():  # checked under the lock close() takes last
                    return self._error(503, "shutting down")
                caption = self.hf.caption([image])[0]
        return self._json(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": caption}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def _prompt_logprobs(self, image: np.ndarray | None, answer: str | None, req: dict[str, Any]) -> dict[str, Any]:
        tok = self.hf.tokenizer
        # the template text before the answer; an image adds placeholder tokens
        ids = list(tok.encode(("<image>\n" if image is not None else "") + f"USER: {self.hf.prompt} ASSISTANT:",
                              add_special_tokens=False))
        lps = [-0.5] * len(ids)
        if answer is not None:
            assert req.get("continue_final_message") is True and req.get("add_generation_prompt") is False, req
            with self._model_lock:
                if self._stop.is_set():
                    raise RuntimeError("shutting down")
                sc = self.hf.own_scorer(answer, score="logprob")
                a_lp = sc.score(image[None])[0] if image is not None else -np.ones(len(sc.token_ids))
            a_ids = list(sc.token_ids)
            if self.retokenize and image is not None:
                a_ids[0] = (a_ids[0] + 1) % len(tok)
            ids += a_ids
            lps += [float(v) for v in a_lp]
            if not req.get("continue_final_message"):
                ids.append(int(tok.eos_token_id))
                lps.append(-0.1)
        else:
            assert req.get("add_generation_prompt") is True, req
        entries: list[Any] = [None]
        for tid, lp in zip(ids[1:], lps[1:]):
            entries.append({str(tid): {"logprob": lp, "rank": 1, "decoded_token": tok.decode([tid])}})
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
            "prompt_logprobs": entries,
        }
