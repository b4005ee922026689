"""Test helpers: run prepared parts over ready-made inputs with a chosen runner.

The public path is :class:`capshap.run.Run` (paths or arrays in, outcomes out); tests of
the runners themselves feed :class:`~capshap.job.ImageInput` lists straight to a runner
from the registry, as the run owner does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from capshap.job import ImageInput, Outcome, Plan, Prepared
from capshap.runners import runner_for
from capshap.settings import Settings


def prepare(settings: Settings, **objects: Any) -> Prepared:
    """The prepared run of ``settings`` with objects passed by hand (validated, built once)."""
    prepared = Prepared(Plan.of(settings, **objects))
    prepared.parts  # noqa: B018 - build now, as the old prepare() did
    return prepared


def run_images(
    items: Iterable[ImageInput],
    prepared: Prepared,
    *,
    runner: str = "serial",
    n_images: int | None = None,
    bars: Any = None,
    **runner_settings: Any,
) -> Iterator[Outcome]:
    """Outcomes of ``items`` with ``runner`` and its settings (``in_flight``, ``workers``,
    ``ray_address``, ``gpus_per_worker``), reusing the parts ``prepared`` built."""
    s = prepared.settings.replace(runner=runner, **runner_settings)
    s._validate_runner()  # what Settings.validate() checks of the runner's settings
    plan = dataclasses.replace(prepared.plan, settings=s)
    again = Prepared(plan)
    if prepared._parts is not None:
        again._parts = dataclasses.replace(prepared._parts, settings=s)
    return runner_for(runner)(again, items, n_images=n_images, bars=bars)
