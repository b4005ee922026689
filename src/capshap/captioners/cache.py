"""A caption cache keyed by image content, in memory and optionally on disk.

Cloud captioners cost money and time per call. :class:`CaptionCache` remembers the
caption of every image it has seen, keyed by a *namespace* (which captioner and settings
produced it, e.g. ``"azure/v4/caption/png"``) and the exact pixels of the image (sha256
of the raw array bytes, its shape and dtype). Re-running an explanation, or resuming one
that stopped half way, then costs no calls for the images already captioned.

On disk (``directory=``) every entry is one small JSON file, ``<dir>/<ab>/<sha256>.json``
(``ab`` = the first two hex digits, so no folder grows too large), written atomically
(temporary file + :func:`os.replace`), so a crash never leaves half a file behind, and
several processes may share one folder. A corrupt or unreadable file is ignored with a
warning and overwritten by the next :meth:`CaptionCache.put` of that key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capshap.atomic import atomic_write_text
from capshap.interfaces import Captioner

__all__ = ["CaptionCache", "cache_key"]

logger = logging.getLogger(__name__)

_FORMAT = 1


def cache_key(namespace: str, image: np.ndarray) -> str:
    """The hex sha256 that identifies ``image`` (any shape/dtype array) in ``namespace``.

    Hashes the namespace, the array's shape and dtype, and its raw bytes in C order, so two
    arrays get the same key exactly when they hold the same values in the same layout.
    """
    arr = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(namespace.encode("utf-8"))
    h.update(b"\0")
    h.update(f"{arr.dtype.str}{arr.shape}".encode("ascii"))
    h.update(b"\0")
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class CaptionCache:
    """Captions by (namespace, image content): always in memory, also on disk with ``directory``.

    Parameters
    ----------
    directory : str or Path, optional
        Folder for the on-disk cache; created if missing. None keeps the cache in memory only.

    Thread-safe: a captioner may call :meth:`get` and :meth:`put` from many threads.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self._memory: dict[str, str] = {}
        self._lock = threading.Lock()
        self.directory: Path | None = None
        if directory is not None:
            path = Path(directory).expanduser()
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(
                    f"caption cache directory {str(path)!r} exists and is not a folder; "
                    "pass a folder path (it is created if missing)"
                )
            path.mkdir(parents=True, exist_ok=True)
            self.directory = path

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory is not None else "memory only"
        return f"CaptionCache({where!r}, {len(self)} in memory)"

    def __len__(self) -> int:
        """Number of captions held in memory (disk entries are loaded on first use)."""
        with self._lock:
            return len(self._memory)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, namespace: str, image: np.ndarray) -> str | None:
        """The cached caption of ``image`` in ``namespace``, or None if there is none."""
        return self.get_key(namespace, cache_key(namespace, image))

    def get_key(self, namespace: str, key: str) -> str | None:
        """Like :meth:`get`, with the key from :func:`cache_key` already computed."""
        with self._lock:
            hit = self._memory.get(key)
        if hit is not None or self.directory is None:
            return hit
        path = self._path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning("caption cache: cannot read %s (%s); ignoring it", path, e)
            return None
        try:
            entry = json.loads(text)
            caption = entry["caption"]
            if not isinstance(caption, str) or entry.get("namespace") != namespace:
                raise ValueError("wrong namespace or caption type")
        except (ValueError, KeyError, TypeError) as e:
            logger.warning(
                "caption cache: corrupt file %s (%s); ignoring it, it is rewritten on the "
                "next caption of this image", path, e,
            )
            return None
        with self._lock:
            self._memory[key] = caption
        return caption

    def put(self, namespace: str, image: np.ndarray, caption: str) -> None:
        """Remember ``caption`` for ``image`` in ``namespace`` (in memory, and on disk if set)."""
        arr = np.asarray(image)
        self.put_key(namespace, cache_key(namespace, arr), caption, shape=arr.shape)

    def put_key(
        self, namespace: str, key: str, caption: str, shape: tuple[int, ...] | None = None
    ) -> None:
        """Like :meth:`put`, with the key from :func:`cache_key` already computed.

        A failed disk write (full or read-only disk) is logged as a warning; the caption is
        still kept in memory.
        """
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        with self._lock:
            self._memory[key] = caption
        if self.directory is None:
            return
        path = self._path(key)
        entry = {"format": _FORMAT, "namespace": namespace, "caption": caption}
        if shape is not None:
            entry["shape"] = [int(s) for s in shape]
        try:
            path.parent.mkdir(exist_ok=True)
            atomic_write_text(path, json.dumps(entry, ensure_ascii=False))
        except OSError as e:
            logger.warning("caption cache: cannot write %s (%s); kept in memory only", path, e)



class CachingCaptioner(Captioner):
    """A captioner whose captions are cached by image content in a :class:`CaptionCache`.

    The namespace must hold everything besides the pixels that changes a caption (model,
    prompt, generation settings). Made by :func:`with_cache`.
    """

    def __init__(self, inner: Captioner, cache: CaptionCache, namespace: str):
        self.inner = inner
        self.cache = cache
        self.namespace = namespace
        # the declared abilities of the wrapped captioner (see capshap.interfaces)
        self.input_size = inner.input_size
        self.limits = inner.limits
        self.concurrent_calls = inner.concurrent_calls
        self.spec = inner.spec

    @property
    def name(self) -> str:
        return self.inner.name

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()

    def input_size_for(self, image_shape: Sequence[int]) -> tuple[int, int] | None:
        return self.inner.input_size_for(image_shape)

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        out: list[str | None] = [self.cache.get(self.namespace, im) for im in images]
        todo = [i for i, c in enumerate(out) if c is None]
        if todo:
            made = self.inner.caption([images[i] for i in todo])
            for i, c in zip(todo, made):
                self.cache.put(self.namespace, images[i], c)
                out[i] = c
        return [str(c) for c in out]


class _CachingOwnHead(CachingCaptioner):
    def own_scorer(self, caption: str, score: str = "logodds", merge_words: bool = False) -> Any:
        return self.inner.own_scorer(caption, score=score, merge_words=merge_words)  # type: ignore[attr-defined]


def with_cache(captioner: Captioner, cache: CaptionCache, namespace: str) -> Captioner:
    """``captioner`` with captions cached by content; own-head scoring still goes to it."""
    from capshap.scoring.own import has_own_head

    cls = _CachingOwnHead if has_own_head(captioner) else CachingCaptioner
    return cls(captioner, cache, namespace)
