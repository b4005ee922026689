"""The run folder: what ``capshap explain --out RUN`` writes, made safe and resumable.

A run folder holds, per image, ``STEM.npz``, ``STEM.json``, ``STEM.png`` (and
``STEM_grid.png``), one ``index.html`` for the run, ``manifest.json`` and the lock file
``.capshap.lock``. :class:`RunFolder` owns all of it:

- **names**: every input gets a stem derived from its name (``cat.v1.jpg`` -> ``cat.v1``),
  unique in the folder (case-insensitively), stable across re-runs (stems recorded in the
  manifest are kept), never overwriting an input file, and short enough for the file
  system (``NAME_MAX`` bytes minus the longest suffix; longer names are cut and tagged
  with a hash of the name). Collisions get ``_`` + 8 hex digits of a hash of the source path.
- **safety**: an advisory lock (``fcntl.flock``) so two runs never write one folder; the
  folder is created and probed for writing before any work; every file is written under
  a unique temporary name and renamed into place; an image's files are renamed together
  and only then recorded as done, with SIGINT/SIGTERM held off for those few renames.
- **resuming**: ``manifest.json`` records the settings (:meth:`Settings.to_dict`), the
  capshap version and, per image, its status (done / failed with the error), stem,
  source and timestamps. Opening a folder whose manifest has other settings
  (:meth:`Settings.engine_key`) is refused unless ``overwrite``; images already done
  (outputs present and loadable) are skipped, failed ones are redone.
- **index.html** lists every done image of the folder (earlier runs' entries are rebuilt
  from their saved explanations) and every failure; it is rewritten atomically after
  each image.

Examples
--------
>>> files = list_inputs(["photos/"])                                    # doctest: +SKIP
>>> with RunFolder.open("out", settings, files) as rf:                 # doctest: +SKIP
...     for res in run_serial(load_inputs(rf.todo(), settings), parts):
...         rf.save(res.explanation, res.source) if res.ok else rf.record_failure(res.source, res.error)
...         rf.write_index()
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from capshap.atomic import atomic_write_text
from capshap.settings import Settings
from capshap.text import printable

try:  # pragma: no cover - platform
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "INDEX",
    "LOCK",
    "MANIFEST",
    "SUFFIXES",
    "InputFile",
    "RunFolder",
    "RunFolderError",
    "SaveError",
    "base_stem",
    "deferred_interrupts",
    "fit_name",
    "list_inputs",
    "load_inputs",
]

logger = logging.getLogger(__name__)

MANIFEST, INDEX, LOCK = "manifest.json", "index.html", ".capshap.lock"
#: index.html shows this many images a page (index-2.html, ... hold the rest) ...
PER_PAGE = 100
#: ... as thumbnails of at most this many pixels a side.
THUMB_SIDE = 320
SUFFIXES = (".npz", ".json", ".png", "_grid.png")
"""Every file an image can get: ``STEM + suffix``."""
NAME_MAX = 255
"""Bytes in one file-name component (Linux, macOS, Windows all allow 255)."""
_TMP_PREFIX = ".capshap-tmp-"
_RESERVED = {"manifest", "index", "summary", LOCK.lower()}
_FORMAT = "capshap.run"
_FORMAT_VERSION = 1


class RunFolderError(Exception):
    """The run folder cannot be used (locked, unwritable, other settings, damaged
    manifest); the message names the folder and what to do. The CLI exits with 2."""


class SaveError(Exception):
    """One image's files could not be written; the message names the file and why."""


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class InputFile:
    """One input before it is loaded.

    name: the image's name (its path relative to the folder given, or the file name).
    path: where it is. key: its identity in the manifest (the resolved path).
    """

    name: str
    path: Path
    key: str


def _key(path: Path) -> str:
    p = os.path.realpath(path) if os.path.exists(path) else os.path.abspath(path)
    return os.path.normcase(p)


def list_inputs(paths: Sequence[str | os.PathLike[str]], recursive: bool = False) -> list[InputFile]:
    """Every input of ``paths`` (files and folders) without loading any, in the order
    :func:`capshap.images.iter_images` gives them, each file once.

    Files given by name are kept whatever their extension (loading reports them); inside
    folders only image files count. An unreadable folder is kept as one input, so the
    run reports it.
    """
    from capshap.images import ImageError, _scan_folder, is_image_path

    out: list[InputFile] = []
    seen: set[str] = set()

    def add(name: str, path: Path) -> None:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            out.append(InputFile(name, path, key))

    for p in paths:
        label = os.fspath(p)
        path = Path(label).expanduser()
        if not path.is_dir():
            add(path.name, path)
            continue
        try:
            rels = _scan_folder(path, recursive)
        except ImageError:
            add(path.name or label, path)  # loading it reports why
            continue
        n = 0
        for rel in rels:
            if not is_image_path(rel):  # notes, notebooks, ...: skipped quietly
                logger.debug("skipped %s: not an image file", printable(str(path / rel)))
                continue
            n += 1
            add(rel.as_posix(), path / rel)
        if n == 0:
            logger.warning("No image files found in %s", printable(label))
    return out


def load_inputs(files: Iterable[InputFile], settings: Settings) -> Iterator[Any]:
    """:class:`capshap.run.ImageInput` per file, loaded lazily (one at a time), with the
    names :func:`list_inputs` gave them and ``source`` = ``str(file.path)``."""
    from capshap.images import ImageError, iter_images
    from capshap.job import ImageInput

    for f in files:
        try:
            rec = next(iter(iter_images([f.path], max_side=settings.max_side, max_pixels=settings.max_pixels,
                                        recursive=False)), None)
        except ImageError as e:
            yield ImageInput(f.name, None, str(f.path), None, e)
            continue
        if rec is None:
            yield ImageInput(f.name, None, str(f.path), None, ImageError(str(f.path), "no image found"))
        else:
            yield ImageInput(f.name, rec.array, str(f.path), rec.original_size, rec.error)


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


# ---------------------------------------------------------------------------- signals


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off for a short critical section (renaming one image's
    files and recording it); one that arrives meanwhile is acted on right after.
    Outside the main thread this does nothing (signals are only handled there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    old = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            sig, handler = pending[0], old[pending[0]]
            if callable(handler):
                handler(sig, None)  # raises KeyboardInterrupt (or the CLI's Terminated)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)


# --------------------------------------------------------------------------- run folder


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_norm(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _option(setting: str) -> str:
    return {"n_segments": "--segments", "captioner_options": "--captioner-opt", "scorer_options": "--scorer-opt",
            "cache_dir": "--cache"}.get(setting, "--" + setting.replace("_", "-"))


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


class RunFolder:
    """An open run folder (see the module docstring); use :meth:`open`, then :meth:`todo`,
    :meth:`save` / :meth:`record_failure` per image, :meth:`write_index`, :meth:`close`.

    Works in any order of outcomes (a parallel runner may finish images out of order):
    every call names its image by key (:attr:`InputFile.key`) or by source path.
    """

    def __init__(self, path: Path, settings: Settings, inputs: list[InputFile], *, html: bool = True,
                 title: str = "capshap explanations", grid: Any = None, version: str = ""):
        self.path = path
        self.settings = settings
        self.inputs = inputs
        self.html = html
        self.title = title
        self.grid = grid
        self.version = version
        self._by_key = {f.key: f for f in inputs}
        self._by_source = {str(f.path): f for f in inputs}
        self.images: dict[str, dict[str, Any]] = {}
        self.stems: dict[str, str] = {}
        self._done: set[str] = set()
        self._entries: dict[str, Any] = {}  # key -> report entry
        self._lock_fd: int | None = None
        self._new_dir = False  # this session created the folder
        self._new_lock = False  # ... and the lock file
        self._wrote = False  # ... and recorded an image
        self.created = _now()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        settings: Settings,
        inputs: Sequence[InputFile],
        *,
        overwrite: bool = False,
        wait_lock: bool = False,
        html: bool = True,
        grid: Any = None,
        title: str = "capshap explanations",
        on_wait: Callable[[str], None] | None = None,
    ) -> RunFolder:
        """Create (if needed), probe, lock and read the run folder ``out`` for ``inputs``.

        Raises
        ------
        RunFolderError
            ``out`` is not a folder or not writable, another run holds it (unless
            ``wait_lock``: then this waits, calling ``on_wait`` once with a message), its
            manifest is damaged or has other settings (unless ``overwrite``).
        """
        from capshap import __version__

        path = Path(out).expanduser()
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{out}: exists and is not a folder; choose another --out")
        new_dir = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create the output folder {out}: {_why(e)}") from None
        rf = cls(path, settings, [], html=html, title=title, grid=grid, version=__version__)
        rf._new_dir = new_dir
        try:
            rf._lock(wait_lock, on_wait)
            rf._probe()
            rf._clean_stale()
            previous = rf._read_manifest(overwrite)
            rf._plan(list(inputs), previous)
            rf._check_previous(previous)
        except BaseException:
            rf.close()
            raise
        return rf

    def _lock(self, wait: bool, on_wait: Callable[[str], None] | None) -> None:
        if fcntl is None:  # pragma: no cover
            logger.debug("no fcntl: %s is not locked against other runs", self.path)
            return
        lock = self.path / LOCK
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)  # a holder that did nothing may remove it
                existed = lock.exists()
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise RunFolderError(f"cannot write into the output folder {self.path}: {_why(e)} ({lock})") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                    who = f" (process {holder})" if holder.isdigit() else ""
                    if not wait:
                        raise RunFolderError(
                            f"{self.path} is in use by another capshap run{who}; wait for it to finish, "
                            "add --wait-lock to wait, or choose another --out") from None
                    if on_wait is not None:
                        on_wait(f"waiting for the other capshap run{who} writing {self.path} to finish")
                        on_wait = None
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:  # the holder may have removed the file meanwhile: lock the one in place
                    same = os.fstat(fd).st_ino == os.stat(lock).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._lock_fd, self._new_lock = fd, not existed
            return

    def _probe(self) -> None:
        try:
            fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX + "probe-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                os.unlink(probe)
        except OSError as e:
            raise RunFolderError(f"cannot write into the output folder {self.path}: {_why(e)}") from None

    def _clean_stale(self) -> None:
        """Temporary files of a run that was killed (we hold the lock: nobody else writes)."""
        for p in self.path.iterdir():
            if p.name.startswith(_TMP_PREFIX) or (p.name.startswith(".tmp-") and p.suffix in (".json", ".html")):
                logger.debug("removing %s, left by an interrupted run", p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def _read_manifest(self, overwrite: bool) -> dict[str, dict[str, Any]]:
        mf = self.path / MANIFEST
        if not mf.exists():
            return {}
        try:
            data = json.loads(mf.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError("not a capshap run manifest")
            images = data.get("images")
            if not isinstance(images, dict) or not all(isinstance(v, dict) for v in images.values()):
                raise ValueError("field 'images' must map sources to records")
            stored = data.get("settings")
            if not isinstance(stored, dict):
                raise ValueError("field 'settings' is missing")
        except (OSError, ValueError) as e:
            if overwrite:
                logger.warning("%s: unreadable (%s); starting over (--overwrite)", mf, e)
                return {}
            raise RunFolderError(f"{mf} is damaged ({e}); move it away, choose another --out, "
                                 "or add --overwrite to start over") from None
        if overwrite:
            return {}
        self.created = str(data.get("created") or self.created)
        mine = _json_norm(self.settings.engine_key())
        try:
            theirs = _json_norm(Settings.from_dict(stored).engine_key())
        except (TypeError, ValueError):
            theirs = {k: v for k, v in stored.items() if k not in ("cache_dir", "batch_size_model")}
        if mine != theirs:
            diffs = [
                f"{_option(k)} (folder: {printable(repr(theirs.get(k)))}, now: {printable(repr(mine.get(k)))})"
                for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)
            ]
            raise RunFolderError(
                f"{self.path} holds a run with other settings: {'; '.join(diffs)}. Use the same settings "
                "to resume it, choose another --out, or add --overwrite to explain every image again")
        return {str(k): v for k, v in images.items()}

    def _output_paths(self, stem: str) -> list[str]:
        return [os.path.normcase(os.path.abspath(self.path / (stem + s))).lower() for s in SUFFIXES]

    def _plan(self, inputs: list[InputFile], previous: dict[str, dict[str, Any]]) -> None:
        """Drop inputs that are this folder's own outputs; give every input its stem."""
        ours = {os.path.normcase(os.path.abspath(self.path / f)).lower()
                for rec in previous.values() for f in rec.get("files") or []}
        kept = []
        for f in inputs:
            if os.path.normcase(os.path.abspath(f.path)).lower() in ours or f.key.lower() in ours:
                logger.info("skipped %s: an output of this run folder", f.path)
            else:
                kept.append(f)
        self.inputs = kept
        self._by_key = {f.key: f for f in kept}
        self._by_source = {str(f.path): f for f in kept}
        self.images = dict(previous)
        input_files = {f.key.lower() for f in kept} | {os.path.normcase(os.path.abspath(f.path)).lower() for f in kept}

        def hits_input(stem: str) -> str | None:
            return next((p for p in self._output_paths(stem) if p in input_files), None)

        used: set[str] = set(_RESERVED)
        for key, rec in previous.items():
            stem = rec.get("stem")
            if isinstance(stem, str) and stem and base_stem(stem + ".x") == stem:
                used.add(stem.lower())
                if key in self._by_key and hits_input(stem) is None:
                    self.stems[key] = stem
        for f in kept:
            if f.key in self.stems:
                continue
            base = cand = base_stem(f.name)
            n = 0
            while cand.lower() in used or hits_input(cand) is not None:
                hit = hits_input(cand)
                cand = _tagged(base, _hash(f.key + (f"#{n}" if n else "")))
                n += 1
                if hit is not None:
                    logger.warning("%s: its outputs would overwrite an input file; writing them as %s.*",
                                   f.path, self.path / cand)
            used.add(cand.lower())
            self.stems[f.key] = cand

    def _check_previous(self, previous: dict[str, dict[str, Any]]) -> None:
        """Which recorded images are really done: status done, same stem, every file there
        and loadable, the same engine settings; their report entries are rebuilt."""
        from capshap.explanation import Explanation

        mine = _json_norm(self.settings.engine_key())
        for key, rec in previous.items():
            if rec.get("status") != "done":
                continue
            stem = rec.get("stem")
            if not isinstance(stem, str) or (key in self.stems and self.stems[key] != stem):
                continue
            name = str(rec.get("name") or stem)
            files = [self.path / (stem + s) for s in (".npz", ".json", ".png")]
            if self.grid is not None and key in self._by_key:
                files.append(self.path / (stem + "_grid.png"))
            missing = [p for p in files if not p.is_file()]
            if missing:
                logger.info("redoing %s: %s is missing", name, missing[0])
                continue
            try:
                exp = Explanation.load(self.path / stem)
            except (OSError, ValueError) as e:
                logger.warning("redoing %s: its saved explanation cannot be read (%s)", name, e)
                continue
            if exp.settings is None or _json_norm(exp.settings.engine_key()) != mine:
                logger.warning("redoing %s: %s.json was made with other settings", name, self.path / stem)
                continue
            self._done.add(key)
            if self.html:
                self._add_entry(key, exp, rec)

    # ------------------------------------------------------------------ queries
    def stem_for(self, key: str) -> str:
        """The output stem (relative to the folder, no suffix) of the input ``key``."""
        return self.stems[self._key_of(key)]

    def is_done(self, key: str) -> bool:
        """Whether the input ``key`` (or source path) is explained in this folder already."""
        return self._key_of(key, strict=False) in self._done

    def todo(self) -> list[InputFile]:
        """The inputs still to explain, in input order (done ones are left out)."""
        return [f for f in self.inputs if f.key not in self._done]

    def done_before(self) -> list[InputFile]:
        """The inputs skipped because an earlier run explained them."""
        return [f for f in self.inputs if f.key in self._done]

    def record(self, key: str) -> dict[str, Any]:
        """The manifest record of one input (empty if none)."""
        return dict(self.images.get(self._key_of(key, strict=False), {}))

    def input_for(self, source: str) -> InputFile:
        """The input an outcome belongs to, by its ``source`` path or key."""
        return self._by_key[self._key_of(source)]

    def _key_of(self, key_or_source: Any, strict: bool = True) -> str:
        k = str(key_or_source)
        if k in self._by_key:
            return k
        if k in self._by_source:
            return self._by_source[k].key
        if strict:
            raise KeyError(f"{k}: not an input of this run")
        return k

    # ------------------------------------------------------------------ writing
    def save(self, exp: Any, key: str, *, outline: bool | None = None, seconds: float = 0.0,
             meta: dict[str, Any] | None = None) -> dict[str, str]:
        """Write one image's files (all or none) and record it as done.

        The files are written into a temporary folder inside the run folder, then renamed
        into place together with SIGINT/SIGTERM held off, then the manifest is rewritten.

        Returns
        -------
        dict[str, str]
            The report's links: label -> path relative to the folder.

        Raises
        ------
        SaveError
            A file could not be written (``"could not write PATH: reason"``); no temporary
            file is left and none of this image's new files stays.
        """
        from capshap.viz.plots import plot, plot_grid, save_figure

        key = self._key_of(key)
        f = self._by_key[key]
        stem = self.stems[key]
        final = {s: self.path / (stem + s) for s in SUFFIXES if s != "_grid.png" or self.grid is not None}
        started = _now()
        target = final[".npz"]
        replaced: list[Path] = []
        tmpdir: Path | None = None
        before = self.images.get(key)
        try:
            tmpdir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.path))
            tmp = {s: tmpdir / ("x" + s) for s in final}
            exp.save(tmpdir / "x")
            target = final[".png"]
            fig = plot(exp, outline=outline)
            save_figure(fig, tmp[".png"])
            if self.grid is not None:
                target = final["_grid.png"]
                save_figure(plot_grid(exp, self.grid), tmp["_grid.png"])
            target = final[".npz"]
            final[".npz"].parent.mkdir(parents=True, exist_ok=True)
            links = {"PNG": f"{stem}.png", "JSON": f"{stem}.json", "NPZ": f"{stem}.npz"}
            if self.grid is not None:
                links["grid"] = f"{stem}_grid.png"
            rec = {
                "name": f.name, "source": str(f.path), "stem": stem, "status": "done", "error": None, "stage": None,
                "files": [(stem + s) for s in final], "links": links, "caption": str(exp.caption),
                "evaluations": int(exp.n_evals), "seconds": round(float(seconds), 3), "started": started,
            }
            if self.html:  # built before the commit: a done image always has its entry
                self._add_entry(key, exp, rec)
            with deferred_interrupts():
                for s in (".npz", ".json", ".png", "_grid.png"):
                    if s in final:
                        target = final[s]
                        os.replace(tmp[s], final[s])
                        replaced.append(final[s])
                target = self.path / MANIFEST
                rec["finished"] = _now()
                self.images[key] = rec
                self._done.add(key)
                self._wrote = True
                self._write_manifest()
        except OSError as e:
            self._done.discard(key)
            self._entries.pop(key, None)
            if before is None:
                self.images.pop(key, None)
            else:
                self.images[key] = before
            for p in replaced:
                with contextlib.suppress(OSError):
                    p.unlink()
            raise SaveError(f"could not write {target}: {_why(e)}") from None
        except BaseException:
            if key not in self._done:
                self._entries.pop(key, None)
            raise
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return links

    def record_failure(self, key: str, error: str, stage: str = "") -> None:
        """Record that the input ``key`` (or source path) failed, with why; it is redone
        by the next run into this folder. The manifest is rewritten (a write error is
        logged, not raised)."""
        key = self._key_of(key)
        f = self._by_key[key]
        self._done.discard(key)
        self._entries.pop(key, None)
        self.images[key] = {
            "name": f.name, "source": str(f.path), "stem": self.stems[key], "status": "failed",
            "error": str(error), "stage": stage or None, "files": [], "finished": _now(),
        }
        self._wrote = True
        try:
            self._write_manifest()
        except OSError as e:
            logger.error("could not write %s: %s", self.path / MANIFEST, _why(e))

    def _write_manifest(self) -> None:
        data = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "capshap": self.version,
            "created": self.created,
            "updated": _now(),
            "settings": _json_norm(self.settings.to_dict()),
            "images": self.images,
        }
        atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False, default=str), fsync=True)

    def _add_entry(self, key: str, exp: Any, rec: dict[str, Any]) -> None:
        from capshap.viz.report import Report

        scratch = Report(self.title, thumb_side=THUMB_SIDE)  # thumbnails: the page stays light
        links = rec.get("links") if isinstance(rec.get("links"), dict) else None
        meta = {"evaluations": rec.get("evaluations", exp.n_evals), "s": f"{float(rec.get('seconds') or 0):.1f}"}
        try:
            scratch.add(exp, links=links, meta=meta)
        except Exception as e:  # a report entry must never lose the run
            logger.warning("index.html: left out %s: %s", rec.get("name"), e)
            return
        self._entries[key] = scratch.entries[0]

    def _order(self) -> list[str]:
        keys = [f.key for f in self.inputs]
        return keys + [k for k in self.images if k not in self._by_key]

    def write_index(self) -> Path | None:
        """Rewrite ``index.html`` (atomically) with every done image of the folder and
        every failure; returns its path (None with ``html=False`` or nothing to list)."""
        if not self.html:
            return None
        from capshap.viz.report import Report

        rep = Report(self.title, per_page=PER_PAGE, thumb_side=THUMB_SIDE)
        if (self.path / "summary.html").exists():
            rep.extra_links["words across the run"] = "summary.html"
        for k in self._order():
            if k in self._entries and k in self._done:
                rep.entries.append(self._entries[k])
            elif self.images.get(k, {}).get("status") == "failed":
                rec = self.images[k]
                rep.failures.append((str(rec.get("name")), str(rec.get("error") or "")))
        if not rep.entries and not rep.failures:
            return None
        return rep.write(self.path / INDEX)  # index.html, index-2.html, ... (atomic each)

    def done_explanations(self) -> Iterator[Any]:
        """The saved explanations of every done image, loaded one at a time (unreadable
        ones are skipped with a warning)."""
        from capshap.explanation import Explanation

        for k in self._order():
            rec = self.images.get(k, {})
            if k in self._done and rec.get("stem"):
                try:
                    yield Explanation.load(self.path / str(rec["stem"]))
                except (OSError, ValueError) as e:
                    logger.warning("summary: left out %s: %s", rec.get("name"), e)

    def close(self) -> None:
        """Release the lock. A session that recorded nothing (a usage error after
        :meth:`open`) removes the lock file and the folder it created, if empty."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        tidy = not self._wrote
        if tidy and self._new_lock:
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink()  # waiters re-check the file they locked (see _lock)
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if tidy and self._new_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
