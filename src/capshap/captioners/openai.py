"""OpenAI-compatible chat servers (vLLM, OpenAI, Ollama, ...) as captioners, and own-head
scoring through vLLM's prompt log-probabilities.

Captioning
----------
:class:`OpenAICaptioner` sends each (masked) image to ``POST {base_url}/chat/completions``
as one user message: the image inline as a data URL
(``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``, PNG by
default, which is lossless) and the captioning prompt (default :data:`DEFAULT_PROMPT`),
with ``temperature`` 0 and a fixed ``seed``. The caption is
``choices[0].message.content``, stripped. ``base_url`` defaults to ``OPENAI_BASE_URL``,
then ``https://api.openai.com/v1``; the key to ``OPENAI_API_KEY`` (``api_key_env``) and
is optional (a local vLLM often has none): it is sent as ``Authorization: Bearer ...``,
never logged, shown or saved.

Concurrency, retries (429 with ``Retry-After``, 5xx, time-outs, malformed JSON), deadlines,
size caps, and the rule that the key never reaches a message come from
:class:`capshap.captioners.http.HTTPClient`. Captions are cached by image content under a
namespace holding the base URL, model, prompt, generation settings and image encoding.
401/403 (key), 404 (wrong URL or unknown model) and answers that are not JSON at all (an
HTML page: the URL is not an OpenAI-compatible API) stop the batch at once, with a one-line
message naming the URL and what to check.

Own-head scoring (vLLM)
-----------------------
vLLM's chat completions accept ``prompt_logprobs`` (log-probabilities of the prompt's own
tokens), ``add_generation_prompt`` and ``continue_final_message``. Sending the caption as
the final assistant message with ``add_generation_prompt: false,
continue_final_message: true, max_tokens: 1, prompt_logprobs: 0`` teacher-forces it: the
answer's tokens are the last tokens of the prompt (a continued final message gets no
end-of-turn tokens), and the answer ``prompt_logprobs`` holds one entry per prompt token,
``null`` for the first, else ``{token_id: {"logprob", "rank", "decoded_token"}}`` whose
first key is the prompt token itself.

Which prompt positions are the answer is found once per caption, without an image and
without the ``/tokenize`` endpoint (which lives outside ``/v1`` and is not served by every
proxy): the prompt alone (with ``add_generation_prompt: true``) and the prompt plus the
continued answer are both sent with ``prompt_logprobs: 0``; the answer is what the second
has after their common token prefix. Its token ids are checked again in every scored
answer (a server that tokenizes the caption differently in context fails loudly).
Whitespace-only tokens around the caption (the template's separator, a newline vLLM's
PaliGemma appends) are read but not scored. Where the captioner wrote the caption itself,
it asked vLLM for the generated ids (``return_token_ids``) and the scorer refuses, with
:class:`CaptionTokensDiffer` naming the tokens, a caption whose text does not re-tokenize
into them (:mod:`capshap.captioners.answer_tokens`); ``decoded_token`` pieces are matched
to the caption so that merged words keep every character. :meth:`OpenAICaptioner.provenance`
gives the served model and the vLLM version for the explanation's record.
Scores are ``log p`` (``score="logprob"``) or the log-odds ``log p - log(1 - p)``
(computed stably with :func:`capshap.scoring.logodds.log1mexp`); ``merge_words`` sums
pieces into words, a piece starting a word when its decoded text begins with whitespace.

:func:`open_captioner` (used by the ``openai:MODEL`` registry entry) checks once whether
the server returns prompt log-probabilities and returns an :class:`OpenAIOwnHeadCaptioner`
(an :class:`~capshap.interfaces.OwnHeadCaptioner`, so ``--scorer auto`` uses its head)
where it does, else a plain :class:`OpenAICaptioner` (``auto`` then scores by word
presence; ``--scorer own`` is refused naming ``presence`` and ``surrogate:LM``).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import os
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from capshap.captioners.answer_tokens import (
    generated_ids,
    leading_extra,
    token_difference,
    trailing_extra,
    word_pieces,
)
from capshap.captioners.cache import CaptionCache
from capshap.captioners.cloud import CloudCaptioner, ServiceError
from capshap.captioners.http import (
    Request,
    Response,
    RetryAnswer,
    Secret,
)
from capshap.images import check_rgb
from capshap.interfaces import Scorer
from capshap.scoring.logodds import SCORE_CAP, check_score, log1mexp
from capshap.text import printable

__all__ = [
    "CaptionTokensDiffer",
    "DEFAULT_BASE_URL",
    "DEFAULT_PROMPT",
    "NotOpenAICompatible",
    "OpenAIAuthError",
    "OpenAICaptioner",
    "OpenAIError",
    "OpenAIOwnHeadCaptioner",
    "OpenAIOwnHeadScorer",
    "OpenAIRequestError",
    "PromptLogprobsUnsupported",
    "open_captioner",
]

logger = logging.getLogger(__name__)

BASE_URL_ENV = "OPENAI_BASE_URL"
KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_PROMPT = "Describe this image in one sentence."
WORKING_SCORERS = "--scorer presence (word presence) or --scorer surrogate:LM_ID_OR_PATH (a local language model)"

_MB = 1024 * 1024
_WRITTEN_KEPT = 4096  # captions whose generated ids an own-head captioner keeps

class OpenAIError(ServiceError):
    """A request to an OpenAI-compatible server failed (``image``, ``index``, ``status`` as
    in :class:`~capshap.captioners.cloud.ServiceError`)."""


class OpenAIAuthError(OpenAIError):
    """401/403: the key is missing or wrong. Not retried; stops the batch."""


class OpenAIRequestError(OpenAIError):
    """The server refused a request (400 and other 4xx, 404 included): not retried."""


class NotOpenAICompatible(OpenAIError):
    """The URL answers, but not as an OpenAI-compatible API (an HTML page, another JSON)."""


class PromptLogprobsUnsupported(OpenAIError):
    """The server does not return prompt log-probabilities: no own-head scoring."""


class CaptionTokensDiffer(OpenAIError):
    """The server's tokens of a caption are not the ids the model wrote it with (the text
    does not round-trip): own-head values through the server would be for other tokens."""


def _service_message(body: bytes) -> str:
    """``error.message`` (OpenAI and vLLM shape) or ``message`` of a JSON error body, else its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        j = json.loads(text)
    except ValueError:
        return printable(text, 200) or "(empty body)"
    if isinstance(j, dict):
        err = j.get("error") if isinstance(j.get("error"), (dict, str)) else j
        if isinstance(err, str):
            return printable(err, 300)
        msg = err.get("message") or err.get("detail") or text
        return printable(str(msg), 300)
    return printable(text, 300)


def _looks_like_html(resp: Response) -> bool:
    ctype = resp.headers.get("content-type", "").lower()
    head = resp.content[:200].lstrip().lower()
    return "html" in ctype or head.startswith((b"<!doctype", b"<html"))


class OpenAICaptioner(CloudCaptioner):
    """Captions images with a vision model behind an OpenAI-compatible chat completions API.

    Parameters
    ----------
    model : str
        The model name the server knows (``vllm serve MODEL`` serves it under MODEL).
    base_url : str, optional
        The API root, ending in ``/v1`` (e.g. ``http://localhost:8000/v1``); default the
        environment variable ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
    api_key : str, optional
        The key; default the environment variable named by ``api_key_env``. Optional: no
        ``Authorization`` header is sent without one. Never logged or shown.
    api_key_env : str
        Environment variable holding the key (default ``OPENAI_API_KEY``).
    prompt : str, optional
        The captioning request, default :data:`DEFAULT_PROMPT`.
    temperature : float
        Sampling temperature (0: greedy, the default).
    seed : int
        Seed sent with every request (servers that honour it sample reproducibly) and of
        the retry jitter.
    max_tokens : int
        Longest caption, in tokens.
    image_format : {"png", "jpeg", "webp"}
        How images are encoded into the data URL (PNG: lossless, default).
    jpeg_quality : int
        JPEG quality (1-100) with ``image_format="jpeg"``.
    extra_body : dict, optional
        More fields sent in every chat request (e.g. ``{"top_p": 1}``); they are part of the
        cache namespace.
    max_concurrency, max_retries, timeout, max_response_bytes, backoff, max_backoff
        As in :class:`~capshap.captioners.http.HTTPClient` (``timeout``: seconds one
        attempt may take in all; default 120, a large model on a busy server is slow).
    cache : CaptionCache, optional
        A cache to share; else one is made from ``cache_dir`` (in memory without it).
    proxies, transport, sleep, clock, verify
        Passed to :class:`~capshap.captioners.http.HTTPClient` (tests inject them).

    Attributes ``requests_sent`` (HTTP requests, retries included) and ``cache_hits``.
    """

    error_type = OpenAIError

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api_key_env: str = KEY_ENV,
        prompt: str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        max_tokens: int = 60,
        image_format: str = "png",
        jpeg_quality: int = 95,
        extra_body: Mapping[str, Any] | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        max_response_bytes: int = 16 * _MB,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        cache: CaptionCache | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        proxies: dict[str, str] | None = None,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        if not isinstance(model, str) or not model.strip():
            raise ValueError("no model name: use --captioner openai:MODEL (the name the server serves it under)")
        self.model = model.strip()
        self.base_url = self._resolve_base_url(base_url)
        key = self._resolve_key(api_key, api_key_env)
        self.prompt = DEFAULT_PROMPT if prompt is None else str(prompt)
        if not self.prompt.strip():
            raise ValueError("prompt is empty; give the captioning request, e.g. 'Describe this image in one sentence.'")
        if not float(temperature) >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.seed = int(seed)
        if int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        self.max_tokens = int(max_tokens)
        self.extra_body = dict(extra_body or {})
        reserved = {"model", "messages", "stream"} & set(self.extra_body)
        if reserved:
            raise ValueError(f"extra_body may not set {sorted(reserved)}; they are the captioner's own")
        self._probe: dict[str, Any] | None = None
        super().__init__(
            client_name="openai",
            secret_headers={"Authorization": key} if key is not None else {},
            headers={"Content-Type": "application/json"},
            image_format=image_format,
            jpeg_quality=jpeg_quality,
            cache=cache,
            cache_dir=cache_dir,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            backoff=backoff,
            max_backoff=max_backoff,
            seed=self.seed,
            transport=transport,
            proxies=proxies,
            verify=verify,
            sleep=sleep,
            clock=clock,
        )

    # ----------------------------------------------------------------- configuration

    @staticmethod
    def _resolve_base_url(base_url: str | None) -> str:
        src = "base_url" if base_url is not None else BASE_URL_ENV
        url = base_url if base_url is not None else (os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
        url = str(url).strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"{src} {printable(url, 200)!r} is not an http(s) URL without query; expected the API root, "
                "e.g. http://localhost:8000/v1 (vLLM) or https://api.openai.com/v1"
            )
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise ValueError(f"{src} {printable(url, 200)!r} contains spaces or control characters; copy it again")
        if parts.path.endswith("/chat/completions"):
            raise ValueError(
                f"{src} {printable(url, 200)!r} names the endpoint; give the API root without "
                "/chat/completions, e.g. http://localhost:8000/v1"
            )
        return url

    @staticmethod
    def _resolve_key(api_key: str | None, env: str) -> Secret | None:
        if api_key is not None:
            return Secret(str(api_key), name="API key", source="api_key=", prefix="Bearer ") if str(api_key).strip() else None
        v = os.environ.get(str(env))
        if v is None or not v.strip():
            return None
        return Secret(v, name="API key", source=str(env), prefix="Bearer ")

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def url(self) -> str:
        """The chat completions URL."""
        return f"{self.base_url}/chat/completions"

    @property
    def namespace(self) -> str:
        """Cache namespace: everything besides the pixels that determines the caption."""
        gen = json.dumps({"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens,
                          **self.extra_body}, sort_keys=True, default=str)
        return f"openai|{self.base_url}|{self.model}|{self.prompt!r}|{gen}|{self.format_tag}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # ----------------------------------------------------------------- requests

    def encode(self, image: np.ndarray) -> str:
        """(H, W, 3) uint8 -> a ``data:`` URL of the encoded image (in memory)."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.encode_image(image)).decode('ascii')}"

    def messages(self, data_url: str | None, answer: str | None = None) -> list[dict[str, Any]]:
        """The conversation: the user's image (if any) and prompt, then ``answer`` as the
        assistant's message if given."""
        content: list[dict[str, Any]] = []
        if data_url is not None:
            content.append({"type": "image_url", "image_url": {"url": data_url}})
        content.append({"type": "text", "text": self.prompt})
        msgs: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def _request(self, body: dict[str, Any], label: str) -> Request:
        return Request("POST", self.url, json.dumps(body, separators=(",", ":")).encode("utf-8"), label=label)

    def _check_status(self, resp: Response, index: int | None) -> None:
        """Raise the OpenAIError a non-200 answer means (or NotOpenAICompatible for HTML)."""
        label, status = resp.request.label, resp.status
        where = f"{self.base_url}/chat/completions"
        if status in (401, 403):
            raise OpenAIAuthError(
                f"{label}: {where} refused the request (HTTP {status}: "
                f"{self._client.scrub(_service_message(resp.content))}): the API key is missing or wrong; "
                f"set {KEY_ENV} (or the variable named by api_key_env)",
                image=label, index=index, status=status,
            )
        if status != 200 and _looks_like_html(resp):
            raise NotOpenAICompatible(
                f"{label}: {where} answered HTTP {status} with an HTML page: {self.base_url} is not an "
                "OpenAI-compatible API root; use the URL that ends in /v1 (vLLM: http://HOST:8000/v1)",
                image=label, index=index, status=status,
            )
        if status == 404:
            raise OpenAIRequestError(
                f"{label}: {where} not found (HTTP 404: {self._client.scrub(_service_message(resp.content))}): "
                f"check base_url (the API root, ending in /v1) and the model name {self.model!r}",
                image=label, index=index, status=status,
            )
        if status != 200:
            raise OpenAIRequestError(
                f"{label}: {where} refused the request (HTTP {status}): "
                f"{self._client.scrub(_service_message(resp.content))}",
                image=label, index=index, status=status,
            )
        if _looks_like_html(resp):
            raise NotOpenAICompatible(
                f"{label}: {where} answered with an HTML page, not JSON: {self.base_url} is not an "
                "OpenAI-compatible API root; use the URL that ends in /v1 (vLLM: http://HOST:8000/v1)",
                image=label, index=index, status=status,
            )

    @staticmethod
    def _json(resp: Response) -> dict[str, Any]:
        try:
            j = json.loads(resp.content.decode("utf-8"))
        except ValueError as e:
            excerpt = printable(resp.content[:200].decode("utf-8", "replace"))
            raise RetryAnswer(f"malformed JSON answer ({type(e).__name__}; body starts {excerpt!r})") from None
        if not isinstance(j, dict):
            raise RetryAnswer(f"a JSON {type(j).__name__} where an object was expected")
        return j

    def _parse_caption(self, resp: Response, index: int) -> str:
        self._check_status(resp, index)
        j = self._json(resp)
        try:
            content = j["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            excerpt = printable(resp.content[:200].decode("utf-8", "replace"))
            raise RetryAnswer(f"an answer without choices[0].message.content (body starts {excerpt!r})") from None
        if content is None:
            return ""
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise RetryAnswer(f"choices[0].message.content is a {type(content).__name__}, not text")
        return content.strip()

    @staticmethod
    def _stops_batch(e: BaseException) -> bool:
        return isinstance(e, (OpenAIAuthError, NotOpenAICompatible)) or (
            isinstance(e, OpenAIRequestError) and e.status == 404)

    def _where(self) -> str:
        return self.url

    def _bad_answer_hint(self) -> str:
        return f"; is {self.base_url} an OpenAI-compatible API root?"

    # ----------------------------------------------------------------- captions

    def _request_for(self, image: np.ndarray, label: str, index: int) -> Request:
        body = {"model": self.model, "messages": self.messages(self.encode(image)),
                "temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens,
                **self.extra_body}
        return self._request(body, label)

    # ----------------------------------------------------------------- prompt log-probabilities

    def _plp_body(self, data_url: str | None, answer: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages(data_url, answer),
                                "max_tokens": 1, "temperature": 0.0, "seed": self.seed, "prompt_logprobs": 0}
        if answer is None:
            body.update(add_generation_prompt=True, continue_final_message=False)
        else:
            body.update(add_generation_prompt=False, continue_final_message=True)
        return body

    def _parse_plp(self, resp: Response, index: int | None) -> list[tuple[int, float, str | None]] | None:
        """An answer with prompt log-probabilities -> [(token id, logprob, decoded)] per prompt
        token after the first; None when the answer has none (the server does not support them)."""
        status = resp.status
        if status in (400, 422) and not _looks_like_html(resp):
            msg = _service_message(resp.content)
            if any(w in msg.lower() for w in ("prompt_logprobs", "continue_final_message", "add_generation_prompt",
                                              "unrecognized request argument", "extra inputs")):
                return None  # OpenAI: "Unrecognized request argument supplied: prompt_logprobs"
        self._check_status(resp, index)
        j = self._json(resp)
        plp = j.get("prompt_logprobs")
        if plp is None:
            return None
        if not isinstance(plp, list) or len(plp) < 2:
            raise RetryAnswer(f"prompt_logprobs is not a list of 2 or more entries ({type(plp).__name__})")
        out: list[tuple[int, float, str | None]] = []
        for k, entry in enumerate(plp[1:], start=1):
            if not isinstance(entry, dict) or not entry:
                raise RetryAnswer(f"prompt_logprobs[{k}] is not an object of token ids")
            tid, info = next(iter(entry.items()))  # vLLM puts the prompt token first
            try:
                lp = float(info["logprob"] if isinstance(info, dict) else info)
                tid_i = int(tid)
            except (KeyError, TypeError, ValueError):
                raise RetryAnswer(f"prompt_logprobs[{k}] has no numeric logprob for its token") from None
            if not lp <= 1e-6:  # NaN too
                raise RetryAnswer(f"prompt_logprobs[{k}] has logprob {lp!r}, not <= 0")
            dec = info.get("decoded_token") if isinstance(info, dict) else None
            out.append((tid_i, lp, dec if isinstance(dec, str) else None))
        return out

    def _send_plp(self, data_url: str | None, answer: str | None, label: str) -> list[tuple[int, float, str | None]] | None:
        req = self._request(self._plp_body(data_url, answer), label)
        try:
            return self._client.send(req, lambda r: self._parse_plp(r, None))
        except Exception as e:  # noqa: BLE001 - converted to an OpenAIError naming the URL
            raise self._convert(e, label, None) from None

    def supports_prompt_logprobs(self) -> bool:
        """Whether the server returns prompt log-probabilities (one text-only request, once)."""
        return self._prefix() is not None

    def _prefix(self) -> list[tuple[int, float, str | None]] | None:
        with self._lock:
            probe = self._probe
        if probe is None:
            toks = self._send_plp(None, None, "prompt log-probabilities check")
            probe = {"tokens": toks}
            with self._lock:
                self._probe = probe
            if toks is None:
                logger.info("%s at %s returns no prompt log-probabilities: no own-head scoring (use %s)",
                            self.model, self.base_url, WORKING_SCORERS)
        return probe["tokens"]

    def _unsupported(self) -> PromptLogprobsUnsupported:
        return PromptLogprobsUnsupported(
            f"{self.base_url} ({self.model}) does not return prompt log-probabilities (vLLM's prompt_logprobs "
            f"with continue_final_message), so the captioner's own head cannot score captions there; use "
            f"{WORKING_SCORERS}, or serve the model with vLLM (vllm serve {self.model})"
        )

    def provenance(self) -> dict[str, Any]:
        """What served the captions, for the explanation's record (asked once, then kept):
        ``served_model`` (the model the server loaded for :attr:`model`: ``root`` in
        ``GET /v1/models``, e.g. a hub id or folder) and ``vllm_version`` (``GET /version``
        at the server's root; None where the server is not vLLM or does not say). A failed
        request gives None for that field; it never fails a run."""
        with self._lock:
            known = getattr(self, "_provenance", None)
        if known is not None:
            return dict(known)
        root = self.base_url.removesuffix("/v1")

        def get(url: str, what: str, pick: Callable[[Any], Any]) -> Any:
            def parse(resp: Response) -> Any:
                if resp.status != 200:
                    return None
                try:
                    return pick(json.loads(resp.content.decode("utf-8")))
                except (ValueError, TypeError, KeyError, AttributeError):
                    return None
            try:
                value = self._client.send(Request("GET", url, label=what), parse)
            except Exception as e:  # noqa: BLE001 - provenance is best effort
                logger.info("%s: %s unknown (%s)", url, what, type(e).__name__)
                return None
            return printable(str(value), 200) if value is not None else None

        def served(j: Any) -> Any:
            for m in j["data"]:
                if isinstance(m, dict) and m.get("id") == self.model:
                    return m.get("root") or m.get("id")
            return None

        prov = {
            "served_model": get(f"{self.base_url}/models", "served model", served),
            "vllm_version": get(f"{root}/version", "vLLM version", lambda j: j["version"]),
        }
        with self._lock:
            self._provenance = prov
        return dict(prov)


class OpenAIOwnHeadCaptioner(OpenAICaptioner):
    """An :class:`OpenAICaptioner` on a server with prompt log-probabilities (vLLM): also an
    :class:`~capshap.interfaces.OwnHeadCaptioner`.

    Once the server is known to return prompt log-probabilities, caption requests also ask
    for the generated token ids (vLLM's ``return_token_ids``), and :meth:`written_ids` keeps
    them per caption, so that the own-head scorer can check that the server's tokens of the
    caption text are the tokens the model wrote.
    """

    def _asks_token_ids(self) -> bool:
        with self._lock:
            probe = self._probe
        return probe is not None and probe["tokens"] is not None

    def _request_for(self, image: np.ndarray, label: str, index: int) -> Request:
        req = super()._request_for(image, label, index)
        if not self._asks_token_ids():
            return req
        body = req.content  # a compact JSON object: add one field before its closing brace
        return dataclasses.replace(req, content=body[:-1] + b',"return_token_ids":true}')

    def _parse_caption(self, resp: Response, index: int) -> str:
        text = super()._parse_caption(resp, index)
        try:
            ids = generated_ids(self._json(resp)["choices"][0])
        except (RetryAnswer, KeyError, IndexError, TypeError, AttributeError):
            ids = None
        if ids is not None and text:
            with self._lock:
                written = self.__dict__.setdefault("_written", OrderedDict())
                written[text] = ids
                written.move_to_end(text)
                while len(written) > _WRITTEN_KEPT:
                    written.popitem(last=False)
        return text

    def written_ids(self, caption: str) -> tuple[int, ...] | None:
        """The ids the model generated for ``caption`` (without the end-of-answer token), where
        this captioner asked the server for it and the server said; else None."""
        with self._lock:
            written = self.__dict__.get("_written")
            return None if written is None else written.get(caption.strip())

    def own_scorer(self, caption: str, score: str = "logodds", merge_words: bool = False) -> OpenAIOwnHeadScorer:
        """A scorer bound to ``caption`` that reads the server model's log-probabilities of
        the caption's tokens given each masked image. Raises
        :class:`PromptLogprobsUnsupported` where the server has none."""
        return OpenAIOwnHeadScorer(self, caption, score=score, merge_words=merge_words)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class OpenAIOwnHeadScorer(Scorer):
    """Own-head scores of one caption through a server's prompt log-probabilities.

    ``score(images)``: (N, H, W, 3) uint8 -> (N, T) float64, column t the log-odds (or
    log-prob) of answer token t given the masked image, the prompt and the previous answer
    tokens; one request per image, ``max_concurrency`` in flight. ``tokens``: the decoded
    answer tokens (whole words with ``merge_words``). ``token_ids``: their ids.
    """

    #: requests go through the captioner's client (one pool, one concurrency limit)
    concurrent_calls = True

    def __init__(self, captioner: OpenAICaptioner, caption: str, score: str = "logodds", merge_words: bool = False):
        self.captioner = captioner
        self.caption = caption
        self.score_kind = check_score(score)
        answer = caption.strip()
        if not answer:
            raise ValueError("the caption is empty: there are no tokens to score")
        self.answer = answer
        prefix = captioner._prefix()
        if prefix is None:
            raise captioner._unsupported()
        full = captioner._send_plp(None, answer, "answer tokens")
        if full is None:
            raise captioner._unsupported()
        c = _common_prefix([t[0] for t in prefix], [t[0] for t in full])
        ans = full[c:]
        # whitespace before and after the (stripped) caption is not the caption's: the template's
        # separator, and a newline the server appends (vLLM's PaliGemma)
        self._extra = trailing_extra([t[2] for t in ans])
        ans = ans[: len(ans) - self._extra]
        self._check_written(captioner, answer, ans)  # the separator included, as the model writes it
        ans = ans[leading_extra([t[2] for t in ans]):]
        if not ans:
            raise OpenAIError(
                f"{captioner.base_url} gave caption {printable(answer, 100)!r} no tokens after the prompt "
                "(the chat template dropped the continued assistant message?)"
            )
        self.token_ids = [t[0] for t in ans]
        pieces = [t[2] if t[2] is not None else f"<{t[0]}>" for t in ans]
        self.token_texts = [p.strip() or p for p in pieces]
        self.merge_words = bool(merge_words)
        if self.merge_words:
            if any(t[2] is None for t in ans):
                raise OpenAIError(f"{captioner.base_url} sends no decoded_token texts: words cannot be formed; "
                                  "use merge_words=False (--tokens pieces)")
            fixed = word_pieces(answer, pieces)  # a U+FFFD's tokens decode to "": give the text back
            if fixed is None:
                raise OpenAIError(
                    f"{captioner.base_url}: the decoded_token texts of caption {printable(answer, 100)!r} do not "
                    f"spell it ({printable(''.join(pieces), 100)!r}): words cannot be formed; use "
                    "merge_words=False (--tokens pieces)")
            pieces = fixed
            starts = [i for i, p in enumerate(pieces) if i == 0 or p[:1].isspace()]
            self._starts: np.ndarray | None = np.asarray(starts, dtype=np.intp)
            bounds = starts + [len(pieces)]
            self.tokens = ["".join(pieces[a:b]).strip() or "".join(pieces[a:b]) for a, b in itertools.pairwise(bounds)]
        else:
            self._starts = None
            self.tokens = list(self.token_texts)

    @staticmethod
    def _check_written(captioner: OpenAICaptioner, answer: str, ans: list[tuple[int, float, str | None]]) -> None:
        """Raise :class:`CaptionTokensDiffer` where the model wrote ``answer`` with other ids
        than the server's tokens of its text; warn where that cannot be checked and the
        text shows it likely (a U+FFFD)."""
        written = captioner.written_ids(answer) if isinstance(captioner, OpenAIOwnHeadCaptioner) else None
        ids = [t[0] for t in ans]
        if written is not None and list(written) != ids:
            raise CaptionTokensDiffer(
                f"{captioner.base_url}: " + token_difference(answer, ids, [t[2] for t in ans], written))
        if written is None and "\ufffd" in answer:
            logger.warning(
                "caption %r holds U+FFFD and the ids the model wrote it with are not known here (a cached or "
                "given caption): the server scores the tokens of the text, which may not be the model's",
                printable(answer, 80))

    def _parse(self, resp: Response) -> np.ndarray:
        cap = self.captioner
        toks = cap._parse_plp(resp, None)
        if toks is None:
            raise cap._unsupported()
        k = len(self.token_ids)
        toks = toks[: len(toks) - self._extra]
        tail = toks[-k:] if len(toks) >= k else []
        if [t[0] for t in tail] != self.token_ids:
            raise OpenAIError(
                f"{resp.request.label}: the last {k} prompt tokens {[t[0] for t in tail]} are not the caption's "
                f"tokens {self.token_ids}: the server tokenizes the caption differently next to an image",
                status=resp.status,
            )
        return np.array([t[1] for t in tail], dtype=np.float64)

    def score(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, 3) uint8 -> (N, T) float64 scores."""
        cap = self.captioner
        n = len(images)
        if n == 0:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        reqs = []
        for i in range(n):
            arr = check_rgb(images[i], f"image {i}")
            reqs.append(cap._request(cap._plp_body(cap.encode(arr), self.answer), f"masked image {i}"))
        out = cap._client.map(reqs, self._parse, stop=lambda e: isinstance(e, OpenAIError) and cap._stops_batch(e))
        for i, r in enumerate(out):
            if isinstance(r, BaseException):
                raise cap._convert(r, reqs[i].label, i)
        lp = np.minimum(np.stack(out), 0.0)
        if self.score_kind == "logprob":
            s = lp
        else:
            s = lp - log1mexp(lp)
        s = np.clip(s, -SCORE_CAP, SCORE_CAP)
        if self._starts is not None:
            s = np.add.reduceat(s, self._starts, axis=1)
        return s


def open_captioner(model: str, own_head: str = "auto", **kw: Any) -> OpenAICaptioner:
    """An OpenAI-compatible captioner; ``own_head``: "auto" (one request checks whether the
    server returns prompt log-probabilities: an :class:`OpenAIOwnHeadCaptioner` if it does),
    "yes" (own-head without the check; scoring fails clearly on a server without them) or
    "no" (black-box only). ``kw``: :class:`OpenAICaptioner`'s parameters."""
    mode = str(own_head).strip().lower()
    if mode in ("yes", "true", "1", "on"):
        return OpenAIOwnHeadCaptioner(model, **kw)
    if mode in ("no", "false", "0", "off"):
        return OpenAICaptioner(model, **kw)
    if mode != "auto":
        raise ValueError(f"own_head={own_head!r}; use 'auto', 'yes' or 'no'")
    cap = OpenAIOwnHeadCaptioner(model, **kw)
    try:
        ok = cap.supports_prompt_logprobs()
    except BaseException:
        cap.close()
        raise
    if ok:
        return cap
    plain = OpenAICaptioner.__new__(OpenAICaptioner)  # the same configuration and client, no own head
    plain.__dict__.update(cap.__dict__)
    return plain
