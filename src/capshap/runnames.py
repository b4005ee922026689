"""The names of a run folder: output stems, the names the folder reserves, the namespace
that keeps every image's files apart, and the manifest's schema.

A run folder (:mod:`capshap.runfolder`) writes, per image, ``STEM`` + each of
:data:`SUFFIXES`, and for the run the files :data:`RUN_FILES` match. :func:`base_stem`
derives a stem from an image's name, :class:`Namespace` checks every derived name against
the others, the reserved names and the files already in the folder, :func:`check_stem`
says whether a stem is a safe name inside the folder, and :func:`check_manifest` checks a
parsed ``manifest.json`` field by field before anything is taken from it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from capshap.text import printable

__all__ = [
    "NAME_MAX",
    "RUN_FILES",
    "SUFFIXES",
    "Manifest",
    "Namespace",
    "base_stem",
    "check_manifest",
    "check_stem",
    "fit_name",
]

SUFFIXES = (".npz", ".json", ".png", "_grid.png")
"""Every file an image can get: ``STEM + suffix``."""
NAME_MAX = 255
"""Bytes in one file-name component (Linux, macOS, Windows all allow 255)."""
RUN_FILES = re.compile(
    r"^(?:index(?:-[0-9]+)?\.html|summary\.(?:json|html)|metrics\.(?:json|md)|manifest\.json|\.capshap\.lock)$",
    re.IGNORECASE)
"""Run-level files of a run folder (index pages, summary, metrics, manifest, lock): no
image's output may take one of these names."""
_RUN_STEMS = re.compile(r"^(?:index(?:-[0-9]+)?|summary|metrics|manifest)(?:\.npz|\.json|\.png|_grid\.png)$",
                        re.IGNORECASE)  # outputs named like run files would only confuse
_FORMAT = "capshap.run"
_FORMAT_VERSION = 1
_STATUSES = ("done", "failed", "saving")
_RUN_ID = re.compile(r"^[0-9a-f]{16}$")


# ------------------------------------------------------------------------------- names


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def _cut(s: str, max_bytes: int) -> str:
    while _nbytes(s) > max_bytes:
        s = s[:-1]
    return s


def fit_name(component: str, limit: int = NAME_MAX - len("_grid.png")) -> str:
    """``component`` if it has at most ``limit`` bytes (UTF-8), else its beginning plus
    ``-`` and 8 hex digits of a hash of the whole (deterministic, and still unique)."""
    if _nbytes(component) <= limit:
        return component
    return _cut(component, limit - 9) + "-" + _hash(component)


def base_stem(name: str) -> str:
    """The output stem of an image name before collisions are resolved: the relative
    path without its last extension (``sub/cat.v1.jpg`` -> ``sub/cat.v1``), with empty,
    ``.`` and ``..`` parts dropped, leading dots removed and every part fitted to
    :data:`NAME_MAX`."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        parts = ["image"]
    last = parts[-1]
    suffix = PurePosixPath(last).suffix
    if suffix and last != suffix:
        last = last[: -len(suffix)]
    parts[-1] = last
    parts = [p.lstrip(".") or "image" for p in parts]
    return "/".join(fit_name(p) for p in parts)


def _tagged(stem: str, tag: str) -> str:
    head, _, last = stem.rpartition("/")
    last = _cut(last, NAME_MAX - len("_grid.png") - len(tag) - 1) + "_" + tag
    return f"{head}/{last}" if head else last


def check_stem(stem: Any) -> str | None:
    """Why ``stem`` is not a safe output stem (None when it is): it must be text naming a
    file inside the run folder (no absolute path, no ``..``, ``.`` or empty part, no part
    starting with a dot, each part within :data:`NAME_MAX`) whose outputs take no
    run-level name (:data:`RUN_FILES`)."""
    if not isinstance(stem, str):
        return f"must be text, got {type(stem).__name__}"
    if not stem or len(stem) > 4096 or "\0" in stem or "\\" in stem:
        return "must be a relative file name without NUL or backslash, at most 4096 characters"
    if base_stem(stem + ".x") != stem:
        return (f"{printable(stem, 80)!r} is not a safe name inside the run folder (absolute, '..', "
                "hidden or over-long parts)")
    hit = next((n for n in Namespace.derived(stem) if Namespace.reserved(n)), None)
    if hit is not None:
        return f"{printable(stem, 80)!r} would write {printable(hit, 80)}, a name the run folder reserves"
    return None


class Namespace:
    """The file names of one run folder: the ones reserved for the run itself, the ones
    each image's stem writes (``STEM`` + every suffix of :data:`SUFFIXES`, whatever the
    options, so a later ``--grid`` run finds them free), and the ones taken by another
    stem, a folder, or a file the folder did not write.

    Parameters
    ----------
    root : Path
        The run folder.
    owned : set of str
        Lower-cased relative names of files the folder's manifest accounts for (they may
        be rewritten); any other existing file is never written over.

    Names compare case-insensitively (a folder on macOS or Windows would merge them).
    """

    def __init__(self, root: Path, owned: set[str] | None = None):
        self.root = root
        self.owned = set(owned or ())
        self._files: set[str] = set()
        self._dirs: set[str] = set()

    @staticmethod
    def derived(stem: str) -> list[str]:
        """Every file name ``stem`` writes, relative to the folder."""
        return [stem + s for s in SUFFIXES]

    @staticmethod
    def reserved(name: str) -> bool:
        """Whether ``name`` (relative to the folder) is a run-level file or hidden
        (temporaries, the lock)."""
        last = name.rsplit("/", 1)[-1]
        return last.startswith(".") or ("/" not in name and (RUN_FILES.match(name) or _RUN_STEMS.match(name)) is not None)

    @staticmethod
    def parents(stem: str) -> list[str]:
        """The sub-folders ``stem`` writes into (``a/b/c`` -> ``a``, ``a/b``)."""
        parts = stem.split("/")[:-1]
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def conflict(self, stem: str, mine: bool = False) -> str | None:
        """The first name that keeps ``stem`` from being used (reserved, another stem's
        file or folder, a link or file where a folder must be, a file the folder did not
        write), or None. ``mine``: the manifest records ``stem``, its files are its own."""
        hit = self.parent_conflict(stem)
        if hit is not None:
            return hit
        for n in self.derived(stem):
            low = n.lower()
            if self.reserved(n) or low in self._files or low in self._dirs:
                return n
            if not mine and low not in self.owned and os.path.lexists(self.root / n):
                return n
        return None

    def parent_conflict(self, stem: str) -> str | None:
        """The first sub-folder of ``stem`` that cannot be written into: another stem's
        file, a reserved name, a symbolic link or a file; None if all can."""
        for d in self.parents(stem):
            p = self.root / d
            if d.lower() in self._files or self.reserved(d) or os.path.islink(p) or (
                    os.path.lexists(p) and not p.is_dir()):
                return d
        return None

    def claim(self, stem: str) -> None:
        """Take ``stem``'s names for it."""
        self._files.update(n.lower() for n in self.derived(stem))
        self._dirs.update(d.lower() for d in self.parents(stem))


# ------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """A checked manifest: what :func:`check_manifest` returns."""

    settings: dict[str, Any]
    images: dict[str, dict[str, Any]]
    created: str | None
    runs: list[str]
    owned: list[str]


def _bad(field: str, msg: str) -> ValueError:
    return ValueError(f"field '{field}': {msg}")


def _typename(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_record(where: str, rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise _bad(where, f"must be an object (a record), got {_typename(rec)}")
    why = check_stem(rec.get("stem"))
    if why is not None:
        raise _bad(f"{where}.stem", why)
    stem = rec["stem"]
    if rec.get("status") not in _STATUSES:
        raise _bad(f"{where}.status", f"must be one of {', '.join(_STATUSES)}, got {printable(repr(rec.get('status')), 40)}")
    for k in ("name", "source", "caption", "started", "finished", "run", "npz_sha256", "error", "stage"):
        v = rec.get(k)
        if v is not None and not isinstance(v, str):
            raise _bad(f"{where}.{k}", f"must be text, got {_typename(v)}")
    ours = {n.lower() for n in Namespace.derived(stem)}
    files = rec.get("files", [])
    if not isinstance(files, list):
        raise _bad(f"{where}.files", f"must be a list of file names, got {_typename(files)}")
    for i, f in enumerate(files):
        if not isinstance(f, str) or f.lower() not in ours:
            raise _bad(f"{where}.files[{i}]", f"must be one of this record's outputs ({printable(stem, 60)}.npz ...), "
                                             f"got {printable(repr(f), 60)}")
    links = rec.get("links")
    if links is not None:
        if not isinstance(links, dict):
            raise _bad(f"{where}.links", f"must be an object, got {_typename(links)}")
        for k, v in links.items():
            if not isinstance(v, str) or v.lower() not in ours:
                raise _bad(f"{where}.links.{printable(k, 20)}", "must name one of this record's outputs")
    ev = rec.get("evaluations")
    if ev is not None and (isinstance(ev, bool) or not isinstance(ev, int) or ev < 0):
        raise _bad(f"{where}.evaluations", f"must be a whole number >= 0, got {printable(repr(ev), 40)}")
    sec = rec.get("seconds")
    if sec is not None and (isinstance(sec, bool) or not isinstance(sec, (int, float)) or not math.isfinite(sec)
                            or sec < 0):
        raise _bad(f"{where}.seconds", f"must be a number >= 0, got {printable(repr(sec), 40)}")
    return rec


def check_manifest(data: Any) -> Manifest:
    """Check a parsed ``manifest.json`` against its schema.

    Parameters
    ----------
    data : Any
        The parsed JSON (size and nesting were bounded when it was read).

    Returns
    -------
    Manifest
        Its settings, image records (by key), creation time, run ids and owned files.

    Raises
    ------
    ValueError
        ``"field 'images[KEY].files': must be a list ..."``: the first field that does not
        fit (types, statuses, stems that are safe names inside the folder and unique, files
        and links that are the record's own outputs).
    """
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"not a capshap run manifest (field 'format' must be {_FORMAT!r})")
    v = data.get("version", 1)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _FORMAT_VERSION:
        raise _bad("version", f"must be a whole number from 1 to {_FORMAT_VERSION}, got {printable(repr(v), 40)}")
    settings = data.get("settings")
    if not isinstance(settings, dict):
        raise _bad("settings", f"must be an object, got {_typename(settings)}")
    images = data.get("images")
    if not isinstance(images, dict):
        raise _bad("images", f"must map sources to records, got {_typename(images)}")
    created = data.get("created")
    if created is not None and not isinstance(created, str):
        raise _bad("created", f"must be text, got {_typename(created)}")
    runs = data.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, str) and _RUN_ID.match(r) for r in runs):
        raise _bad("runs", "must be a list of run ids (16 hex digits)")
    owned = data.get("owned", [])
    if not isinstance(owned, list):
        raise _bad("owned", f"must be a list of file names, got {_typename(owned)}")
    for i, n in enumerate(owned):
        if not isinstance(n, str) or not any(n.endswith(x) and check_stem(n[: -len(x)]) is None for x in SUFFIXES):
            raise _bad(f"owned[{i}]", f"must be an output name inside the folder, got {printable(repr(n), 60)}")
    seen: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for key, rec in images.items():
        where = f"images[{printable(repr(key), 80)}]"
        out[str(key)] = _check_record(where, rec)
        low = rec["stem"].lower()
        if low in seen:
            raise _bad(f"{where}.stem", f"{printable(rec['stem'], 60)!r} is also the stem of "
                                        f"{printable(repr(seen[low]), 80)}")
        seen[low] = key
    return Manifest(settings, out, created, list(runs), [str(n) for n in owned])
