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

Requests run concurrently (``max_concurrency`` threads); captions come back in input
order. HTTP 429, 408 and 5xx answers, time-outs, network errors and (at most twice)
malformed JSON are retried with exponential backoff plus a little jitter from a private
seeded RNG, honouring ``Retry-After`` (and Azure's ``retry-after-ms``). 401/403 (wrong key
or endpoint) and 404 (wrong endpoint or API not in this region) stop the whole batch at
once without retrying; 400 and other client errors fail their image with the service's
own message.

Captions are cached by image content (see :class:`capshap.captioners.cache.CaptionCache`), in
memory and optionally on disk (``cache_dir=``), so re-running or resuming costs no calls
for images already captioned, and identical images within a batch are sent once.

Failures are per image: :meth:`AzureCaptioner.caption_each` returns a caption or an
exception for every image; :meth:`AzureCaptioner.caption` waits until every image is done
(captions of the others are cached) and only then raises the first failure.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from capshap.captioners.cache import CaptionCache, cache_key
from capshap.interfaces import Captioner

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
_MAX_MALFORMED_RETRIES = 2


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

# image_format option -> (PIL format, save options)
_ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "png": ("PNG", {}),
    "jpeg": ("JPEG", {"subsampling": 0}),
    "bmp": ("BMP", {}),
    "webp": ("WEBP", {"lossless": True}),
}


class AzureError(RuntimeError):
    """A request to Azure AI Vision failed.

    Attributes: ``image`` (the image's name in messages, e.g. ``"image 3"``), ``index``
    (its position in the batch), ``status`` (the last HTTP status, or None if there was
    no answer).
    """

    def __init__(
        self, message: str, *, image: str | None = None, index: int | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.image = image
        self.index = index
        self.status = status


class AzureAuthError(AzureError):
    """401/403: the key or the endpoint is wrong. Not retried; stops the whole batch."""


class AzureRequestError(AzureError):
    """The service rejected a request (400 and other 4xx): not retried."""


class ImageLimitError(AzureError, ValueError):
    """An image breaks the service's limits (size, dimensions); it was not sent."""


class _Malformed(Exception):
    pass


class _Secret:
    """Holds the key so that repr(), vars() dumps and tracebacks show only '***'."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self):  # never pickle the key along with a captioner
        raise TypeError("the Azure key cannot be pickled; pass it again (or set AZURE_VISION_KEY)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: a redirected POST would drop the body or send the key on."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def _normalise_api(api: str) -> str:
    a = str(api).strip().lower()
    if a not in _API_ALIASES:
        raise ValueError(
            f"unknown Azure API {api!r}; use 'v3.2', 'v3.1' or 'v4' (Image Analysis 4.0)"
        )
    return _API_ALIASES[a]


def _service_message(body: bytes) -> str:
    """The error code and message from an Azure error body (v3.x or 4.0 shape), else its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        j = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if not isinstance(j, dict):
        return text[:300]
    err = j.get("error") if isinstance(j.get("error"), dict) else j
    inner = err.get("innererror") if isinstance(err.get("innererror"), dict) else {}
    code = inner.get("code") or err.get("code")
    message = inner.get("message") or err.get("message") or text[:300]
    return f"{code}: {message}" if code else str(message)


def _retry_after(headers: Any) -> float | None:
    """Seconds the service asks to wait, from retry-after-ms or Retry-After, else None."""
    if headers is None:
        return None
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        v = headers.get(name)
        if v is not None:
            try:
                return max(0.0, float(v) / 1000.0)
            except ValueError:
                pass
    v = headers.get("Retry-After")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, TimeoutError)


class AzureCaptioner(Captioner):
    """Captions images with Azure AI Vision (v3.2 / v3.1 Analyze, or Image Analysis 4.0).

    Parameters
    ----------
    endpoint : str, optional
        The resource endpoint, e.g. ``https://<name>.cognitiveservices.azure.com``;
        defaults to the environment variable ``AZURE_VISION_ENDPOINT``.
    key : str, optional
        The resource key; defaults to ``AZURE_VISION_KEY``. Never logged or shown.
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
        Requests in flight at once (threads).
    max_retries : int
        Retries per image after the first try, for 429, 408, 5xx, time-outs and network
        errors (malformed JSON: at most 2).
    timeout : float
        Seconds to wait for the connection and for each read of an answer.
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
        urllib proxy map, e.g. ``{"https": "http://proxy:3128"}``; None uses the
        environment (``https_proxy``, ``no_proxy``), ``{}`` uses no proxy.

    Attributes ``requests_sent`` (HTTP requests made, retries included) and ``cache_hits``
    (images answered from the cache) count what the captioner did.
    """

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
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        seed: int = 0,
        cache: CaptionCache | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        proxies: dict[str, str] | None = None,
    ):
        self.api = _normalise_api(api)
        self.endpoint = self._resolve_endpoint(endpoint)
        self._key = _Secret(self._resolve_key(key))
        self.language = str(language)
        self.gender_neutral = bool(gender_neutral)
        if self.gender_neutral and self.api != "v4":
            raise ValueError(
                f"gender_neutral=True needs Image Analysis 4.0; got api={self.api!r}: "
                "use api='v4' or leave gender_neutral off"
            )
        fmt = str(image_format).strip().lower()
        if fmt == "jpg":
            fmt = "jpeg"
        if fmt not in _ENCODERS:
            raise ValueError(
                f"unknown image_format {image_format!r}; use one of {sorted(_ENCODERS)}"
            )
        accepted = LIMITS[self.api].formats
        if _ENCODERS[fmt][0] not in accepted:
            raise ValueError(
                f"image_format={image_format!r} is not accepted by Azure {self.api} "
                f"(it takes {', '.join(sorted(accepted))}); use 'png' or 'jpeg'"
            )
        self.image_format = fmt
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
        self.jpeg_quality = int(jpeg_quality)
        if int(max_concurrency) < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if float(backoff) < 0 or float(max_backoff) < 0:
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff!r}, {max_backoff!r}")
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.cache = cache if cache is not None else CaptionCache(cache_dir)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.cache_hits = 0
        proxy = urllib.request.ProxyHandler(proxies) if proxies is not None else urllib.request.ProxyHandler()
        self._opener = urllib.request.build_opener(proxy, _NoRedirect())
        self._url = self._build_url()

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
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"Azure endpoint {ep!r} is not an http(s) URL; expected something like "
                f"'https://<resource>.cognitiveservices.azure.com' (check {ENDPOINT_ENV})"
            )
        return ep

    @staticmethod
    def _resolve_key(key: str | None) -> str:
        k = key if key is not None else os.environ.get(KEY_ENV)
        if not k or not str(k).strip():
            raise ValueError(
                f"no Azure AI Vision key: pass key=... or set the environment variable {KEY_ENV}"
            )
        return str(k).strip()

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
        """Cache namespace: everything besides the pixels that changes the caption."""
        fmt = self.image_format + (str(self.jpeg_quality) if self.image_format == "jpeg" else "")
        gn = "/gender-neutral" if self.gender_neutral else ""
        return f"azure/{self.api}/{self.language}{gn}/{fmt}"

    def __repr__(self) -> str:
        return f"AzureCaptioner(endpoint={self.endpoint!r}, api={self.api!r})"

    # ----------------------------------------------------------------- public API

    def caption(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[str]:
        """Caption a batch: N uint8 (H, W, 3) arrays -> N strings, in input order.

        Every image is attempted before anything is raised; then the first failure (by
        index) is raised, the others' captions being cached so a retry only costs the
        failed images. Use :meth:`caption_each` to get per-image errors instead.
        """
        results = self.caption_each(images, names)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            first = failed[0]
            if len(failed) > 1 and hasattr(first, "add_note"):
                first.add_note(
                    f"{len(failed)} of {len(results)} images failed; the captions of the "
                    "others are cached, so retrying costs only the failed ones"
                )
            raise first
        return results  # type: ignore[return-value]

    def caption_each(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[str | Exception]:
        """Caption a batch, returning a caption or an exception for every image, in order.

        ``images``: N uint8 (H, W, 3) arrays; ``names``: optional N labels used in error
        messages (default ``"image <i>"``). Exceptions are :class:`AzureError` subclasses
        (``ImageLimitError`` for images that break the limits and were not sent) or
        ``TypeError``/``ValueError`` for arrays that are not uint8 (H, W, 3).
        Successful captions are cached; cached images cost no request.
        """
        n = len(images)
        if names is not None and len(names) != n:
            raise ValueError(f"got {len(names)} names for {n} images; pass one name per image")
        labels = [f"image {i}" if names is None else f"image {i} ({names[i]!r})" for i in range(n)]
        results: list[str | Exception | None] = [None] * n
        namespace = self.namespace
        todo: dict[str, list[int]] = {}
        arrays: dict[str, np.ndarray] = {}
        for i in range(n):
            try:
                arr = self._check_array(images[i], labels[i])
            except (TypeError, ValueError) as e:
                results[i] = e
                continue
            key = cache_key(namespace, arr)
            if key in todo:
                todo[key].append(i)
                continue
            hit = self.cache.get_key(namespace, key)
            if hit is not None:
                results[i] = hit
                with self._lock:
                    self.cache_hits += 1
                continue
            todo[key] = [i]
            arrays[key] = arr
        if todo:
            logger.debug(
                "%s: %d images, %d to send (%d cached or duplicate)",
                self.name, n, len(todo), n - sum(len(v) for v in todo.values()),
            )
            abort: dict[str, AzureError] = {}
            workers = min(self.max_concurrency, len(todo))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capshap-azure") as pool:
                futures = {
                    key: pool.submit(self._caption_one, arrays[key], labels[idx[0]], idx[0], abort)
                    for key, idx in todo.items()
                }
                for key, fut in futures.items():
                    idx = todo[key]
                    try:
                        text = fut.result()
                    except Exception as e:  # noqa: BLE001 - returned per image
                        for i in idx:
                            results[i] = e
                        continue
                    self.cache.put_key(namespace, key, text, shape=arrays[key].shape)
                    for i in idx:
                        results[i] = text
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------- one image

    @staticmethod
    def _check_array(image: Any, label: str) -> np.ndarray:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise TypeError(f"{label} has dtype {arr.dtype}; expected uint8 RGB (H, W, 3)")
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{label} has shape {arr.shape}; expected uint8 RGB (H, W, 3)")
        return np.ascontiguousarray(arr)

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
        fmt, opts = _ENCODERS[self.image_format]
        if fmt == "JPEG":
            opts = {**opts, "quality": self.jpeg_quality}
        buf = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buf, format=fmt, **opts)
        data = buf.getvalue()
        if len(data) > lim.max_bytes:
            hint = "use image_format='jpeg', " if self.image_format != "jpeg" else ""
            raise ImageLimitError(
                f"{label} encodes to {len(data) / _MB:.2f} MB as {fmt}; Azure {self.api} "
                f"takes at most {lim.max_bytes / _MB:.2f} MB: {hint}fit the image to a "
                "smaller size" + (", or use api='v4' (20 MB)" if self.api != "v4" else ""),
                image=label, index=index,
            )
        return data

    def _post(self, data: bytes) -> tuple[int, Any, bytes]:
        """One POST -> (status, headers, body). HTTP errors are answers, not exceptions."""
        req = urllib.request.Request(
            self._url,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/octet-stream",
                "Ocp-Apim-Subscription-Key": self._key.reveal(),
                "User-Agent": "capshap",
            },
        )
        with self._lock:
            self.requests_sent += 1
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except OSError:
                body = b""
            finally:
                e.close()
            return e.code, e.headers, body

    def _parse(self, body: bytes) -> str:
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
            excerpt = body[:200].decode("utf-8", "replace")
            raise _Malformed(f"{type(e).__name__}: {e}; body starts {excerpt!r}") from None
        return text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = retry_after if retry_after is not None else self.backoff * (2.0 ** attempt)
        with self._lock:
            u = self._rng.random()
        return min(self.max_backoff, base) * (1.0 + 0.1 * u)

    def _caption_one(
        self, image: np.ndarray, label: str, index: int, abort: dict[str, AzureError]
    ) -> str:
        """Caption one checked image, retrying transient failures; raises AzureError."""
        if abort:
            raise self._aborted(abort, label, index)
        data = self._encode(image, label, index)
        last, last_status, malformed = "nothing", None, 0
        for attempt in range(self.max_retries + 1):
            if abort:
                raise self._aborted(abort, label, index)
            retry_after = None
            t0 = time.monotonic()
            try:
                status, headers, body = self._post(data)
            except Exception as e:  # noqa: BLE001 - classified below
                if _is_timeout(e):
                    last, last_status = f"no answer within timeout={self.timeout:g} s", None
                elif isinstance(e, (OSError, urllib.error.URLError)) or type(e).__module__ == "http.client":
                    reason = getattr(e, "reason", e)
                    last, last_status = f"network error ({type(e).__name__}: {reason})", None
                else:
                    raise
                logger.debug("%s: %s: %s (try %d)", self.name, label, last, attempt + 1)
            else:
                logger.debug(
                    "%s: %s: POST %s -> %d in %.2f s (%d bytes sent, try %d)",
                    self.name, label, self._url, status, time.monotonic() - t0, len(data), attempt + 1,
                )
                last_status = status
                if status == 200:
                    try:
                        return self._parse(body)
                    except _Malformed as e:
                        malformed += 1
                        last = f"malformed JSON answer ({e})"
                        if malformed > _MAX_MALFORMED_RETRIES:
                            raise AzureError(
                                f"{label}: Azure {self.api} answered with malformed JSON "
                                f"{malformed} times; last: {e}",
                                image=label, index=index, status=status,
                            ) from None
                elif status in (401, 403):
                    err = AzureAuthError(
                        f"{label}: Azure {self.api} refused the request (HTTP {status}: "
                        f"{_service_message(body)}): key or endpoint wrong: check "
                        f"{KEY_ENV} / {ENDPOINT_ENV} (endpoint {self.endpoint!r})",
                        image=label, index=index, status=status,
                    )
                    abort.setdefault("error", err)
                    raise err
                elif status == 404:
                    err = AzureRequestError(
                        f"{label}: {self._url.split('?')[0]} not found (HTTP 404: "
                        f"{_service_message(body)}): check {ENDPOINT_ENV} and api="
                        f"{self.api!r} (Image Analysis 4.0 captions exist only in some regions)",
                        image=label, index=index, status=status,
                    )
                    abort.setdefault("error", err)
                    raise err
                elif status == 429 or status == 408 or status >= 500:
                    last = f"HTTP {status}: {_service_message(body)}"
                    retry_after = _retry_after(headers)
                else:
                    raise AzureRequestError(
                        f"{label}: Azure {self.api} rejected the image (HTTP {status}): "
                        f"{_service_message(body)}",
                        image=label, index=index, status=status,
                    )
            if attempt < self.max_retries:
                wait = self._delay(attempt, retry_after)
                logger.debug("%s: %s: retrying in %.2f s after %s", self.name, label, wait, last)
                time.sleep(wait)
        raise AzureError(
            f"{label}: Azure {self.api} failed after {self.max_retries + 1} tries; last: {last}",
            image=label, index=index, status=last_status,
        )

    @staticmethod
    def _aborted(abort: dict[str, AzureError], label: str, index: int) -> AzureError:
        first = abort["error"]
        return type(first)(
            f"{label}: not sent, an earlier request failed for good: {first}",
            image=label, index=index, status=first.status,
        )
