"""Image evidence vs language prior, per word of a caption.

Every explanation holds, per token, two scores: ``base_values``, the score with the whole
image masked (what the model says about the word with no visual content: its **prior**),
and ``outputs``, the score on the full image. Their difference is the word's **evidence**:
what the image adds (the Owen values of the token sum to it). From the evidence each word
gets a **grounding label**:

``grounded``
    ``evidence > grounded_above``: the image raises the word's score.
``contradicted``
    ``evidence < contradicted_below``: the image lowers it (the caption says the word
    although what is visible argues against it: a hallucination candidate).
``prior``
    anything in between: the model says the word about as readily without the image (a
    template word such as "a photo of", or a word from the language prior).

Thresholds are in score units (log-odds for the default scorers, 0/1 for word presence)
and default to ``+0.5`` and ``-0.5``: a change of the odds by a factor of about 1.65 in
either direction. Set them per call (``exp.grounding(grounded_above=1.0)``) or per
explanation (``exp.grounding_thresholds = Thresholds(1.0, -1.0)``; saved with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "GROUNDED",
    "PRIOR",
    "CONTRADICTED",
    "LABELS",
    "Thresholds",
    "WordGrounding",
    "ground",
    "label",
    "thresholds_from_json",
]

GROUNDED = "grounded"
PRIOR = "prior"
CONTRADICTED = "contradicted"
#: The labels, in the order a user audits them: hallucination candidates first.
LABELS = (CONTRADICTED, PRIOR, GROUNDED)

#: Default thresholds on the evidence, in score units.
DEFAULT_GROUNDED_ABOVE = 0.5
DEFAULT_CONTRADICTED_BELOW = -0.5


@dataclass(frozen=True)
class Thresholds:
    """Where evidence turns into a label (see the module docstring).

    Parameters
    ----------
    grounded_above : float
        Evidence strictly above this is ``grounded``.
    contradicted_below : float
        Evidence strictly below this is ``contradicted``; must not exceed ``grounded_above``.
    """

    grounded_above: float = DEFAULT_GROUNDED_ABOVE
    contradicted_below: float = DEFAULT_CONTRADICTED_BELOW

    def __post_init__(self) -> None:
        for name in ("grounded_above", "contradicted_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"grounding threshold {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.contradicted_below > self.grounded_above:
            raise ValueError(
                f"grounding thresholds: contradicted_below ({self.contradicted_below:g}) must not be above "
                f"grounded_above ({self.grounded_above:g})"
            )

    def replace(self, grounded_above: float | None = None, contradicted_below: float | None = None) -> "Thresholds":
        """A copy with the given thresholds changed (None keeps one)."""
        return Thresholds(
            self.grounded_above if grounded_above is None else grounded_above,
            self.contradicted_below if contradicted_below is None else contradicted_below,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class WordGrounding:
    """One token's prior, evidence and label.

    Attributes
    ----------
    index : int
        Position of the token in the caption's tokens.
    token : str
    prior : float
        Score with the whole image masked (the base value).
    evidence : float
        Score on the full image minus the prior; the token's Owen values sum to it.
    label : str
        ``"grounded"``, ``"prior"`` or ``"contradicted"``.
    """

    index: int
    token: str
    prior: float
    evidence: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "prior": self.prior, "evidence": self.evidence, "label": self.label}


def label(evidence: float, thresholds: Thresholds | None = None) -> str:
    """The grounding label of one evidence value (not finite: ``"prior"``)."""
    th = thresholds or Thresholds()
    e = float(evidence)
    if not math.isfinite(e):
        return PRIOR
    if e > th.grounded_above:
        return GROUNDED
    if e < th.contradicted_below:
        return CONTRADICTED
    return PRIOR


def ground(
    base_values: Sequence[float] | np.ndarray,
    outputs: Sequence[float] | np.ndarray,
    tokens: Sequence[str],
    thresholds: Thresholds | None = None,
) -> list[WordGrounding]:
    """Prior, evidence and label of every token.

    Parameters
    ----------
    base_values, outputs : (T,) float
        Scores with everything masked and on the full image.
    tokens : (T,) str
    thresholds : Thresholds, optional
        Default :class:`Thresholds` ().

    Returns
    -------
    list of WordGrounding
        One per token, in caption order.
    """
    base = np.asarray(base_values, dtype=np.float64).reshape(-1)
    out = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if not (base.shape == out.shape == (len(tokens),)):
        raise ValueError(f"grounding needs one base value and one output per token: {base.shape}, {out.shape}, {len(tokens)} tokens")
    th = thresholds or Thresholds()
    ev = out - base
    return [
        WordGrounding(t, str(tok), float(base[t]), float(ev[t]), label(ev[t], th))
        for t, tok in enumerate(tokens)
    ]


def thresholds_from_json(value: Any, where: str) -> Thresholds:
    """The thresholds stored in a saved explanation's ``grounding`` field (absent: the
    defaults); ``ValueError("WHERE: field 'grounding': ...")`` for anything else."""
    if value is None:
        return Thresholds()
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field 'grounding': must be an object, got {type(value).__name__}")
    try:
        return Thresholds(
            value.get("grounded_above", DEFAULT_GROUNDED_ABOVE),
            value.get("contradicted_below", DEFAULT_CONTRADICTED_BELOW),
        )
    except ValueError as e:
        raise ValueError(f"{where}: field 'grounding': {e}") from None
