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
- **ownership**: the folder owns a namespace (:class:`Namespace`): every output name of
  every input (``STEM`` + each of :data:`SUFFIXES`) is checked against the others, against
  the run-level names (:data:`RUN_FILES`: index pages, summary, metrics, manifest, lock) and
  against files capshap did not write, before any work; a folder with files capshap did not
  write and no manifest is refused unless ``adopt``. Temporaries carry the run's id
  (``.capshap-tmp-RUNID-...``); only those of runs the manifest lists are cleaned.
- **nothing followed or trusted**: the lock is created with ``O_EXCL`` and opened with
  ``O_NOFOLLOW`` (a FIFO, device or symbolic link there is an error); the manifest is read
  only as a regular file of bounded size and nesting, and checked against a schema
  (:func:`check_manifest`: types, stems that are safe names inside the folder) before it
  is trusted; outputs are renamed into place (never written through a link).
- **pairs**: each explanation's ``.json`` names the run and the SHA-256 of its ``.npz``
  (field ``pair``); the manifest record holds the same, so files of two runs side by side
  are never taken for one explanation (checked on load and on resume: such a pair is redone).
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
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capshap.atomic import atomic_write_text
from capshap.runnames import (  # noqa: F401 - names and the manifest's schema, re-exported
    _FORMAT,
    _FORMAT_VERSION,
    NAME_MAX,
    RUN_FILES,
    SUFFIXES,
    Manifest,
    Namespace,
    _hash,
    _tagged,
    base_stem,
    check_manifest,
    check_stem,
    fit_name,
)
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
    "RUN_FILES",
    "SUFFIXES",
    "InputFile",
    "Namespace",
    "RunFolder",
    "RunFolderError",
    "SaveError",
    "base_stem",
    "check_manifest",
    "check_overwrite",
    "check_stem",
    "deferred_interrupts",
    "fit_name",
    "list_inputs",
    "load_inputs",
    "written_by_capshap",
]

logger = logging.getLogger(__name__)

MANIFEST, INDEX, LOCK = "manifest.json", "index.html", ".capshap.lock"
#: index.html shows this many images a page (index-2.html, ... hold the rest) ...
PER_PAGE = 100
#: ... as thumbnails of at most this many pixels a side.
THUMB_SIDE = 320
_TMP_PREFIX = ".capshap-tmp-"
#: Largest manifest.json read, in bytes (about 100 000 images).
MAX_MANIFEST_BYTES = 64 * 1024**2
#: Deepest nesting of lists and objects accepted in manifest.json.
MAX_MANIFEST_DEPTH = 32
_MAX_RUNS = 100  # run ids remembered in the manifest (whose temporaries may be cleaned)


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


def _is_plain(p: Path) -> bool:
    """A regular file, not a symbolic link."""
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


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
        self.run_id = secrets.token_hex(8)
        """This session's id: in its temporaries' names, the manifest and each saved pair."""
        self._tmp = f"{_TMP_PREFIX}{self.run_id}-"
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
        self._registered = False  # ... and wrote its run id into the manifest
        self._runs: list[str] = []  # ids of the runs that wrote this folder (their temporaries are ours)
        self._owned_names: set[str] = set()  # existing files the manifest accounts for
        self._owned: set[str] = set()  # ... lower-cased
        self._mine: set[str] = set()  # stems recorded in the manifest (their files are theirs)
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
        adopt: bool = False,
        wait_lock: bool = False,
        html: bool = True,
        grid: Any = None,
        title: str = "capshap explanations",
        on_wait: Callable[[str], None] | None = None,
    ) -> RunFolder:
        """Create (if needed), probe, lock and read the run folder ``out`` for ``inputs``.

        Parameters
        ----------
        overwrite : bool
            Explain every input again (the manifest's records are not resumed; its
            ``summary.*`` is removed); other settings are then accepted.
        adopt : bool
            Use a folder that holds files capshap did not write (and no manifest). Those
            files are still never written over: outputs that would take their names get
            other names, and a run-level name (``index.html`` ...) they hold is refused.

        Raises
        ------
        RunFolderError
            ``out`` is not a folder or not writable, another run holds it (unless
            ``wait_lock``: then this waits, calling ``on_wait`` once with a message), the
            lock is not a regular file, its manifest is damaged or has other settings
            (unless ``overwrite``), it holds files capshap did not write (unless ``adopt``).
        """
        from capshap import __version__

        path = Path(out).expanduser()
        if path.is_symlink() and not path.is_dir():
            raise RunFolderError(f"{out}: is a symbolic link to no folder; choose another --out")
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
            manifest = rf._read_manifest(overwrite)
            rf._probe()
            rf._clean_stale()
            inputs = list(inputs)
            if not os.path.lexists(path / MANIFEST):  # (a damaged one with --overwrite: the folder is capshap's)
                rf._check_foreign(inputs, adopt)
            previous = rf._check_settings(manifest, overwrite)
            rf._plan(inputs, manifest, previous)
            if overwrite and manifest is not None:
                rf._remove_summary()
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
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(1000):  # the lock file vanishes only when a holder that did nothing leaves
            try:
                self.path.mkdir(parents=True, exist_ok=True)  # a holder that did nothing may remove it
                try:
                    fd, created = os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644), True
                except FileExistsError:
                    fd, created = os.open(lock, flags), False
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno == errno.ELOOP or os.path.islink(lock):
                    raise RunFolderError(f"{lock}: is a symbolic link, which capshap never follows; remove it "
                                         "(it is only the run's lock) or choose another --out") from None
                raise RunFolderError(f"cannot write into the output folder {self.path}: {_why(e)} ({lock})") from None
            try:
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise RunFolderError(f"{lock}: is not a regular file (a FIFO, device or folder); remove it "
                                             "(it is only the run's lock) or choose another --out")
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
                        same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:
                        os.close(fd)
                        continue
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
                except OSError as e:  # a full disk, a read-only or vanished folder
                    raise RunFolderError(f"cannot write the lock {lock}: {_why(e)}") from None
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                if created:
                    with contextlib.suppress(OSError):
                        lock.unlink()
                raise
            self._lock_fd, self._new_lock = fd, created
            return
        raise RunFolderError(f"{lock}: keeps vanishing; is another program removing it?")

    def _probe(self) -> None:
        try:
            fd, probe = tempfile.mkstemp(prefix=self._tmp + "probe-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                os.unlink(probe)
        except OSError as e:
            raise RunFolderError(f"cannot write into the output folder {self.path}: {_why(e)}") from None

    def _provably_ours(self, name: str) -> bool:
        """A temporary named with the id of a run the manifest lists (or this one)."""
        if not name.startswith(_TMP_PREFIX):
            return False
        rid = name[len(_TMP_PREFIX):len(_TMP_PREFIX) + 16]
        return name[len(_TMP_PREFIX) + 16:len(_TMP_PREFIX) + 17] == "-" and (rid in self._runs or rid == self.run_id)

    def _clean_stale(self) -> None:
        """Temporaries of earlier runs into this folder that were killed (we hold the lock:
        nobody else writes). Only those carrying the id of a run the manifest lists: any
        other file, whatever its name, is left alone."""
        for entry in os.scandir(self.path):
            if entry.name.startswith(self._tmp) or not self._provably_ours(entry.name):
                continue
            logger.debug("removing %s, left by an interrupted run", entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _check_foreign(self, inputs: list[InputFile], adopt: bool) -> None:
        """A folder without a manifest may hold the lock, capshap's temporaries and this
        run's inputs; any other file is the user's: refused, naming it, unless ``adopt``.
        Run-level names (index.html, summary.*, ...) held by such files are refused always."""
        inside = {os.path.abspath(f.path) for f in inputs}
        names = sorted(e.name for e in os.scandir(self.path))
        for name in names:
            if name == LOCK or name.startswith(_TMP_PREFIX):
                continue
            full = os.path.abspath(self.path / name)
            if full in inside or any(p.startswith(full + os.sep) for p in inside):
                continue
            if RUN_FILES.match(name):
                raise RunFolderError(
                    f"{self.path / name}: was not written by capshap (the folder has no {MANIFEST}) and capshap "
                    "never overwrites such a file; move it away or choose another --out")
            if not adopt:
                raise RunFolderError(
                    f"{self.path} holds {printable(name, 120)}, which capshap did not write (the folder has no "
                    f"{MANIFEST}); choose a new or empty --out, or add --adopt to write into it anyway "
                    "(files capshap did not write are never overwritten)")

    def _read_manifest(self, overwrite: bool) -> Manifest | None:
        """The checked manifest, or None without one (or, with ``overwrite``, a damaged one)."""
        from capshap.savedfile import read_json

        mf = self.path / MANIFEST
        if not os.path.lexists(mf):
            return None
        try:
            man = check_manifest(read_json(mf, MAX_MANIFEST_BYTES, "manifest", follow=False,
                                           max_depth=MAX_MANIFEST_DEPTH))
        except (OSError, ValueError) as e:
            why = printable(str(e).removeprefix(f"{mf}: "), 300)
            if overwrite:
                logger.warning("%s: unreadable (%s); starting over (--overwrite)", mf, why)
                return None
            raise RunFolderError(f"{mf} is damaged ({why}); move it away, choose another --out, "
                                 "or add --overwrite to start over") from None
        self._runs = man.runs[-_MAX_RUNS:]
        self._mine = {rec["stem"].lower() for rec in man.images.values()}
        names = {n for rec in man.images.values() for n in Namespace.derived(rec["stem"])} | set(man.owned)
        self._owned_names = {n for n in names if os.path.lexists(self.path / n)}
        self._owned = {n.lower() for n in self._owned_names}
        return man

    def _check_settings(self, man: Manifest | None, overwrite: bool) -> dict[str, dict[str, Any]]:
        """The records to resume (none with ``overwrite``); other settings are refused."""
        if man is None or overwrite:
            return {}
        self.created = man.created or self.created
        mine = _json_norm(self.settings.engine_key())
        stored = man.settings
        try:
            theirs = _json_norm(Settings.from_dict(stored).engine_key())
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
            theirs = {k: v for k, v in stored.items() if k not in ("cache_dir", "batch_size_model")}
        if mine != theirs:
            diffs = [
                f"{_option(k)} (folder: {printable(repr(theirs.get(k)), 80)}, now: {printable(repr(mine.get(k)), 80)})"
                for k in sorted(set(mine) | set(theirs), key=str)[:200] if mine.get(k) != theirs.get(k)
            ]
            raise RunFolderError(
                f"{self.path} holds a run with other settings: {'; '.join(diffs[:10])}. Use the same settings "
                "to resume it, choose another --out, or add --overwrite to explain every image again")
        return dict(man.images)

    def _remove_summary(self) -> None:
        """``--overwrite``: the previous run's summary.* describes images no longer there."""
        for name in ("summary.json", "summary.html"):
            p = self.path / name
            if os.path.lexists(p) and not p.is_dir():
                logger.info("removing %s of the previous run (--overwrite)", p)
                with contextlib.suppress(OSError):
                    p.unlink()

    def _plan(self, inputs: list[InputFile], man: Manifest | None, previous: dict[str, dict[str, Any]]) -> None:
        """Drop inputs that are this folder's own outputs; give every input a stem whose
        names are free (checked against all others and the reserved names) before any work."""
        ours = {os.path.normcase(os.path.abspath(self.path / n)).lower() for n in self._owned}
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
        ns = Namespace(self.path, self._owned)

        def hits_input(stem: str) -> str | None:
            paths = [os.path.normcase(os.path.abspath(self.path / n)).lower() for n in Namespace.derived(stem)]
            return next((p for p in paths if p in input_files), None)

        records = man.images if man is not None else {}
        for rec in records.values():  # every recorded stem keeps its names (resumed or not)
            ns.claim(rec["stem"])
        for key, rec in records.items():
            stem = rec["stem"]
            if key in self._by_key and hits_input(stem) is None and not any(
                    os.path.islink(self.path / d) for d in Namespace.parents(stem)):
                self.stems[key] = stem
        for f in kept:
            if f.key in self.stems:
                continue
            base = cand = base_stem(f.name)
            if ns.parent_conflict(base) is not None:  # its sub-folder cannot be written into: flatten
                base = cand = fit_name(base.replace("/", "_"))
            n = 0
            while (hit := ns.conflict(cand)) is not None:
                if hits_input(cand) is not None:
                    logger.warning("%s: its outputs would overwrite an input file; writing them as %s.*",
                                   f.path, self.path / _tagged(base, _hash(f.key)))
                elif n == 0 and os.path.lexists(self.path / hit) and hit.lower() not in self._owned:
                    logger.warning("%s: %s exists and was not written by capshap; writing the outputs as %s.*",
                                   f.path, self.path / hit, self.path / _tagged(base, _hash(f.key)))
                cand = _tagged(base, _hash(f.key + (f"#{n}" if n else "")))
                n += 1
                if n > 1000:  # pragma: no cover - 1000 hash collisions
                    raise RunFolderError(f"{f.path}: no free output name in {self.path}")
            ns.claim(cand)
            self.stems[f.key] = cand

    def _check_previous(self, previous: dict[str, dict[str, Any]]) -> None:
        """Which recorded images are really done: status done, same stem, every file there
        (plain files, not links) and loadable, the .npz and .json one pair of the recorded
        run, the same engine settings; their report entries are rebuilt."""
        from capshap.explanation import Explanation
        from capshap.savedfile import MAX_JSON_BYTES, read_json

        mine = _json_norm(self.settings.engine_key())
        for key, rec in previous.items():
            if rec.get("status") != "done":
                continue
            stem = rec["stem"]
            if key in self.stems and self.stems[key] != stem:
                continue
            name = str(rec.get("name") or stem)
            files = [self.path / (stem + s) for s in (".npz", ".json", ".png")]
            if self.grid is not None and key in self._by_key:
                files.append(self.path / (stem + "_grid.png"))
            missing = [p for p in files if not _is_plain(p)]
            if missing or any(os.path.islink(self.path / d) for d in Namespace.parents(stem)):
                logger.info("redoing %s: %s is missing or not a plain file", name, (missing or files)[0])
                continue
            try:
                meta = read_json(files[1], MAX_JSON_BYTES, "saved explanation's JSON", follow=False)
                pair = meta.get("pair") if isinstance(meta, dict) else None
                want = {"run": rec["run"], "npz_sha256": rec.get("npz_sha256")} if rec.get("run") else None
                if pair != want:
                    raise ValueError(f"{files[1].name} and the manifest name different runs: the files are not "
                                     "the pair this folder recorded")
                exp = Explanation.load(self.path / stem)
            except (OSError, ValueError) as e:
                logger.warning("redoing %s: its saved explanation cannot be used (%s)", name, printable(e, 300))
                continue
            if exp.settings is None or _json_norm(exp.settings.engine_key()) != mine:
                logger.warning("redoing %s: %s.json was made with other settings", name, self.path / stem)
                continue
            self._done.add(key)
            if self.html:
                self._add_entry(key, exp, rec)

    # ------------------------------------------------------------------ queries
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

        The files are written into a temporary folder named with the run id inside the run
        folder; the JSON gets the field ``pair`` (this run's id and the SHA-256 of the
        .npz); the manifest records the image as ``saving``, the files are renamed into
        place together with SIGINT/SIGTERM held off, then the manifest records it done.

        Returns
        -------
        dict[str, str]
            The report's links: label -> path relative to the folder.

        Raises
        ------
        SaveError
            A file could not be written (``"could not write PATH: reason"``), or a file
            capshap did not write appeared at an output's name (never overwritten); no
            temporary file is left and none of this image's new files stays.
        """
        from capshap.savedfile import file_sha256
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
        mine = stem.lower() in self._mine
        try:
            if not self._registered:  # the run id is in the manifest before its first temporary
                target = self.path / MANIFEST
                self._write_manifest(fsync=False)
                self._registered = True
            tmpdir = Path(tempfile.mkdtemp(prefix=self._tmp, dir=self.path))
            tmp = {s: tmpdir / ("x" + s) for s in final}
            target = final[".npz"]
            exp.save(tmpdir / "x")
            digest = file_sha256(tmp[".npz"])
            saved = json.loads(tmp[".json"].read_text(encoding="utf-8"))
            saved["pair"] = {"run": self.run_id, "npz_sha256": digest}
            tmp[".json"].write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
            target = final[".png"]
            fig = plot(exp, outline=outline)
            save_figure(fig, tmp[".png"])
            if self.grid is not None:
                target = final["_grid.png"]
                save_figure(plot_grid(exp, self.grid), tmp["_grid.png"])
            target = final[".npz"]
            for d in Namespace.parents(stem):
                if os.path.islink(self.path / d):
                    raise SaveError(f"could not write {target}: {self.path / d} is a symbolic link, never followed")
            final[".npz"].parent.mkdir(parents=True, exist_ok=True)
            if not mine:
                there = next((p for x, p in final.items()
                              if os.path.lexists(p) and (stem + x).lower() not in self._owned), None)
                if there is not None:
                    raise SaveError(f"could not write {there}: it exists and was not written by capshap; "
                                    "not overwritten")
            links = {"PNG": f"{stem}.png", "JSON": f"{stem}.json", "NPZ": f"{stem}.npz"}
            if self.grid is not None:
                links["grid"] = f"{stem}_grid.png"
            rec = {
                "name": f.name, "source": str(f.path), "stem": stem, "status": "saving", "error": None, "stage": None,
                "files": [(stem + s) for s in final], "links": links, "caption": str(exp.caption),
                "evaluations": int(exp.n_evals), "seconds": round(float(seconds), 3), "started": started,
                "run": self.run_id, "npz_sha256": digest,
            }
            if self.html:  # built before the commit: a done image always has its entry
                self._add_entry(key, exp, rec)
            with deferred_interrupts():
                target = self.path / MANIFEST
                self.images[key] = dict(rec)  # "saving": its names are the folder's from now on
                self._mine.add(stem.lower())
                self._write_manifest(fsync=False)
                for s in (".npz", ".json", ".png", "_grid.png"):
                    if s in final:
                        target = final[s]
                        os.replace(tmp[s], final[s])
                        replaced.append(final[s])
                target = self.path / MANIFEST
                rec["status"] = "done"
                rec["finished"] = _now()
                self.images[key] = rec
                self._done.add(key)
                self._wrote = True
                self._write_manifest()
        except OSError as e:
            self._failed_save(key, before, replaced)
            raise SaveError(f"could not write {target}: {_why(e)}") from None
        except SaveError:
            self._failed_save(key, before, replaced)
            raise
        except BaseException:
            if key not in self._done:
                self._entries.pop(key, None)
            raise
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return links

    def _failed_save(self, key: str, before: dict[str, Any] | None, replaced: list[Path]) -> None:
        self._done.discard(key)
        self._entries.pop(key, None)
        if before is None:
            self.images.pop(key, None)
        else:
            self.images[key] = before
        for p in replaced:
            with contextlib.suppress(OSError):
                p.unlink()

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
        self._mine.add(self.stems[key].lower())
        self._wrote = True
        try:
            self._write_manifest()
        except OSError as e:
            logger.error("could not write %s: %s", self.path / MANIFEST, _why(e))

    def _write_manifest(self, fsync: bool = True) -> None:
        runs = [r for r in self._runs if r != self.run_id][-(_MAX_RUNS - 1):] + [self.run_id]
        recorded = {n.lower() for rec in self.images.values() for n in Namespace.derived(rec["stem"])}
        data = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "capshap": self.version,
            "created": self.created,
            "updated": _now(),
            "settings": _json_norm(self.settings.to_dict()),
            "runs": runs,
            "owned": sorted(n for n in self._owned_names if n.lower() not in recorded),
            "images": self.images,
        }
        atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False, default=str),
                          fsync=fsync, prefix=self._tmp)

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

    def done_explanations(self, fresh: Mapping[str, Any] | None = None) -> Iterator[tuple[str, str, Any]]:
        """``(key, stem, explanation)`` of every done image of the folder, this run's inputs
        first, in order. Explanations in ``fresh`` (by source path or key) are given as they
        are; the others are loaded one at a time (unreadable ones are skipped with a
        warning)."""
        from capshap.explanation import Explanation

        known = {self._key_of(k, strict=False): exp for k, exp in (fresh or {}).items()}
        for k in self._order():
            rec = self.images.get(k, {})
            if k not in self._done or not rec.get("stem"):
                continue
            exp = known.get(k)
            if exp is None:
                try:
                    exp = Explanation.load(self.path / str(rec["stem"]))
                except (OSError, ValueError) as e:
                    logger.warning("left out %s: %s", rec.get("name"), e)
                    continue
            yield k, str(rec["stem"]), exp

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


# ----------------------------------------------------------------- files of other commands


def written_by_capshap(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a plain file (not a link, FIFO or device) that capshap wrote,
    by the marks its writers leave: a PNG with ``Software: capshap`` in its text chunks, a
    JSON object of a capshap format (or ``metrics.json``'s fields), a Markdown file
    beginning ``# capshap``. Used before a command writes over an existing file: anything
    else is the user's and is not overwritten."""
    from capshap.savedfile import MAX_JSON_BYTES, read_json

    p = Path(path)
    if not _is_plain(p):
        return False
    suffix = p.suffix.lower()
    try:
        if suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:  # reads the chunks before the pixels only
                return im.format == "PNG" and str(im.info.get("Software", "")) == "capshap"
        if suffix == ".json":
            data = read_json(p, MAX_JSON_BYTES, "JSON file", follow=False)
            return isinstance(data, dict) and (str(data.get("format", "")).startswith("capshap.")
                                               or {"settings", "rows", "failures"} <= set(data))
        if suffix == ".md":
            with open(p, "rb") as f:
                return f.read(64).startswith(b"# capshap")
    except (OSError, ValueError, SyntaxError):
        return False
    return False


def check_overwrite(path: str | os.PathLike[str]) -> None:
    """Raise ValueError unless ``path`` is free or a file capshap wrote
    (:func:`written_by_capshap`); the message names the file."""
    if os.path.lexists(path) and not written_by_capshap(path):
        raise ValueError(f"{path}: exists and was not written by capshap; not overwritten (move it away or "
                         "write elsewhere with --out)")
