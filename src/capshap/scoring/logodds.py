"""Numerically stable per-token scores from language-model logits.

For a token y with probability p = softmax(z)_y, the log-odds are

    logit(p) = log p - log(1 - p) = z_y - logsumexp(z_j for j != y)

The right-hand side needs no exp of large numbers and no 1 - p, so it stays finite and
accurate when p rounds to 1 or 0 (where the naive ``log(p / (1 - p))``, as in
``shap.models.TeacherForcing``, gives inf or NaN). Everything is computed in float64.

Two flavours with the same maths: numpy functions (``token_logodds``, ``token_logprob``,
``log1mexp``, ``logodds_from_logprob``) and :func:`token_scores_torch`, which works on torch
tensors on the model's device and returns numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "SCORES",
    "SCORE_CAP",
    "check_score",
    "log1mexp",
    "logsumexp",
    "token_scores_torch",
]

#: the per-token score kinds scorers accept
SCORES = ("logodds", "logprob")

#: scores are clipped to [-SCORE_CAP, SCORE_CAP]; only reached when a logit is +-inf
SCORE_CAP = 1.0e4


def check_score(score: str) -> str:
    """Validate a ``score=`` option; returns it, or raises ValueError naming the choices."""
    if score not in SCORES:
        raise ValueError(f"score={score!r} is not a known score; use one of {', '.join(map(repr, SCORES))}")
    return score


def _cap(x: np.ndarray) -> np.ndarray:
    """Clip +-inf to +-SCORE_CAP; NaN (only from NaN logits) stays NaN."""
    return np.clip(x, -SCORE_CAP, SCORE_CAP)


def log1mexp(lp: np.ndarray) -> np.ndarray:
    """log(1 - exp(lp)) for lp <= 0, accurate for lp near 0 and for very negative lp.

    Uses log(-expm1(lp)) when lp > -log 2 and log1p(-exp(lp)) otherwise (Maechler 2012).
    Gives -inf at lp == 0 exactly (p == 1).
    """
    lp = np.minimum(np.asarray(lp, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore"):
        return np.where(lp > -np.log(2.0), np.log(-np.expm1(lp)), np.log1p(-np.exp(lp)))


def logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(sum(exp(z))) along ``axis`` in float64, stable for large and -inf entries."""
    m = np.max(z, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def token_scores_torch(logits: Any, ids: Any, score: str = "logodds") -> np.ndarray:
    """Per-token scores from logits, ``score`` = "logodds" (z_y - logsumexp of the other logits, finite
    where p rounds to 1) or "logprob": computed in float64 on the logits' device.

    logits: torch tensor (N, T, V) of any float dtype; ids: long tensor (T,) or (N, T) on the
    same device. Returns (N, T) float64 numpy.
    """
    import torch

    check_score(score)
    z = logits.to(torch.float64)
    ids = ids.to(z.device).long()
    if ids.dim() == 1:
        ids = ids.unsqueeze(0).expand(z.shape[0], -1)
    zy = torch.gather(z, -1, ids.unsqueeze(-1)).squeeze(-1)
    if score == "logprob":
        out = zy - torch.logsumexp(z, dim=-1)
    else:
        others = z.scatter(-1, ids.unsqueeze(-1), float("-inf"))
        out = zy - torch.logsumexp(others, dim=-1)
    return _cap(out.cpu().numpy())
