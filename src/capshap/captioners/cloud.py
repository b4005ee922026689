"""What the cloud captioners share: :class:`CloudCaptioner`, the base class that owns the
shared constructor (image encoding, caption cache, the one
:class:`~capshap.captioners.http.HTTPClient`) and the captioning of a batch: at most one
request per distinct image, answered from the content cache where it can, sent through the
client, with a caption or an exception per image.

A subclass validates what is its own (endpoint or base URL, key, API), then calls
``super().__init__`` with its client's name, headers and options, and provides
``namespace`` (everything besides the pixels that decides a caption),
``_request_for(image, label, index)`` (the request of one image, or an exception that
fails it without sending anything), ``_parse_caption(response, index)``,
``_stops_batch(exc)``, ``error_type`` (its :class:`ServiceError` subclass),
``image_formats`` (the upload encodings it takes) and ``_where()`` (how messages name the
service).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from capshap.captioners.cache import CaptionCache, cache_key
from capshap.captioners.http import (
    BadAnswer,
    BatchStopped,
    ClientError,
    HTTPClient,
    Request,
    RetriesExhausted,
    Secret,
)
from capshap.images import check_rgb
from capshap.interfaces import Captioner
from capshap.text import printable

__all__ = ["CloudCaptioner", "ServiceError", "IMAGE_ENCODERS"]

#: image_format option -> (PIL format, MIME type, save options); JPEG also gets the
#: captioner's ``jpeg_quality``. Lossless PNG is every cloud captioner's default.
IMAGE_ENCODERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "png": ("PNG", "image/png", {}),
    "jpeg": ("JPEG", "image/jpeg", {"subsampling": 0}),
    "bmp": ("BMP", "image/bmp", {}),
    "webp": ("WEBP", "image/webp", {"lossless": True}),
}


class ServiceError(RuntimeError):
    """A request to a captioning service failed.

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


class CloudCaptioner(Captioner):
    """Base of captioners that call a service: per-image results, cache, de-duplication.

    Parameters
    ----------
    client_name : str
        Names the HTTP client in log lines and its threads (e.g. ``"azure-v4"``).
    secret_headers : mapping of str to Secret
        Headers with the key (scrubbed from every message); may be empty.
    headers : mapping of str to str
        Other headers of every request (e.g. the content type).
    image_format : str
        How arrays are encoded for upload (in memory): one of :attr:`image_formats`
        (``"jpg"`` means ``"jpeg"``). PNG (default) is lossless.
    jpeg_quality : int
        JPEG quality, 1-100, with ``image_format="jpeg"`` (4:4:4 chroma).
    cache : CaptionCache, optional
        A cache to share with other captioners; else one is made from ``cache_dir``.
    cache_dir : str or Path, optional
        Folder for an on-disk caption cache (in memory without it).
    **client_options
        Passed to :class:`~capshap.captioners.http.HTTPClient` (``max_concurrency``,
        ``max_retries``, ``timeout``, ``max_response_bytes``, ``backoff``,
        ``max_backoff``, ``seed``, ``transport``, ``proxies``, ``verify``, ``sleep``,
        ``clock``); malformed answers are retried at most twice.

    Attributes ``requests_sent`` (HTTP requests made, retries included), ``cache_hits``
    (images answered from the cache), ``image_format``, ``jpeg_quality`` and ``cache``.
    """

    #: requests go through one client: one connection pool and one concurrency limit
    #: shared by every thread, so runners call a cloud captioner from several threads
    concurrent_calls = True
    #: the errors this service's failures are reported as
    error_type: type[ServiceError] = ServiceError
    #: the upload encodings the service takes (keys of :data:`IMAGE_ENCODERS`)
    image_formats: ClassVar[tuple[str, ...]] = ("png", "jpeg", "webp")

    def __init__(
        self,
        *,
        client_name: str,
        secret_headers: Mapping[str, Secret] | None = None,
        headers: Mapping[str, str] | None = None,
        image_format: str = "png",
        jpeg_quality: int = 95,
        cache: CaptionCache | None = None,
        cache_dir: Any = None,
        **client_options: Any,
    ):
        fmt = str(image_format).strip().lower()
        fmt = "jpeg" if fmt == "jpg" else fmt
        if fmt not in self.image_formats:
            raise ValueError(f"unknown image_format {image_format!r}; use one of {sorted(self.image_formats)}")
        refused = self._refuse_format(image_format, fmt)
        if refused:
            raise ValueError(refused)
        self.image_format = fmt
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
        self.jpeg_quality = int(jpeg_quality)
        self.cache = cache if cache is not None else CaptionCache(cache_dir)
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._client = HTTPClient(
            secret_headers=secret_headers, headers=headers, name=client_name, max_bad_answers=2, **client_options
        )

    @property
    def format_tag(self) -> str:
        """The upload encoding as cache namespaces name it ("png", "jpeg95", ...)."""
        return self.image_format + (str(self.jpeg_quality) if self.image_format == "jpeg" else "")

    @property
    def mime_type(self) -> str:
        """The MIME type of the upload encoding ("image/png", ...)."""
        return IMAGE_ENCODERS[self.image_format][1]

    def encode_image(self, image: np.ndarray) -> bytes:
        """(H, W, 3) uint8 -> the image file's bytes in :attr:`image_format` (in memory,
        never on disk)."""
        from PIL import Image

        fmt, _, opts = IMAGE_ENCODERS[self.image_format]
        if fmt == "JPEG":
            opts = {**opts, "quality": self.jpeg_quality}
        buf = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buf, format=fmt, **opts)
        return buf.getvalue()

    @property
    def requests_sent(self) -> int:
        """HTTP requests made, retries included."""
        return self._client.requests_sent

    def close(self) -> None:
        """Close the connections (a closed captioner sends nothing more)."""
        self._client.close()

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
        messages (default ``"image <i>"``). Identical images are sent once, cached ones not
        at all; successful captions are cached. KeyboardInterrupt stops the batch (nothing
        more is sent) and propagates.
        """
        n = len(images)
        if names is not None and len(names) != n:
            raise ValueError(f"got {len(names)} names for {n} images; pass one name per image")
        labels = [f"image {i}" if names is None else f"image {i} ({printable(names[i], 200)!r})" for i in range(n)]
        results: list[Any] = [None] * n
        namespace = self.namespace
        todo: dict[str, list[int]] = {}
        arrays: dict[str, np.ndarray] = {}
        for i in range(n):
            try:
                arr = check_rgb(images[i], labels[i])
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
        if not todo:
            return results
        keys: list[str] = []
        requests: list[Request] = []
        index_of: dict[str, int] = {}
        for key, idx in todo.items():
            i = idx[0]
            try:
                req = self._request_for(arrays[key], labels[i], i)
            except ValueError as e:  # refused before sending (e.g. image limits)
                for j in idx:
                    results[j] = e
                continue
            keys.append(key)
            requests.append(req)
            index_of[labels[i]] = i
        answers = self._client.map(
            requests, lambda r: self._parse_caption(r, index_of[r.request.label]), stop=self._stops_batch,
        )
        for key, req, answer in zip(keys, requests, answers):
            if isinstance(answer, str):
                self.cache.put_key(namespace, key, answer, shape=arrays[key].shape)
            else:
                answer = self._convert(answer, req.label, index_of[req.label])
            for j in todo[key]:
                results[j] = answer
        return results

    # ------------------------------------------------------------ what a subclass says

    @property
    def namespace(self) -> str:  # pragma: no cover
        """Cache namespace: everything besides the pixels that determines the caption."""
        raise NotImplementedError

    def _refuse_format(self, given: str, image_format: str) -> str | None:
        """Why the service refuses the (known) encoding ``image_format`` (``given`` as the
        user wrote it), or None; called before anything is built."""
        return None

    def _request_for(self, image: np.ndarray, label: str, index: int) -> Request:  # pragma: no cover
        raise NotImplementedError

    def _parse_caption(self, resp: Any, index: int) -> str:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _stops_batch(e: BaseException) -> bool:  # pragma: no cover
        return False

    def _where(self) -> str:  # pragma: no cover
        """The service as messages name it, e.g. "Azure v3.2" or the request URL."""
        return type(self).__name__

    def _bad_answer_hint(self) -> str:
        """Appended to the message of an answer that could not be read."""
        return ""

    def _convert(self, e: BaseException, label: str, index: int | None) -> BaseException:
        """A client failure -> the service's error naming the image; others unchanged."""
        base = self.error_type
        if isinstance(e, base):
            return e
        where = self._where()
        if isinstance(e, BatchStopped):
            first = e.first
            cls = type(first) if isinstance(first, base) else base
            err: ServiceError = cls(f"{label}: not sent, an earlier request failed for good: {first}",
                                    image=label, index=index, status=getattr(first, "status", None))
        elif isinstance(e, BadAnswer):
            err = base(f"{label}: {where} answered with {e.reason}{self._bad_answer_hint()}",
                       image=label, index=index, status=e.status)
        elif isinstance(e, RetriesExhausted):
            err = base(f"{label}: {where} {e.reason}", image=label, index=index, status=e.status)
        elif isinstance(e, ClientError):
            err = base(f"{label}: {where}: {e.reason}", image=label, index=index, status=e.status)
        else:
            return e
        err.__cause__ = e
        return err
