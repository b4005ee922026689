"""The runner registry (its own module, so that runners register without importing the
package that imports them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from capshap.registry import Registry

__all__ = ["RUNNERS", "Runner", "runner_for"]

#: A runner: ``(prepared, items, *, n_images=None, bars=None) -> Iterator[Outcome]``.
Runner = Callable[..., Iterator[Any]]

RUNNERS: Registry[Runner] = Registry("runner", "--runner")


def runner_for(name: str) -> Runner:
    """The runner function registered as ``name`` (SpecError naming ``--runner`` if none)."""
    return RUNNERS.check(name).factory
