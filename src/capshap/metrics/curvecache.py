"""Deletion / insertion curves kept between ``capshap evaluate`` runs of a folder.

Scoring the masked images of the curves is nearly all of an evaluation's time; the pointing
game and the energy share only read the values. So adding or changing ``--boxes`` (or the
pointing-game tolerance) should not score anything again. The curves of each explanation
are kept in one hidden file next to ``metrics.json`` (:data:`CACHE_NAME`), under a key made
of everything they depend on:

- the explanation's saved files, byte for byte (``NAME.npz`` and ``NAME.json``: values,
  image, caption, the run's settings, hence its mask, scorer and captioner);
- the curve parameters (``steps``, ``random_orders``, ``seed``, ``batch_size``, ``block``),
  the tokens evaluated, and how the scorer is rebuilt (``captioner``, ``scorer``,
  ``trust_run``, ``device``);
- the capshap version and this file's format.

Anything else (a different key, a damaged or oversized file, entries of the wrong shape) is
ignored and the curves are computed again. Curves scored with a scorer passed from Python
(``scorer_factory=``) are never kept: a function cannot be part of a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capshap.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["CurveCache", "CACHE_NAME"]

#: The cache file's name in the metrics folder (hidden: never taken for an explanation).
CACHE_NAME = ".capshap-curves.json"
_FORMAT = "capshap.curves/1"
#: Largest cache file that is read, in bytes.
MAX_CACHE_BYTES = 256 * 1024 * 1024


def _file_digest(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def _valid(metrics: Any, row_keys: tuple[str, ...]) -> bool:
    """Whether a cached entry has what the rows are made of, with plain JSON types."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("tokens"), list):
        return False
    for rec in metrics["tokens"]:
        if not isinstance(rec, dict) or not isinstance(rec.get("token"), str):
            return False
        if not isinstance(rec.get("index"), int) or isinstance(rec.get("index"), bool):
            return False
        for k in row_keys:
            v = rec.get(k, "missing")
            if not (_number_or_none(v) or isinstance(v, bool)):
                return False
    return True


class CurveCache:
    """The curves of a folder's explanations from an earlier evaluation, by key.

    Parameters
    ----------
    folder : where the cache file lives (the metrics folder); None disables the cache.
    params : the curve parameters and scorer recipe every key includes (JSON-able).
    row_keys : the per-token fields an entry must hold to be used.
    """

    def __init__(self, folder: Path | None, params: Mapping[str, Any], row_keys: tuple[str, ...]):
        from capshap import __version__

        self.path = None if folder is None else Path(folder) / CACHE_NAME
        self._params = json.dumps({"format": _FORMAT, "capshap": __version__, **params}, sort_keys=True, default=str)
        self._row_keys = row_keys
        self._old: dict[str, Any] = self._read() if self.path is not None else {}
        self._new: dict[str, Any] = {}
        self.hits = 0

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            if not self.path.is_file() or self.path.is_symlink():
                return {}
            size = self.path.stat().st_size
            if size > MAX_CACHE_BYTES:
                logger.info("Not reading %s: %d bytes", self.path, size)
                return {}
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # unreadable or damaged: computed again
            logger.info("Not using %s: %s", self.path, e)
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("entries"), dict):
            return {}
        return data["entries"]

    def key(self, stem: Path, tokens: list[int]) -> str | None:
        """The key of one explanation's curves (None when the cache is off or its files
        cannot be read)."""
        if self.path is None:
            return None
        h = hashlib.sha256(self._params.encode("utf-8"))
        h.update(json.dumps(tokens).encode("ascii"))
        try:
            for suffix in (".npz", ".json"):
                h.update(suffix.encode("ascii"))
                _file_digest(h, stem.with_suffix(suffix))
        except OSError:
            return None
        return h.hexdigest()

    def get(self, label: str, key: str | None) -> dict[str, Any] | None:
        """The curves stored for ``label`` under ``key``, or None."""
        if key is None:
            return None
        entry = self._old.get(label)
        if not isinstance(entry, dict) or entry.get("key") != key or not _valid(entry.get("metrics"), self._row_keys):
            return None
        self.hits += 1
        self._new[label] = entry
        return entry["metrics"]

    def put(self, label: str, key: str | None, metrics: dict[str, Any]) -> None:
        """Keep JSON-ready ``metrics`` for ``label`` under ``key`` (nothing when key is None)."""
        if key is not None:
            self._new[label] = {"key": key, "metrics": metrics}

    def save(self) -> None:
        """Write the entries used or computed in this evaluation (others are dropped)."""
        if self.path is None or not self._new:
            return
        text = json.dumps({"format": _FORMAT, "entries": self._new}, ensure_ascii=False, allow_nan=False)
        try:
            atomic_write_text(self.path, text)
        except OSError as e:  # the metrics are written; only the next evaluation is slower
            logger.warning("Could not write %s: %s", self.path, e)
