"""In flight: several images explained at once on one machine, one model call at a time.

Each image in flight runs the ordinary per-image job (:func:`capshap.job.outcome_of`)
in its own thread, with its own best-first loop and its own batches, so its values are a
serial run's. What changes is who calls the model: every model call of every image (the
caption, and each batch of masked images) goes to one :class:`Batcher`, whose single model
thread takes whatever is queued when it is free and makes ONE call for it:

* scorers that declare a ``stack_key`` (:class:`~capshap.interfaces.Scorer`; the built-in
  classifier's and the Hugging Face own-head scorers do) are stacked: the masked images of
  all queued requests with the same key go through :meth:`Scorer.score_stacked` (one
  forward pass per model batch), and each request gets its own rows;
* any other scorer is called once per request, still on the model thread (torch models are
  not called from two threads at once);
* scorers and captioners that declare ``concurrent_calls`` (clients of a server, such as
  the cloud captioners) are called from the image threads directly: their requests share
  the captioner's one connection pool and its one concurrency limit, so several images
  keep that limit busy.

Masks are rendered in the image threads (the masker's own thread pool; OpenCV and numpy
release the GIL) while the model thread runs another image's batch.

Values. Each image's coalitions, batches and order are those of a serial run, so its
values equal a serial run's bit for bit when the model gives each row the same numbers
whatever else is in its batch (tested with such a scorer). Stacking changes the batch, and
torch's CPU kernels are not batch-invariant: the built-in classifier's logits move by about
1e-6 with the batch size, and node values of in-flight runs differ from serial ones by
3e-7 to 1e-6 (measured; the tests allow 1e-5 of the score scale). Hugging Face own-head
scorers stack the batches of different captions by padded teacher forcing; their stacked
scores differ from one-by-one ones by at most 2e-5 on every family (GIT bit for bit;
measured on the tiny test models, which allow 5e-5: tests/captioners/hf/test_hf_stacking.py).
A request that runs alone (one image in flight) is bit for bit serial.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from capshap.interfaces import Captioner, Scorer
from capshap.job import ImageInput, Outcome, Prepared, Route, outcome_of
from capshap.runners.registry import RUNNERS

logger = logging.getLogger(__name__)

__all__ = ["Batcher", "BatcherRoute", "default_in_flight", "run_in_flight", "stackable", "concurrent_calls"]


def default_in_flight(device: str | None = None, captioner: Any = None) -> int:
    """A sensible number of images in flight: 8 on a GPU (keeps it fed); 4 for a captioner
    behind a server (its requests overlap; values stay exact); 1 for a local model on a CPU,
    so that values are bit for bit those of a serial run and the same on every run (stacked
    CPU batches move values by ~1e-6, see the module docstring; ask for more with
    ``--in-flight N``)."""
    if device is not None and str(device).startswith(("cuda", "mps")):
        return 8
    if captioner is not None and concurrent_calls(captioner):
        return 4
    return 1


def stackable(scorer: Scorer) -> bool:
    """Whether ``scorer`` declares that it can share a model call with other scorers (a
    ``stack_key``, see :class:`~capshap.interfaces.Scorer`)."""
    return scorer.stack_key is not None


def concurrent_calls(obj: Captioner | Scorer) -> bool:
    """Whether ``obj`` (a scorer or captioner) declares that it may be called from several
    threads at once (``concurrent_calls``, see :mod:`capshap.interfaces`)."""
    return bool(obj.concurrent_calls)


@dataclass
class _Request:
    scorer: Any
    images: Any
    future: Future
    n: int


class Batcher:
    """One model thread that runs the queued model calls of all images in flight.

    Parameters
    ----------
    max_images : int
        Most masked images stacked into one call (requests are never split; a single
        request larger than this runs alone).

    ``score(scorer, images) -> (scores (N, T), captions or None)`` and ``call(fn)`` block
    the calling image thread until the model thread has run them; exceptions come back to
    the caller. ``calls`` and ``stacked`` count model calls and requests they served.
    """

    def __init__(self, max_images: int = 512):
        self.max_images = max(1, int(max_images))
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.calls = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._loop, name="capshap-model", daemon=True)
        self._thread.start()

    # -- image threads -------------------------------------------------------------

    def score(self, scorer: Scorer, images: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        """Score ``images`` (N, H, W, 3) with a bound scorer on the model thread."""
        return self._submit(scorer, images, len(images)).result()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the model thread (a caption, or any other model use)."""
        return self._submit(None, fn, 0).result()

    def _submit(self, scorer: Any, payload: Any, n: int) -> Future:
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the in-flight runner is closed")
            self._queue.append(_Request(scorer, payload, fut, n))
            self._cond.notify_all()
        return fut

    def close(self) -> None:
        """Stop: queued calls fail with RuntimeError (their images stop), the call running
        now finishes, then the model thread ends."""
        with self._cond:
            self._closed = True
            queued, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for r in queued:
            if not r.future.done():
                r.future.set_exception(RuntimeError("the run was stopped"))
        self._thread.join(timeout=60)

    # -- the model thread ------------------------------------------------------------

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            taken = [first]
            key = first.scorer.stack_key if first.scorer is not None else None
            if key is None:
                return taken
            n = first.n
            rest: deque[_Request] = deque()
            while self._queue:
                r = self._queue.popleft()
                if r.scorer is not None and r.scorer.stack_key == key and n + r.n <= self.max_images:
                    taken.append(r)
                    n += r.n
                else:
                    rest.append(r)
            self._queue = rest
            return taken

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            self.calls += 1
            self.requests += len(taken)
            try:
                if taken[0].scorer is None:
                    taken[0].future.set_result(taken[0].images())
                elif len(taken) == 1 and not stackable(taken[0].scorer):
                    taken[0].future.set_result(taken[0].scorer.score_with_captions(taken[0].images))
                else:
                    outs = taken[0].scorer.score_stacked([(r.scorer, r.images) for r in taken])
                    for r, o in zip(taken, outs):
                        r.future.set_result((o, None))
            except Exception as e:  # noqa: BLE001 - handed to the waiting image threads
                if len(taken) == 1:
                    taken[0].future.set_exception(e)
                    continue
                # one bad request must not fail the images stacked with it: one by one
                for r in taken:
                    try:
                        r.future.set_result((r.scorer.score_stacked([(r.scorer, r.images)])[0], None))
                    except Exception as e1:  # noqa: BLE001
                        r.future.set_exception(e1)
            except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt and the like
                for r in taken:
                    if not r.future.done():
                        r.future.set_exception(e)


# ------------------------------------------------------------------ the route


class _RoutedScorer(Scorer):
    """A bound scorer whose model calls go through the :class:`Batcher` (so it declares no
    ``stack_key`` of its own: the batcher stacks the inner scorers)."""

    def __init__(self, inner: Scorer, batcher: Batcher):
        self.inner = inner
        self.batcher = batcher
        self.caption = inner.caption
        self.tokens = inner.tokens

    def score_with_captions(self, images: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        return self.batcher.score(self.inner, images)

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.score_with_captions(images)[0]


class BatcherRoute(Route):
    """The job's model calls sent to one :class:`Batcher` (its model thread), except for
    captioners and scorers that talk to a server, which take concurrent callers and are
    called from the image threads directly (their requests share the client's pool and
    concurrency limit)."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher

    def caption(self, captioner: Captioner, images: list[np.ndarray]) -> list[str]:
        if concurrent_calls(captioner):
            return captioner.caption(images)
        return self.batcher.call(lambda: captioner.caption(images))

    def scorer(self, bound: Scorer) -> Scorer:
        return bound if concurrent_calls(bound) else _RoutedScorer(bound, self.batcher)


# ------------------------------------------------------------------ progress


class FlightProgress:
    """One bar for the run (images done, evaluations per second, ETA) and the status of
    each image in flight, on top of :class:`~capshap.progress.Bars` (no-op when disabled).
    """

    def __init__(self, bars: Any, n_images: int | None, max_evals: int):
        self.bars = bars
        self._lock = threading.Lock()
        self._status: dict[str, str] = {}
        self.evals = 0
        self._bar = None
        tqdm = bars.tqdm if bars is not None else None
        if tqdm is not None:
            import sys

            total = n_images * max_evals if n_images is not None else None
            self._bar = tqdm(total=total, desc="evaluations", unit="eval", file=sys.stderr,
                             position=1 if bars.run is not None else 0, leave=False, dynamic_ncols=True,
                             smoothing=0.1)

    def for_image(self, name: str) -> "_ImageStatus":
        return _ImageStatus(self, name)

    def _set(self, name: str, text: str | None) -> None:
        from capshap.text import printable

        with self._lock:
            if text is None:
                self._status.pop(name, None)
            else:
                self._status[name] = text
            if self._bar is not None:
                shown = "; ".join(f"{printable(k, 20)}: {printable(v, 24)}" for k, v in list(self._status.items())[:4])
                self._bar.set_postfix_str(f"{len(self._status)} in flight" + (f" ({shown})" if shown else ""),
                                          refresh=False)

    def advance(self, n: int) -> None:
        with self._lock:
            self.evals += n
            if self._bar is not None:
                self._bar.update(n)

    def image_done(self, name: str) -> None:
        self._set(name, None)
        if self.bars is not None:
            with self._lock:
                if self.bars.run is not None:
                    self.bars.run.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _ImageStatus:
    """What :func:`~capshap.job.explain_input` needs of ``bars``: status and advance."""

    def __init__(self, progress: FlightProgress, name: str):
        self.progress, self.name = progress, name
        self.done = 0

    def status(self, text: str) -> None:
        self.progress._set(self.name, text)

    def advance(self, n: int) -> None:
        self.done += n
        self.progress.advance(n)
        self.progress._set(self.name, f"{self.done} evals")


# ------------------------------------------------------------------ the runner


@RUNNERS.register("in_flight", help="in_flight, several images at once on this machine, their model calls stacked",
                  aliases=("in-flight", "flight"))
def run_in_flight(
    prepared: Prepared,
    items: Iterable[ImageInput],
    *,
    n_images: int | None = None,
    bars: Any = None,
    in_flight: int | None = None,
    max_stack: int | None = None,
) -> Iterator[Outcome]:
    """Explain ``items`` with up to ``in_flight`` images at once (default: the settings'
    ``in_flight``, else 2 to 4 by the cores); yields an :class:`Outcome` per input in
    completion order.

    Inputs are read lazily (at most ``in_flight`` loaded images are held). A failing image
    gives an Outcome with ``error``; the others go on. ``max_stack``: most masked images per
    stacked model call (default: ``in_flight * settings.batch_size``).
    """
    parts = prepared.parts
    s = parts.settings
    if in_flight is None:
        in_flight = s.in_flight
    if in_flight is None:  # in flight was asked for: at least 2, up to the cores (4 at most) on CPU
        in_flight = min(4, max(2, os.cpu_count() or 1))
    k = int(in_flight)
    if k < 1:
        raise ValueError(f"in_flight must be an integer >= 1, got {in_flight!r}")
    if k > 1 and not str(s.device or "cpu").startswith(("cuda", "mps")) and parts.captioner is not None \
            and not concurrent_calls(parts.captioner):
        logger.warning("%d images in flight on a CPU with a local model: expect no speed-up over a serial run "
                       "(one model thread does every forward pass, and stacking changes values by ~1e-6); "
                       "in flight pays off on a GPU or with a captioner behind a server", k)
    batcher = Batcher(max_stack if max_stack is not None else k * s.batch_size + 2)
    route = BatcherRoute(batcher)
    progress = FlightProgress(bars, n_images, s.max_evals)
    n = n_images if n_images is not None else 2

    def job(item: ImageInput) -> Outcome:
        status = progress.for_image(item.name)
        status.status("captioning")
        try:
            return outcome_of(item, parts, n_images=n, bars=status, route=route)
        finally:
            progress.image_done(item.name)

    pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="capshap-image")
    pending: set[Future] = set()
    it = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < k:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                if item.error is not None or item.array is None:
                    progress.image_done(item.name)
                    yield outcome_of(item, parts)
                    continue
                pending.add(pool.submit(job, item))
            if not pending:
                break
            from concurrent.futures import FIRST_COMPLETED, wait

            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:
        for f in pending:
            f.cancel()
        batcher.close()  # images still running (an interrupted run) fail at their next model call
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        logger.info("in flight: %d model calls served %d requests", batcher.calls, batcher.requests)
