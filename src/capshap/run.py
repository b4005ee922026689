"""The run owner: settings and inputs in, outcomes (and, given a folder, a run folder) out.

One path for the Python API, the CLI and every runner::

    Settings (+ objects passed by hand) -> Plan.of: validated once, before any model or image
    -> the runner from the registry (serial, in flight, Ray, ...) -> outcome_of per image
    -> with out=: the run folder (saves, manifest, resume, index, summary, interrupts)

:class:`Run` owns all of it; :func:`explain` is the public API on top of it, and the CLI
is options -> :class:`~capshap.settings.Settings` -> :class:`Run`. The per-image job lives
in :mod:`capshap.job` and the runners in :mod:`capshap.runners`; neither imports this
module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from capshap import images as _images
from capshap.explanation import Explanation
from capshap.interfaces import MaskerLike, Scorer
from capshap.job import (
    ImageInput,
    Outcome,
    Plan,
    Prepared,
    explain_array,
    inputs_from,
    is_path_list,
)
from capshap.masking import Fill
from capshap.progress import Bars, wants_bars
from capshap.regions import TreeSpec
from capshap.runners import runner_for
from capshap.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["explain", "explain_image", "Run", "FolderOptions"]

_SETTING_NAMES = {f.name for f in fields(Settings)}


@dataclass(frozen=True)
class FolderOptions:
    """How a run writes its run folder (none of these change the values).

    overwrite: explain every image again even if the folder holds a run (with the same or
    other settings). adopt: write into a folder that holds files capshap did not write
    (they are never overwritten; outputs that would take their names get other names).
    wait_lock: wait for another run writing the folder instead of
    stopping. html: write index.html. grid: also write NAME_grid.png with the first N
    masked images (or "all"). outline: draw leaf segments' outlines (None: for segment
    trees). title: index.html's title.
    """

    overwrite: bool = False
    adopt: bool = False
    wait_lock: bool = False
    html: bool = True
    grid: int | str | None = None
    outline: bool | None = None
    title: str = "capshap explanations"


class Run:
    """One run: its inputs, its validated plan, its runner and, given ``out``, its run folder.

    Parameters
    ----------
    images
        A path (file or folder), a list of paths, arrays (H, W, 3) or PIL images.
    settings
        The run's :class:`Settings` (default: ``Settings()``).
    captioner, scorer, tree, mask, masker
        Objects that replace the matching spec of ``settings`` (see :meth:`Plan.of`).
    recursive
        Also look for images in subfolders.
    out
        A run folder to write (files only): per image NAME.npz/.json/.png, index.html,
        manifest.json, summary.json/.html; a second run into it resumes (done images are
        skipped, failed ones redone).
    folder
        :class:`FolderOptions` of the run folder.
    progress
        Progress bars: True, False, or None (only when a person is watching).
    notebook
        Force (True) or forbid (False) notebook progress widgets; None: detect.
    on_wait
        Called with a message when ``out`` is locked by another run and ``wait_lock`` waits.

    Raises
    ------
    ValueError
        A bad setting, naming it, before any model is built or any image is loaded.

    Examples
    --------
    >>> run = Run("examples/", Settings(max_evals=100), out="runs/x")     # doctest: +SKIP
    >>> for outcome in run.outcomes():                                     # doctest: +SKIP
    ...     print(outcome.name, outcome.caption or outcome.error)
    """

    def __init__(
        self,
        images: Any,
        settings: Settings | None = None,
        *,
        captioner: Any = None,
        scorer: Any = None,
        tree: Any = None,
        mask: Any = None,
        masker: MaskerLike | None = None,
        recursive: bool = False,
        out: str | Path | None = None,
        folder: FolderOptions | None = None,
        progress: bool | None = None,
        notebook: bool | None = None,
        on_wait: Callable[[str], None] | None = None,
    ):
        self.plan = Plan.of(settings if settings is not None else Settings(), captioner=captioner, scorer=scorer,
                            tree=tree, mask=mask, masker=masker)
        self.runner = runner_for(self.settings.runner)
        self.images, self.recursive = images, recursive
        self.folder_options = folder or FolderOptions()
        self.progress, self.notebook, self.on_wait = progress, notebook, on_wait
        self.out = Path(out).expanduser() if out is not None else None
        self.folder: Any = None  # the RunFolder, once opened
        self.interrupted: KeyboardInterrupt | None = None
        self.unfinished: Outcome | None = None  # the outcome being saved when an interrupt came
        self.index_page: Path | None = None
        self._prepared = Prepared(self.plan)
        self._position: dict[tuple[str | None, str], int] = {}
        if self.out is not None:
            if not is_path_list(images):
                raise ValueError("out= writes a run folder of image files: give paths (files or folders), "
                                 "not arrays")
            for p in [images] if isinstance(images, (str, Path)) else images:
                if not Path(p).expanduser().exists():
                    raise FileNotFoundError(f"{p}: no such file or folder")
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"--out {out}: exists and is not a folder")
            from capshap.runfolder import list_inputs

            self.files = list_inputs([images] if isinstance(images, (str, Path)) else list(images), recursive)
            self.plan.check_inputs([f.name for f in self.files])

    @property
    def settings(self) -> Settings:
        """The run's settings as recorded (objects passed by hand show as None / "custom")."""
        return self.plan.settings

    # ------------------------------------------------------------------ the folder

    def open_folder(self) -> Any:
        """Create (if needed), lock and read the run folder; returns the
        :class:`~capshap.runfolder.RunFolder`. Raises RunFolderError (it is in use, holds
        other settings, or cannot be written). Called by :meth:`outcomes` when needed."""
        if self.folder is None and self.out is not None:
            from capshap.runfolder import RunFolder

            o = self.folder_options
            self.folder = RunFolder.open(self.out, self.settings, self.files, overwrite=o.overwrite,
                                         adopt=o.adopt, wait_lock=o.wait_lock, html=o.html, grid=o.grid, title=o.title,
                                         on_wait=self.on_wait)
        return self.folder

    def close(self) -> None:
        """Release the run folder's lock (the run is over)."""
        if self.folder is not None:
            self.folder.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ running

    def _inputs(self, todo: list[Any] | None) -> tuple[Iterable[ImageInput], int]:
        if todo is not None:
            from capshap.runfolder import load_inputs

            source: Iterable[ImageInput] = load_inputs(todo, self.settings)
            n = len(todo)
        elif is_path_list(self.images):  # files load lazily, one at a time; count them without loading
            source = inputs_from(self.images, self.settings, self.recursive)
            n = len(_images.image_names(self.images, self.recursive))
        else:
            source = list(inputs_from(self.images, self.settings, self.recursive))
            n = len(source)
        return self._tagged(source), n

    def _tagged(self, items: Iterable[ImageInput]) -> Iterator[ImageInput]:
        """``items``, each one's input position remembered (parallel runners yield in
        completion order; :meth:`explanations` restores input order)."""
        for i, item in enumerate(items):
            self._position[(item.source, item.name)] = i
            yield item

    def outcomes(self) -> Iterator[Outcome]:
        """Run: an :class:`Outcome` per input not done before (in the runner's order).

        With a run folder, each explanation is saved as it comes (a failed save turns its
        Outcome into a ``"saving"`` failure), failures are recorded for the next run, and
        index.html is rewritten after each image; at the end the summary is written. An
        interrupt (Ctrl-C, SIGTERM raised as KeyboardInterrupt) leaves the folder
        consistent, sets :attr:`interrupted` and is raised again.
        """
        rf = self.open_folder()
        todo = rf.todo() if rf is not None else None
        if rf is not None and rf.done_before():
            logger.info("%d of %d images were explained by an earlier run into %s; skipping them",
                        len(rf.done_before()), len(rf.inputs), rf.path)
        items, n = self._inputs(todo)
        bars = Bars(n, wants_bars(self.progress) if self.progress is None else self.progress,
                    notebook=self.notebook)
        current: Outcome | None = None
        try:
            for res in self.runner(self._prepared, items, n_images=n, bars=bars):
                current = res
                if rf is not None:
                    self._keep(rf, res)
                    self._write_index()
                current = None
                yield res
        except KeyboardInterrupt as e:
            self.interrupted = e
            if current is not None and current.ok and rf is not None:
                # exact: explained only when all its files are written (the signal may come after)
                if not (current.source is not None and rf.is_done(current.source)):
                    current.error, current.stage = "interrupted before its files were written", "saving"
            self.unfinished = current
            raise
        finally:
            bars.close()
            if rf is not None:
                if self.interrupted is None and len(rf.inputs) > 1:
                    self._write_summary()
                self.index_page = self._write_index()

    def _keep(self, rf: Any, res: Outcome) -> None:
        from capshap.runfolder import SaveError

        if not res.ok:
            rf.record_failure(res.source, res.error or "", res.stage)
            return
        assert res.explanation is not None
        try:
            rf.save(res.explanation, res.source, outline=self.folder_options.outline, seconds=res.seconds)
        except SaveError as exc:
            res.error, res.stage = f"saving failed: {exc}", "saving"
            rf.record_failure(res.source, res.error, "saving")

    def _write_index(self) -> Path | None:
        try:
            return self.folder.write_index()
        except OSError as e:
            logger.error("could not write %s: %s", self.folder.path / "index.html", e.strerror or e)
            return None

    def _write_summary(self) -> None:
        """summary.json and summary.html: per-word statistics across the run's images (with
        the share of credit inside the masks of a masks:FOLDER tree)."""
        from capshap.grounding import Thresholds
        from capshap.summary import Summary, mask_regions, write_summary

        rf = self.folder
        s = self.settings
        kind, _, arg = s.tree.partition(":")
        summary = Summary(mask_regions(arg) if kind == "masks" and arg else None,
                          thresholds=Thresholds(s.grounded_above, s.contradicted_below))
        try:
            for _, stem, exp in rf.done_explanations():
                summary.add(exp, link=f"{stem}.png")
            if summary.to_dict().get("images"):
                write_summary(summary.to_dict(), rf.path)
        except (OSError, ValueError) as e:
            logger.error("could not write %s: %s", rf.path / "summary.json", e)

    def explanations(self, on_error: str = "skip") -> list[Explanation]:
        """Run to the end; the explanations in input order (with a run folder, those of
        earlier runs into it too, loaded from it).

        on_error: "skip" logs an image that cannot be loaded, captioned, scored or saved
        with its name and the reason and goes on; "raise" stops at it.
        """
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        got: list[tuple[int, Explanation]] = []
        try:
            for res in self.outcomes():
                if res.ok:
                    assert res.explanation is not None
                    got.append((self._position.get((res.source, res.name), len(self._position)), res.explanation))
                    for note in res.notes:
                        logger.warning("%s: %s", res.name, note)
                    continue
                if on_error == "raise":
                    raise res.exception if res.exception is not None else ValueError(f"{res.name}: {res.error}")
                logger.error("skipped %s: %s", res.name, res.error)
            if self.folder is not None:
                return self._folder_explanations([e for _, e in got])
        finally:
            self.close()
        return [exp for _, exp in sorted(got, key=lambda t: t[0])]

    def _folder_explanations(self, fresh: list[Explanation]) -> list[Explanation]:
        """Every done image of this run's inputs, in input order: this run's explanations
        as they are, earlier runs' loaded from their files."""
        rf = self.folder
        inputs = {f.key for f in rf.inputs}
        by_source = {str(e.params.get("source")): e for e in fresh}
        return [exp for key, _, exp in rf.done_explanations(by_source) if key in inputs]


# -------------------------------------------------------------------------------- API


def explain(
    images: Any,
    captioner: Any = None,
    scorer: Any = None,
    *,
    settings: Settings | None = None,
    tree: Any = None,
    mask: Any = None,
    masker: MaskerLike | None = None,
    progress: bool | None = None,
    on_error: str = "skip",
    recursive: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    **options: Any,
) -> list[Explanation]:
    """Caption and explain images; the defaults are the SHAP notebook's.

    Parameters
    ----------
    images
        A path (file or folder), a list of paths, arrays (H, W, 3) or PIL images.
    captioner
        A :class:`~capshap.interfaces.Captioner`, a function image -> str, or None for
        ``settings.captioner`` (default: the embedded offline EfficientNet-Lite0
        "a photo of a {label}").
    scorer
        A spec (``"auto"``, ``"own"``, ``"presence"``, ``"surrogate:LM"``), a factory with
        ``bind(caption)``, or a bound :class:`~capshap.interfaces.Scorer`. None: ``auto``,
        the captioner's own head where it has one, else word presence.
    settings
        A :class:`~capshap.settings.Settings`; keyword ``options`` (``max_evals=100``,
        ``mask="blur(16,16)"``, ``fixed_context=0``, ``caption="a dog"``,
        ``contrast="a cat"``, ``runner="in_flight"``, ``in_flight=4``, ...) override it.
    tree, mask, masker
        Objects instead of specs: a :class:`~capshap.regions.tree.Tree`, label map or mask
        list; a background image (H, W, 3); your own masker (one image).
    progress
        Progress bars: True, False, or None (only when a person is watching: a terminal or
        a notebook).
    on_error
        "skip" (default) logs an image that cannot be loaded, captioned or scored with its
        name and the reason and goes on with the others; "raise" stops at it.
    recursive
        Also look for images in subfolders.
    out, overwrite
        Write the run folder the CLI writes (``capshap explain --out``): NAME.npz/.json/.png
        per image, index.html, manifest.json, summary.*; called again it resumes (images
        done are loaded, not recomputed). ``overwrite`` explains everything again.

    Returns
    -------
    list[Explanation]
        One per image explained, in input order (``exp.name`` says which).

    Raises
    ------
    ValueError
        A bad setting (naming it), before any image is loaded or captioned.

    Examples
    --------
    >>> exps = capshap.explain("examples/", max_evals=100)            # doctest: +SKIP
    >>> exps = capshap.explain(img, captioner=lambda im: "a cat")     # doctest: +SKIP
    >>> exps = capshap.explain("examples/", out="runs/x")             # doctest: +SKIP
    """
    unknown = sorted(set(options) - _SETTING_NAMES)
    if unknown:
        raise TypeError(f"explain() got unknown settings {', '.join(unknown)}; see capshap.Settings")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    base = settings or Settings()
    s = base.replace(**options) if options else base
    run = Run(images, s, captioner=captioner, scorer=scorer, tree=tree, mask=mask, masker=masker,
              recursive=recursive, out=out, folder=FolderOptions(overwrite=overwrite), progress=progress)
    return run.explanations(on_error)


def explain_image(
    image: np.ndarray,
    scorer: Scorer,
    *,
    mask: Fill = "inpaint_ns",
    max_evals: int = 300,
    batch_size: int = 50,
    fixed_context: int | None = None,
    tree: TreeSpec = "axis",
    channels: bool = False,
    n_segments: int = 64,
    seed: int | None = 0,
    name: str = "image",
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    masker: MaskerLike | None = None,
    settings: Settings | None = None,
    render_size: tuple[int, int] | None = None,
    tolerance: float = 0.0,
) -> Explanation:
    """Explain the caption a bound ``scorer`` holds on one image (no captioner involved).

    Parameters
    ----------
    image : (H, W, 3) uint8
    scorer : Scorer
        Bound to the caption to explain; ``score(images (N, H, W, 3)) -> (N, T)``.
    mask, max_evals, batch_size, fixed_context, tree, channels, n_segments, seed
        As in :class:`~capshap.settings.Settings`; ``tree`` may also be a :class:`Tree`,
        an (H, W) label map or a list of masks, ``mask`` a background image (H, W, 3).
    masker : optional
        Your own masker (``image``, ``tree``, ``render(coalitions)``); then ``mask`` and
        ``tree`` are ignored and the masker's tree is used.
    settings : Settings, optional
        The other settings recorded with the explanation (its engine fields are replaced
        by the keywords above).
    render_size : (h, w), optional
        Render masked images at this size (the captioner's input size) instead of the
        image's; the tree and the values stay at full size. None: full size (shap parity).
    tolerance : float
        Adaptive budget (see :func:`capshap.owen.owen_values`); ``max_evals`` is then the cap.

    Returns
    -------
    Explanation
        values (H, W, T) float32, or (H, W, 3, T) with ``channels=True`` on the axis tree.
    """
    from capshap.owen import check_params

    check_params(max_evals, batch_size, fixed_context, tolerance)
    if masker is not None:
        mask_text = "custom"
    elif isinstance(mask, np.ndarray):
        mask_text = "image"
    else:
        mask_text = mask if isinstance(mask, str) else ",".join(str(v) for v in mask) if isinstance(
            mask, (tuple, list)) else str(mask)
    base = settings if settings is not None else Settings(captioner=None, scorer=None)
    s = base.replace(mask=mask_text, max_evals=int(max_evals), batch_size=int(batch_size),
                     fixed_context=fixed_context, seed=seed, tree=tree if isinstance(tree, str) else "custom",
                     n_segments=int(n_segments), channels=bool(channels), tolerance=float(tolerance))
    return explain_array(image, scorer, s, tree=tree, fill=mask, masker=masker, render_size=render_size,
                         name=name, progress=progress, threads=threads)


def make_scorer(scorer: Any, captioner: Any, caption: str) -> Scorer:
    """Deprecated (0.1): use :func:`capshap.scoring.bind_scorer`."""
    from capshap.scoring import bind_scorer

    warnings.warn("capshap.make_scorer is deprecated; use capshap.scoring.bind_scorer(scorer, captioner, caption)",
                  DeprecationWarning, stacklevel=2)
    return bind_scorer("own" if scorer is None else scorer, captioner, caption)
