"""The serial runner: one image after another, in input order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from capshap.job import ImageInput, Outcome, Prepared, outcome_of
from capshap.runners.registry import RUNNERS

__all__ = ["run_serial"]


@RUNNERS.register("serial", help="serial, one image after another (bit for bit the same values every time)")
def run_serial(
    prepared: Prepared,
    items: Iterable[ImageInput],
    *,
    n_images: int | None = None,
    bars: Any = None,
) -> Iterator[Outcome]:
    """Explain ``items`` one after another, yielding an :class:`Outcome` per input.

    An input that failed to load, or whose caption, scoring or explanation fails, gives an
    Outcome with ``error`` set; the run goes on. KeyboardInterrupt stops it.
    """
    parts = prepared.parts
    n = n_images if n_images is not None else 2
    for i, item in enumerate(items):
        if bars is not None and item.error is None:
            bars.start_image(f"[{i + 1}/{n_images if n_images is not None else '?'}] {item.name}",
                             parts.settings.max_evals)
            bars.status("captioning")
        try:
            yield outcome_of(item, parts, n_images=n, bars=bars)
        finally:
            if bars is not None:
                bars.image_done()
