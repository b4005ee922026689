"""Azure AI Vision as a black-box captioner, over its REST API.

:class:`AzureCaptioner` sends each image to Azure AI Vision and returns its caption. Two
APIs are spoken:

- ``api="v3.2"`` (or ``"v3.1"``), as in the SHAP notebook:
  ``POST {endpoint}/vision/v3.2/analyze?visualFeatures=Description&language=en``; the
  caption is ``description.captions[0].text`` (an empty list gives the caption ``""``).
- ``api="v4"`` (Image Analysis 4.0, GA version 2023-10-01):
  ``POST {endpoint}/computervision/imageanalysis:analyze?api-version=2023-10-01&features=caption``
  (plus ``gender-neutral-caption=true`` with ``gender_neutral=True``); the caption is
  ``captionResult.text``. Captions of 4.0 exist only in some Azure regions.

Both take the image bytes as the body (``Content-Type: application/octet-stream``) and
the key in the ``Ocp-Apim-Subscription-Key`` header. The key is never logged, and no
error message or ``repr`` contains it.

Images (uint8 (H, W, 3) arrays) are encoded in memory, never written to disk: as PNG by
default, which is lossless, so the service sees exactly the masked pixels the explainer
made and the cache key (the pixels) matches what was captioned. ``image_format="jpeg"``
(quality 95, no chroma subsampling) makes uploads 3-10x smaller where bandwidth or the
4 MB limit of v3.x matters. Before anything is sent, each image is checked against the
service's limits (see :data:`LIMITS`) and a failing one gets an :class:`ImageLimitError`
that names it.

Requests go through one :class:`capshap.captioners.http.HTTPClient` per captioner (httpx):
``max_concurrency`` in flight over all callers, captions back in input order. HTTP 429,
408 and 5xx answers, time-outs, network errors and (at most twice) malformed JSON are
retried with exponential backoff plus a little jitter from a private seeded RNG, honouring
``Retry-After`` (and Azure's ``retry-after-ms``), capped at ``max_backoff``; long waits are
logged as warnings and Ctrl-C stops them within a quarter second. Every attempt must
finish within ``timeout`` seconds in all (a server that trickles bytes is cut off) and
answers larger than ``max_response_bytes`` are refused. Redirects are not followed.
401/403 (wrong key or endpoint) and 404 (wrong endpoint or API not in this region) stop
the whole batch at once without retrying; 400 and other client errors fail their image
with the service's own message.

Captions are cached by image content (see :class:`capshap.captioners.cache.CaptionCache`), in
memory and optionally on disk (``cache_dir=``), under a namespace that holds everything
besides the pixels that determines the caption (endpoint, API and its version, features,
language, gender-neutral flag, upload encoding), so a cache filled against one server
never answers for another. Re-running or resuming costs no calls for images already
captioned, and identical images within a batch are sent once.

Failures are per image: :meth:`AzureCaptioner.caption_each` returns a caption or an
exception for every image; :meth:`AzureCaptioner.caption` waits until every image is done
(captions of the others are cached) and only then raises the first failure.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np

from capshap.captioners.cache import CaptionCache
from capshap.captioners.cloud import IMAGE_ENCODERS, CloudCaptioner, ServiceError
from capshap.captioners.http import (
    Request,
    Response,
    RetryAnswer,
    Secret,
)
from capshap.interfaces import ImageLimits
from capshap.text import printable

__all__ = [
    "AzureCaptioner",
    "AzureError",
    "AzureAuthError",
    "AzureRequestError",
    "ImageLimitError",
    "ApiLimits",
    "LIMITS",
]

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "AZURE_VISION_ENDPOINT"
KEY_ENV = "AZURE_VISION_KEY"
V4_API_VERSION = "2023-10-01"

_MB = 1024 * 1024


@dataclass(frozen=True)
class ApiLimits:
    """What one Azure API accepts.

    formats: container formats accepted (upper case); max_bytes: largest accepted body in
    bytes (inclusive); min_side / max_side: smallest / largest accepted width and height in
    pixels (inclusive).
    """

    formats: frozenset[str]
    max_bytes: int
    min_side: int = 50
    max_side: int = 16000


_V3_LIMITS = ApiLimits(frozenset({"JPEG", "PNG", "GIF", "BMP"}), 4 * _MB - 1)
#: Service limits per API, from the Azure AI Vision docs: v3.x takes JPEG, PNG, GIF, BMP
#: under 4 MB; 4.0 also WEBP, ICO, TIFF, MPO, up to 20 MB (20971520 bytes); both need
#: width and height of at least 50 and at most 16000 pixels.
LIMITS: dict[str, ApiLimits] = {
    "v3.2": _V3_LIMITS,
    "v3.1": _V3_LIMITS,
    "v4": ApiLimits(
        frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF", "MPO"}), 20 * _MB
    ),
}

_API_ALIASES = {
    "v3.2": "v3.2", "3.2": "v3.2",
    "v3.1": "v3.1", "3.1": "v3.1",
    "v4": "v4", "v4.0": "v4", "4.0": "v4", "4": "v4",
}

class AzureError(ServiceError):
    """A request to Azure AI Vision failed (``image``, ``index``, ``status`` as in
    :class:`~capshap.captioners.cloud.ServiceError`)."""


class AzureAuthError(AzureError):
    """401/403: the key or the endpoint is wrong. Not retried; stops the whole batch."""


class AzureRequestError(AzureError):
    """The service rejected a request (400 and other 4xx): not retried."""


class ImageLimitError(AzureError, ValueError):
    """An image breaks the service's limits (size, dimensions); it was not sent."""


def _normalise_api(api: str) -> str:
    a = str(api).strip().lower()
    if a not in _API_ALIASES:
        raise ValueError(
            f"unknown Azure API {api!r}; use 'v3.2', 'v3.1' or 'v4' (Image Analysis 4.0)"
        )
    return _API_ALIASES[a]


def _service_message(body: bytes) -> str:
    """The error code and message from an Azure error body (v3.x or 4.0 shape), else its text.

    Control characters are escaped and the text is cut to 300 characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        j = json.loads(text)
    except ValueError:
        return printable(text, 300) or "(empty body)"
    if not isinstance(j, dict):
        return printable(text, 300)
    err = j.get("error") if isinstance(j.get("error"), dict) else j
    inner = err.get("innererror") if isinstance(err.get("innererror"), dict) else {}
    code = inner.get("code") or err.get("code")
    message = inner.get("message") or err.get("message") or text
    return printable(f"{code}: {message}" if code else str(message), 300)


class AzureCaptioner(CloudCaptioner):
    """Captions images with Azure AI Vision (v3.2 / v3.1 Analyze, or Image Analysis 4.0).

    Parameters
    ----------
    endpoint : str, optional
        The resource endpoint, e.g. ``https://<name>.cognitiveservices.azure.com``;
        defaults to the environment variable ``AZURE_VISION_ENDPOINT``.
    key : str, optional
        The resource key; defaults to ``AZURE_VISION_KEY``. Never logged or shown; one
        with a control character (a line break) is refused with an error that does not
        show it.
    api : {"v3.2", "v3.1", "v4"}
        Which REST API to call.
    language : str
        Caption language (``language=`` query parameter); 4.0 captions are English only.
    gender_neutral : bool
        4.0 only: ask for gender-neutral captions ("a person" rather than "a man").
    image_format : {"png", "jpeg", "bmp", "webp"}
        How arrays are encoded for upload (in memory). PNG (default) is lossless; JPEG
        uses ``jpeg_quality`` and 4:4:4 chroma. WEBP (lossless) only for ``api="v4"``.
    max_concurrency : int
        Requests in flight at once (over all threads using this captioner).
    max_retries : int
        Retries per image after the first try, for 429, 408, 5xx, time-outs and network
        errors (malformed JSON: at most 2).
    timeout : float
        Seconds one attempt may take in all: connecting, uploading and reading the answer.
    max_response_bytes : int
        Largest answer read, in bytes (Azure's answers are a few hundred bytes).
    backoff, max_backoff : float
        Retry ``k`` (0-based) waits ``min(max_backoff, backoff * 2**k)`` seconds, or the
        service's ``Retry-After`` (capped at ``max_backoff``), times 1 + U(0, 0.1) jitter.
    seed : int
        Seed of the private jitter RNG.
    cache : CaptionCache, optional
        A cache to share with other captioners; else one is made from ``cache_dir``.
    cache_dir : str or Path, optional
        Folder for an on-disk caption cache (ignored when ``cache`` is given).
    proxies : dict, optional
        Proxy map, e.g. ``{"https": "http://proxy:3128"}``; None uses the environment
        (``https_proxy``, ``no_proxy``), ``{}`` uses no proxy.
    transport, sleep, clock
        Passed to :class:`~capshap.captioners.http.HTTPClient` (tests inject them).

    Attributes ``requests_sent`` (HTTP requests made, retries included), ``cache_hits``
    (images answered from the cache) and ``limits`` (an
    :class:`~capshap.interfaces.ImageLimits`, checked when images are loaded).
    """

    error_type = AzureError
    image_formats = ("png", "jpeg", "bmp", "webp")

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        api: str = "v3.2",
        *,
        language: str = "en",
        gender_neutral: bool = False,
        image_format: str = "png",
        jpeg_quality: int = 95,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 30.0,
        max_response_bytes: int = 1 * _MB,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        seed: int = 0,
        cache: CaptionCache | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        proxies: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.api = _normalise_api(api)
        self.endpoint = self._resolve_endpoint(endpoint)
        self._key = self._resolve_key(key)
        self.language = str(language)
        self.gender_neutral = bool(gender_neutral)
        if self.gender_neutral and self.api != "v4":
            raise ValueError(
                f"gender_neutral=True needs Image Analysis 4.0; got api={self.api!r}: "
                "use api='v4' or leave gender_neutral off"
            )
        lim = LIMITS[self.api]
        self.limits = ImageLimits(min_side=lim.min_side, max_side=lim.max_side, max_bytes=lim.max_bytes)
        self._url = self._build_url()
        super().__init__(
            client_name=f"azure-{self.api}",
            secret_headers={"Ocp-Apim-Subscription-Key": self._key},
            headers={"Content-Type": "application/octet-stream"},
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
            seed=seed,
            transport=transport,
            proxies=proxies,
            sleep=sleep,
            clock=clock,
        )

    def _refuse_format(self, given: str, image_format: str) -> str | None:
        accepted = LIMITS[self.api].formats
        if IMAGE_ENCODERS[image_format][0] in accepted:
            return None
        return (
            f"image_format={given!r} is not accepted by Azure {self.api} "
            f"(it takes {', '.join(sorted(accepted))}); use 'png' or 'jpeg'"
        )

    # ----------------------------------------------------------------- configuration

    @staticmethod
    def _resolve_endpoint(endpoint: str | None) -> str:
        ep = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV)
        if not ep or not ep.strip():
            raise ValueError(
                "no Azure AI Vision endpoint: pass endpoint='https://<resource>."
                f"cognitiveservices.azure.com' or set the environment variable {ENDPOINT_ENV}"
            )
        ep = ep.strip().rstrip("/")
        parts = urllib.parse.urlsplit(ep)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"Azure endpoint {printable(ep, 200)!r} is not an http(s) URL without query; expected "
                f"something like 'https://<resource>.cognitiveservices.azure.com' (check {ENDPOINT_ENV})"
            )
        if any(ord(c) < 33 or ord(c) == 127 for c in ep):
            raise ValueError(
                f"Azure endpoint {printable(ep, 200)!r} contains spaces or control characters; "
                f"copy it again (check {ENDPOINT_ENV})"
            )
        return ep

    @staticmethod
    def _resolve_key(key: str | None) -> Secret:
        source = "key=" if key is not None else KEY_ENV
        k = key if key is not None else os.environ.get(KEY_ENV)
        if k is None or not str(k).strip():
            raise ValueError(
                f"no Azure AI Vision key: pass key=... or set the environment variable {KEY_ENV}"
            )
        return Secret(str(k), name="Azure AI Vision key", source=source)

    def _build_url(self) -> str:
        if self.api == "v4":
            query = {"api-version": V4_API_VERSION, "features": "caption", "language": self.language}
            if self.gender_neutral:
                query["gender-neutral-caption"] = "true"
            path = "/computervision/imageanalysis:analyze"
        else:
            query = {"visualFeatures": "Description", "language": self.language}
            path = f"/vision/{self.api}/analyze"
        return f"{self.endpoint}{path}?{urllib.parse.urlencode(query)}"

    @property
    def name(self) -> str:
        return f"azure-{self.api}"

    @property
    def namespace(self) -> str:
        """Cache namespace: everything besides the pixels that determines the caption.

        The full request URL (endpoint, API and version, features, language, gender-neutral
        flag) and the upload encoding."""
        return f"azure|{self._url}|{self.format_tag}"

    def __repr__(self) -> str:
        return f"AzureCaptioner(endpoint={self.endpoint!r}, api={self.api!r})"

    # ----------------------------------------------------------------- public API

    def _request_for(self, image: np.ndarray, label: str, index: int) -> Request:
        """The request of one image (ImageLimitError, not sent, when it breaks the limits)."""
        return Request("POST", self._url, self._encode(image, label, index), label=label)

    def _parse_caption(self, resp: Response, index: int) -> str:
        return self._parse(resp, index)

    # ----------------------------------------------------------------- one image

    def _encode(self, image: np.ndarray, label: str, index: int) -> bytes:
        """Check the limits and encode ``image`` (H, W, 3) uint8 in memory -> file bytes."""
        lim = LIMITS[self.api]
        h, w = image.shape[:2]
        if min(h, w) < lim.min_side or max(h, w) > lim.max_side:
            raise ImageLimitError(
                f"{label} is {w}x{h} px; Azure {self.api} takes images from "
                f"{lim.min_side}x{lim.min_side} to {lim.max_side}x{lim.max_side} px: "
                "resize it (or mask a larger image) before captioning",
                image=label, index=index,
            )
        fmt = IMAGE_ENCODERS[self.image_format][0]
        data = self.encode_image(image)
        if len(data) > lim.max_bytes:
            hint = "use image_format='jpeg', " if self.image_format != "jpeg" else ""
            raise ImageLimitError(
                f"{label} encodes to {len(data) / _MB:.2f} MB as {fmt}; Azure {self.api} "
                f"takes at most {lim.max_bytes / _MB:.2f} MB: {hint}fit the image to a "
                "smaller size" + (", or use api='v4' (20 MB)" if self.api != "v4" else ""),
                image=label, index=index,
            )
        return data

    def _parse(self, resp: Response, index: int) -> str:
        """A final (non-retryable) answer -> the caption; raises AzureError or RetryAnswer."""
        label, status = resp.request.label, resp.status
        if status in (401, 403):
            raise AzureAuthError(
                f"{label}: Azure {self.api} refused the request (HTTP {status}: "
                f"{self._client.scrub(_service_message(resp.content))}): key or endpoint wrong: "
                f"check {KEY_ENV} / {ENDPOINT_ENV} (endpoint {self.endpoint!r})",
                image=label, index=index, status=status,
            )
        if status == 404:
            raise AzureRequestError(
                f"{label}: {self._url.split('?')[0]} not found (HTTP 404: "
                f"{self._client.scrub(_service_message(resp.content))}): check {ENDPOINT_ENV} and api="
                f"{self.api!r} (Image Analysis 4.0 captions exist only in some regions)",
                image=label, index=index, status=status,
            )
        if status != 200:
            raise AzureRequestError(
                f"{label}: Azure {self.api} rejected the image (HTTP {status}): "
                f"{self._client.scrub(_service_message(resp.content))}",
                image=label, index=index, status=status,
            )
        body = resp.content
        try:
            j = json.loads(body.decode("utf-8"))
            if self.api == "v4":
                text = j["captionResult"]["text"]
            else:
                caps = j["description"]["captions"]
                if not isinstance(caps, list):
                    raise TypeError("captions is not a list")
                text = caps[0]["text"] if caps else ""
            if not isinstance(text, str):
                raise TypeError("caption text is not a string")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            excerpt = printable(body[:200].decode("utf-8", "replace"))
            raise RetryAnswer(f"malformed JSON answer ({type(e).__name__}: {e}; body starts {excerpt!r})") from None
        return text

    @staticmethod
    def _stops_batch(e: BaseException) -> bool:
        return isinstance(e, AzureAuthError) or (isinstance(e, AzureRequestError) and e.status == 404)

    def _where(self) -> str:
        return f"Azure {self.api}"
