"""Evaluate every saved explanation of a run folder; write metrics.json and metrics.md.

Steps: find the saved explanations (``NAME.npz`` + ``NAME.json``, recursively), decide for
each how its scorer is rebuilt (:mod:`capshap.metrics.rebuild`: nothing the user did not
name is built), then per explanation load it, rebuild or bind its scorer, compute the
deletion / insertion curves (:mod:`capshap.metrics.curves`) and, with boxes, the pointing
game (:mod:`capshap.metrics.pointing`). A file that cannot be read, rebuilt or scored is
skipped and reported with the reason; the others are still evaluated and written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capshap.atomic import atomic_write_text
from capshap.explanation import Explanation, _load_settings
from capshap.interfaces import Scorer, ScorerFactory
from capshap.jsonable import jsonable as _clean
from capshap.metrics.curvecache import CurveCache
from capshap.metrics.curves import check_curve_params, deletion_insertion, nanmean
from capshap.metrics.markdown import metrics_markdown
from capshap.metrics.pointing import (
    Box,
    boxes_for,
    check_boxes,
    check_tolerance,
    load_boxes,
    lookup_boxes,
    pointing_game,
)
from capshap.metrics.rebuild import (
    RebuildRefused,
    Recipe,
    ScorerBuilder,
    Unconfirmed,
    bind_given,
    plan_recipe,
)
from capshap.metrics.tokens import pixel_values
from capshap.progress import Bars, wants_bars
from capshap.savedfile import MAX_JSON_BYTES
from capshap.settings import Settings
from capshap.text import printable

logger = logging.getLogger(__name__)

__all__ = ["evaluate_run", "NothingEvaluated", "MAX_JSON_BYTES", "credited_tokens"]

# Explanation JSON files larger than MAX_JSON_BYTES (the loader's own limit) are skipped unread.

_ROW_KEYS = (
    "deletion_auc",
    "random_deletion_auc",
    "random_deletion_auc_std",
    "insertion_auc",
    "random_insertion_auc",
    "random_insertion_auc_std",
    "deletion_auc_raw",
    "random_deletion_auc_raw",
    "insertion_auc_raw",
    "random_insertion_auc_raw",
    "deletion_beats_random",
    "insertion_beats_random",
)


# files a run folder holds besides its explanations (skipped without a word)
_RUN_FILES = frozenset({"manifest.json", "summary.json", "metrics.json"})


# what a cached curve entry must hold per token (the row fields, see curvecache)
_CURVE_KEYS = _ROW_KEYS


class NothingEvaluated(ValueError):
    """No explanation of the run could be evaluated; ``failures`` says why for each file."""

    def __init__(self, run_dir: Path, failures: list[dict[str, str]]):
        self.failures = failures
        first = f"{printable(failures[0]['file'], 120)}: {printable(failures[0]['reason'], 300)}" if failures else "none found"
        lines = [f"run folder {printable(run_dir)}: no explanation could be evaluated ({len(failures)} skipped; "
                 f"first: {first})"]
        lines += [f"  - {printable(f['file'], 120)}: {printable(f['reason'], 400)}" for f in failures[:20]]
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more")
        super().__init__("\n".join(lines))


@dataclass
class _Found:
    stem: Path  # path without suffix, for Explanation.load
    label: str  # stem relative to the run folder, for rows and messages
    settings: Settings | None


def _reason(e: BaseException) -> str:
    """An error as one line for a report: the message of errors meant for users, the type
    and message of others."""
    if isinstance(e, KeyError):
        return f"missing entry {e} in the saved file"
    msg = str(e) or type(e).__name__
    return msg if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {msg}"


def _read_meta(js: Path) -> dict[str, Any]:
    from capshap.savedfile import read_json

    try:  # bounded: size, depth, FIFOs
        meta = read_json(js, MAX_JSON_BYTES, "saved explanation's JSON")
    except ValueError as e:  # the report names the file already
        raise ValueError(str(e).removeprefix(f"{js}: ").replace("not valid JSON", "unreadable JSON", 1)) from None
    if not isinstance(meta, dict):
        raise ValueError(f"not a capshap explanation (a JSON {type(meta).__name__})")
    return meta


def find_explanations(run_dir: Path, skip: set[Path]) -> tuple[list[_Found], list[dict[str, str]]]:
    """Saved explanations under ``run_dir`` (sorted) and the files that look like
    explanations but cannot be used, as ``{"file", "reason"}``.

    An .npz is taken as an explanation (a failure when its JSON is missing, unreadable, not
    a capshap explanation or has bad settings); a JSON file without .npz is a failure when it
    says it is a capshap explanation, skipped quietly when the run wrote it (``manifest.json``,
    ``summary.json``, ``metrics.json``, other ``capshap.*`` formats), else logged as a warning.
    ``skip`` is ignored.
    """
    found: list[_Found] = []
    failures: list[dict[str, str]] = []
    paired: set[Path] = set()

    def fail(path: Path, reason: str) -> None:
        rel = path.relative_to(run_dir).as_posix()
        logger.warning("Skipping %s: %s", printable(rel, 200), printable(reason, 400))
        failures.append({"file": rel, "reason": reason})

    def hidden(path: Path) -> bool:  # a run's temporaries (.tmp-*, .capshap-tmp-*/) are hidden
        return any(part.startswith(".") for part in path.relative_to(run_dir).parts)

    for npz in sorted(run_dir.rglob("*.npz")):
        if hidden(npz):
            continue
        if npz.name.endswith(".tmp.npz"):
            fail(npz, "an unfinished temporary file (its save was interrupted)")
            continue
        js = npz.with_suffix(".json")
        if not js.is_file():
            fail(npz, f"no matching {js.name}, so not a saved explanation")
            continue
        paired.add(js.resolve())
        try:
            meta = _read_meta(js)
            if meta.get("format") != "capshap.explanation":
                raise ValueError(f"{js.name} is not a capshap explanation (format={printable(meta.get('format'), 40)!s})")
            settings = _load_settings(meta)
        except (OSError, ValueError, TypeError) as e:
            fail(js, _reason(e))
            continue
        found.append(_Found(npz.with_suffix(""), npz.with_suffix("").relative_to(run_dir).as_posix(), settings))
    for js in sorted(run_dir.rglob("*.json")):
        r = js.resolve()
        if r in paired or r in skip or js.name == "metrics.json" or hidden(js) or js == run_dir / "manifest.json":
            continue
        if js.parent == run_dir and js.name in _RUN_FILES:  # the run's own files: skipped quietly
            logger.debug("Skipping %s: written by the run, not an explanation", js.name)
            continue
        try:
            fmt = _read_meta(js).get("format")
        except (OSError, ValueError):
            fmt = None
        if fmt == "capshap.explanation":
            fail(js, f"no matching {js.with_suffix('.npz').name}: the explanation's arrays are missing")
        elif isinstance(fmt, str) and fmt.startswith("capshap."):  # another file capshap writes
            logger.debug("Skipping %s: a %s file, not an explanation", js.name, printable(fmt, 40))
        else:
            logger.warning("Skipping %s: no matching .npz, so not a saved explanation",
                           printable(js.relative_to(run_dir).as_posix(), 200))
    return found, failures


def _plan(
    found: list[_Found], failures: list[dict[str, str]], captioner: str | None, scorer: str | None, trust_run: bool
) -> dict[str, Recipe]:
    """Recipes per label; raises RebuildRefused for everything the user did not confirm."""
    recipes: dict[str, Recipe] = {}
    needs: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for f in found:
        try:
            recipes[f.label] = plan_recipe(f.settings, captioner=captioner, scorer=scorer, trust_run=trust_run)
        except Unconfirmed as u:
            needs.setdefault((tuple(u.items), tuple(u.flags)), []).append(f.label)
        except ValueError as e:
            logger.warning("Skipping %s: %s", printable(f.label, 200), printable(e, 400))
            failures.append({"file": f.label, "reason": str(e)})
    if needs:
        raise RebuildRefused(needs)
    return recipes


class _Failed(Exception):
    """One explanation could not be evaluated; the message says at which stage and why."""


def credited_tokens(exp: Explanation) -> list[int]:
    """Indices of the tokens with credit somewhere (a non-zero value); the others, such as
    template words that do not depend on the image, have nothing to evaluate."""
    v = pixel_values(exp)
    return [int(t) for t in np.flatnonzero(np.any(v != 0, axis=(0, 1)))]


def _no_curves(exp: Explanation) -> dict[str, Any]:
    return {"name": exp.name, "caption": exp.caption, "tokens": [], "n_images": 0, "n_calls": 0, "summary": {}}


def _evaluate_one(
    f: _Found,
    root: Path,
    bind: Any,
    box_map: Mapping[str, list[Box]] | None,
    used_keys: set[str],
    kw: dict[str, Any],
    tolerance: float,
    cache: CurveCache,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and the image record of one explanation; errors carry the stage in their message.

    Only tokens with credit are evaluated (see :func:`credited_tokens`); the curves come
    from ``cache`` when it holds them for the same files and parameters."""
    stage = "loading"
    try:
        exp = Explanation.load(f.stem)
        tokens = credited_tokens(exp)
        logger.info("Evaluating %s (%d of %d tokens have credit)", printable(f.label, 200), len(tokens),
                    len(exp.tokens))
        key = cache.key(f.stem, tokens)
        di = cache.get(f.label, key)
        if di is not None:
            logger.info("%s: curves of an earlier evaluation reused", printable(f.label, 200))
        elif not tokens:
            di = _no_curves(exp)
        else:
            stage = "rebuilding its scorer"
            scorer = bind(f, exp)
            stage = "scoring masked images"
            di = _clean(deletion_insertion(exp, scorer, token=tokens, progress=progress, **kw))
            cache.put(f.label, key, di)
        stage = "the pointing game"
        pointing: dict[int, dict[str, Any]] = {}
        default_pg = None
        img_boxes = None
        hit = None if box_map is None else lookup_boxes(box_map, exp, f.stem, root)
        if hit is not None:
            key, raw = hit
            used_keys.add(key)
            img_boxes = boxes_for(exp, raw)
            if img_boxes:
                for rec in di["tokens"]:
                    pointing[rec["index"]] = pointing_game(exp, img_boxes, rec["index"], tolerance)
                default_pg = pointing_game(exp, img_boxes, None, tolerance)
        elif box_map is not None:
            logger.warning("No boxes for %s in the boxes file; pointing game skipped", printable(f.label, 200))
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise _Failed(f"{stage} failed: {_reason(e)}") from e
    rows = []
    for rec in di["tokens"]:
        pg = pointing.get(rec["index"])
        row: dict[str, Any] = {"image": exp.name, "file": f.label, "token": rec["token"], "index": rec["index"]}
        row.update({k: rec[k] for k in _ROW_KEYS})
        row["pointing_hit"] = None if pg is None else pg["hit"]
        row["pointing_distance"] = None if pg is None else pg["distance"]
        row["energy_share"] = None if pg is None else pg["energy_share"]
        row["box_fraction"] = None if pg is None else pg["box_fraction"]
        rows.append(row)
    left_out = [tok for i, tok in enumerate(exp.tokens) if i not in set(tokens)]
    image = {"image": exp.name, "file": f.label, "caption": exp.caption, "boxes": img_boxes, "metrics": di,
             "pointing": default_pg,
             "words_without_credit": left_out}
    return rows, image


def _summary(rows: list[dict[str, Any]], images: list[dict[str, Any]], n_failed: int) -> dict[str, Any]:
    def mean_of(key: str) -> float:
        return nanmean([r[key] for r in rows if r[key] is not None])

    pg_images = [im["pointing"] for im in images if im["pointing"] is not None and im["pointing"]["hit"] is not None]
    return {
        "n_images": len(images),
        "n_rows": len(rows),
        "n_failed": n_failed,
        "n_words_without_credit": sum(len(im.get("words_without_credit") or ()) for im in images),
        **{
            f"mean_{k}": mean_of(k)
            for k in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc", "energy_share")
        },
        "deletion_beats_random": mean_of("deletion_beats_random"),
        "insertion_beats_random": mean_of("insertion_beats_random"),
        "pointing_accuracy": float(np.mean([p["hit"] for p in pg_images])) if pg_images else float("nan"),
        "pointing_accuracy_all_tokens": mean_of("pointing_hit"),
    }


def _write(out_dir: Path, result: dict[str, Any], settings: dict[str, Any]) -> None:
    from capshap.runfolder import check_overwrite

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "metrics.md"):
        check_overwrite(out_dir / name)  # a file capshap did not write is never replaced
    for name, text in (
        ("metrics.json", json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False)),
        ("metrics.md", metrics_markdown(result["rows"], settings, result["failures"],
                                        left_out=result["summary"].get("n_words_without_credit", 0))),
    ):
        atomic_write_text(out_dir / name, text)
    logger.info("Wrote %s and %s", out_dir / "metrics.json", out_dir / "metrics.md")


def evaluate_run(
    run_dir: str | os.PathLike,
    boxes: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    scorer_factory: Any = None,
    captioner: str | None = None,
    scorer: str | None = None,
    trust_run: bool = False,
    steps: int = 20,
    random_orders: int = 5,
    seed: int | None = 0,
    out: str | os.PathLike | None = None,
    batch_size: int = 50,
    tolerance: float = 15,
    device: str | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Evaluate every saved explanation of a run and write ``metrics.json`` and ``metrics.md``.

    Only words with credit somewhere are evaluated: a word whose values are all zero (a
    template word such as "a photo of") has no ranking to test; such words are listed per
    image (``words_without_credit``) and counted in the summary.

    Parameters
    ----------
    run_dir : a folder with explanations saved by :meth:`Explanation.save` (``NAME.npz`` +
        ``NAME.json``, searched recursively).
    boxes : a boxes file (see :func:`~capshap.metrics.pointing.load_boxes`) or a loaded
        mapping; keys match an image's name, file name, stem or source path. Boxes are in the
        original image's pixels and are scaled to the explained image where the explanation
        records ``original_size`` ((height, width)) in its params.
    scorer_factory : how to score masked images, from Python: a Scorer, an object with
        ``bind(caption)``, or a callable that receives the :class:`Explanation` and returns
        either. None rebuilds each explanation's scorer from its settings, as allowed by
        ``captioner``, ``scorer`` and ``trust_run``.
    captioner, scorer : registry specs to rebuild (CLI ``--captioner`` / ``--scorer``). Each
        must equal the spec the run stored; it is built with default settings and the
        user's ``device`` / ``cache_dir``. None: the stored spec, rebuilt without asking
        only when local (captioner ``builtin``; scorers ``auto``, ``own``, ``presence``).
    trust_run : rebuild everything the run stored (specs, kind options, prompt, generation
        settings; CLI ``--trust-run``). Only for runs you trust: a stored ``hf:`` spec
        downloads and runs that model, ``azure`` sends images with your key.
    steps, random_orders, seed, batch_size : see
        :func:`~capshap.metrics.curves.deletion_insertion`.
    tolerance : pointing-game tolerance in pixels, finite and >= 0.
    out : output folder (default: ``run_dir``).
    device, cache_dir : torch device and caption cache folder for rebuilt captioners.
    progress : progress bars on stderr (an image bar and the masked images scored); None:
        only when a person is watching (a terminal or a notebook), as in :func:`capshap.explain`.
    reuse : take the curves of an earlier evaluation into the same ``out`` folder when
        nothing they depend on changed (see :mod:`capshap.metrics.curvecache`), so that
        adding ``boxes`` scores nothing again. Never with ``scorer_factory``.

    Returns
    -------
    dict
        What metrics.json holds: ``settings``, ``rows`` (one per image and token),
        ``images`` (per-image curves and the pointing game of the default token),
        ``summary`` (means over rows; pointing accuracy over images; ``n_failed``) and
        ``failures`` (``{"file", "reason"}`` per file that was skipped).

    Raises
    ------
    FileNotFoundError
        No such folder, no boxes file, or no saved explanation in the folder.
    ValueError
        A bad parameter or boxes file (before anything runs).
    RebuildRefused
        (a ValueError) The run names captioners, scorers or settings that the arguments do
        not allow; nothing was built. The message lists them and the flags to pass.
    NothingEvaluated
        (a ValueError) Every file failed; nothing is written. ``failures`` lists why.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root}: no such folder")
    check_curve_params(steps=steps, batch_size=batch_size, random_orders=random_orders, seed=seed)
    tolerance = check_tolerance(tolerance)
    if not isinstance(trust_run, bool):
        raise ValueError(f"trust_run must be True or False, got {trust_run!r}")
    for name, spec in (("captioner", captioner), ("scorer", scorer)):
        if spec is not None and (not isinstance(spec, str) or not spec.strip()):
            raise ValueError(f"{name}={spec!r} must be a registry spec such as 'builtin' or 'hf:ID_OR_PATH'")
    if scorer_factory is not None and (captioner is not None or scorer is not None or trust_run):
        raise ValueError("give either scorer_factory= or captioner= / scorer= / trust_run=, not both")
    if scorer_factory is not None and not (
        isinstance(scorer_factory, (Scorer, ScorerFactory)) or callable(scorer_factory)
    ):
        raise TypeError(
            f"scorer_factory must be a Scorer, have bind(caption) or be callable, got {type(scorer_factory).__name__}"
        )
    box_map: dict[str, list[Box]] | None
    if boxes is None:
        box_map = None
    elif isinstance(boxes, Mapping):
        box_map = {str(k): check_boxes(v, f"boxes entry {k!r}") for k, v in boxes.items()}
    else:
        box_map = load_boxes(boxes)
    out_dir = Path(out) if out is not None else root
    from capshap.runfolder import check_overwrite

    for name in ("metrics.json", "metrics.md"):  # before any work: a user's file there is never replaced
        check_overwrite(out_dir / name)
    skip = {(out_dir / "metrics.json").resolve()}
    if box_map is not None and not isinstance(boxes, Mapping):
        skip.add(Path(boxes).resolve())

    found, failures = find_explanations(root, skip)
    if not found and not failures:
        raise FileNotFoundError(f"run folder {root}: no saved explanations (NAME.npz + NAME.json) found")

    if scorer_factory is not None:
        def bind(f: _Found, exp: Explanation) -> Any:
            return bind_given(scorer_factory, exp)
    else:
        recipes = _plan(found, failures, captioner, scorer, trust_run)
        builder = ScorerBuilder(device=device, cache_dir=cache_dir)

        def bind(f: _Found, exp: Explanation) -> Any:
            return builder.scorer(recipes[f.label], exp.caption)

        found = [f for f in found if f.label in recipes]

    kw = {"steps": steps, "batch_size": batch_size, "random_orders": random_orders, "seed": seed}
    cache = CurveCache(out_dir if reuse and scorer_factory is None else None,
                       {**kw, "block": 8, "captioner": captioner, "scorer": scorer, "trust_run": trust_run,
                        "device": device}, _CURVE_KEYS)
    rows: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    used_keys: set[str] = set()
    bars = Bars(len(found), wants_bars(progress))
    try:
        for i, f in enumerate(found):
            bars.start_image(f"[{i + 1}/{len(found)}] {f.label}", None)
            try:
                r, im = _evaluate_one(f, root, bind, box_map, used_keys, kw, tolerance, cache, bars.progress)
            except _Failed as e:
                logger.warning("Skipping %s: %s", printable(f.label, 200), printable(e, 400))
                logger.debug("traceback of %s", f.label, exc_info=e.__cause__)
                failures.append({"file": f.label, "reason": str(e)})
                continue
            finally:
                bars.image_done()
            rows += r
            images.append(im)
    finally:
        bars.close()
    if cache.hits:
        logger.info("Reused the curves of %d of %d explanations from an earlier evaluation", cache.hits, len(found))
    if box_map is not None:
        for k in sorted(set(box_map) - used_keys):
            logger.warning("Boxes entry %s matches no explanation in %s", printable(repr(k), 200), printable(root))
    if not images:
        raise NothingEvaluated(root, failures)

    settings = {
        "run_dir": str(root),
        "boxes": None if boxes is None or isinstance(boxes, Mapping) else str(boxes),
        "steps": int(steps),
        "random_orders": int(random_orders),
        "seed": seed,
        "batch_size": int(batch_size),
        "tolerance": tolerance,
        "captioner": captioner,
        "scorer": scorer,
        "trust_run": trust_run,
    }
    summary = _summary(rows, images, len(failures))
    result = _clean({"settings": settings, "summary": summary, "rows": rows, "images": images, "failures": failures})
    _write(out_dir, result, settings)
    cache.save()
    return result
