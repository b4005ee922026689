"""Faithfulness metrics for explanations.

- :mod:`capshap.metrics.curves`: deletion / insertion curves against random orders
  (:func:`deletion_insertion`);
- :mod:`capshap.metrics.pointing`: the pointing game and energy share (:func:`pointing_game`),
  boxes files (:func:`load_boxes`, :func:`scale_boxes`) and matching boxes to explanations;
- :mod:`capshap.metrics.evaluate`: every explanation of a run folder, written to
  metrics.json and metrics.md (:func:`evaluate_run`), skipping and reporting bad files;
- :mod:`capshap.metrics.rebuild`: rebuilding a saved explanation's scorer only as far as
  the user allows (:class:`RebuildRefused` says what a run would need);
- :mod:`capshap.metrics.markdown`: the Markdown table, with text from files escaped.
"""

from __future__ import annotations

from capshap.metrics.curves import deletion_insertion
from capshap.metrics.evaluate import NothingEvaluated, evaluate_run
from capshap.metrics.pointing import (
    Box,
    default_token,
    load_boxes,
    lookup_boxes,
    pointing_game,
    scale_boxes,
)
from capshap.metrics.rebuild import LOCAL_CAPTIONERS, LOCAL_SCORERS, RebuildRefused
from capshap.metrics.tokens import TokenSpec

__all__ = [
    "deletion_insertion",
    "pointing_game",
    "default_token",
    "scale_boxes",
    "load_boxes",
    "lookup_boxes",
    "evaluate_run",
    "RebuildRefused",
    "NothingEvaluated",
    "LOCAL_CAPTIONERS",
    "LOCAL_SCORERS",
    "Box",
    "TokenSpec",
]
