"""Runners: how a run's images are dispatched, one registry entry per runner.

A runner is a function ``run(prepared, items, *, n_images=None, bars=None)`` that yields one
:class:`~capshap.job.Outcome` per :class:`~capshap.job.ImageInput`, calling the per-image
job (:func:`capshap.job.outcome_of`) however it likes: one after another
(:mod:`~capshap.runners.serial`), several at once on this machine
(:mod:`~capshap.runners.flight`), sharded over a Ray cluster (:mod:`~capshap.runners.ray`).
``prepared.parts`` builds the captioner and scorer once (on first use); ``prepared.plan``
is what a distributed runner ships to its workers. Runners import nothing from the module
that dispatches to them (:mod:`capshap.run`).

Adding one is one file plus one registration::

    from capshap.job import outcome_of
    from capshap.runners import RUNNERS

    @RUNNERS.register("reversed", help="reversed, the last image first")
    def run_reversed(prepared, items, *, n_images=None, bars=None):
        for item in reversed(list(items)):
            yield outcome_of(item, prepared.parts)

Then ``capshap explain ... --runner reversed`` or ``capshap.explain(..., runner="reversed")``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from capshap.runners.registry import RUNNERS, Runner, runner_for

__all__ = ["RUNNERS", "Runner", "runner_for"]


def _auto(prepared: Any, items: Iterable[Any], *, n_images: int | None = None, bars: Any = None) -> Iterator[Any]:
    """In flight where that keeps values exact and helps (a GPU: 8 images; a captioner
    behind a server: 4), else serial; one image is always serial."""
    from capshap.runners.flight import default_in_flight, run_in_flight
    from capshap.runners.serial import run_serial

    s = prepared.settings
    k = s.in_flight if s.in_flight is not None else default_in_flight(s.device, prepared.parts.captioner)
    if k <= 1 or (n_images is not None and n_images <= 1):
        return run_serial(prepared, items, n_images=n_images, bars=bars)
    return run_in_flight(prepared, items, n_images=n_images, bars=bars, in_flight=k)


RUNNERS.register("auto", _auto, help="auto, in flight on a GPU or for a server captioner, else serial")
# the built-in runners register themselves on import
from capshap.runners import flight as _flight  # noqa: E402,F401
from capshap.runners import ray as _ray  # noqa: E402,F401
from capshap.runners import serial as _serial  # noqa: E402,F401
