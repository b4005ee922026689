"""What the cloud captioners share: a batch of images becomes at most one request per
distinct image, answered from the content cache where it can, sent through one
:class:`~capshap.captioners.http.HTTPClient`, with a caption or an exception per image.

A subclass provides ``namespace`` (everything besides the pixels that decides a caption),
``cache`` (a :class:`~capshap.captioners.cache.CaptionCache`), ``_client``,
``_request_for(image, label, index)`` (the request of one image, or an exception that
fails it without sending anything), ``_parse_caption(response, index)``,
``_stops_batch(exc)``, ``error_type`` (its :class:`ServiceError` subclass) and
``_where()`` (how messages name the service).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from capshap.captioners.cache import cache_key
from capshap.captioners.http import (
    BadAnswer,
    BatchStopped,
    ClientError,
    Request,
    RetriesExhausted,
)
from capshap.images import check_rgb
from capshap.interfaces import Captioner
from capshap.text import printable

__all__ = ["CloudCaptioner", "ServiceError"]


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
    """Base of captioners that call a service: per-image results, cache, de-duplication."""

    cache: Any
    cache_hits: int = 0
    _lock: threading.Lock
    #: the errors this service's failures are reported as
    error_type: type[ServiceError] = ServiceError

    @property
    def requests_sent(self) -> int:
        """HTTP requests made, retries included."""
        return self._client.requests_sent  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the connections (a closed captioner sends nothing more)."""
        self._client.close()  # type: ignore[attr-defined]

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
        namespace = self.namespace  # type: ignore[attr-defined]
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
        answers = self._client.map(  # type: ignore[attr-defined]
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
