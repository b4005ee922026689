"""Numpy reference computations of token scores, independent of capshap's torch code."""

from __future__ import annotations

import numpy as np

from capshap.scoring.logodds import SCORE_CAP, _cap, check_score, log1mexp, logsumexp as _logsumexp

__all__ = ["token_logprob", "token_logodds", "token_scores", "logodds_from_logprob", "SCORE_CAP"]


def logodds_from_logprob(lp: np.ndarray) -> np.ndarray:
    """log p - log(1 - p) from log p (float64). When p rounds to 1 in float64 (lp == 0) the
    result is capped at SCORE_CAP; prefer :func:`token_logodds`, which works from logits and
    stays exact there."""
    lp = np.asarray(lp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _cap(lp - log1mexp(lp))


def _gather(logits: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), z.shape[:-1])
    zy = np.take_along_axis(z, ids[..., None], axis=-1)[..., 0]
    return z, zy


def token_logprob(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log p(ids) under softmax(logits).

    logits: (..., V) float; ids: integer array broadcastable to logits.shape[:-1].
    Returns (...) float64, capped at -SCORE_CAP.
    """
    z, zy = _gather(logits, ids)
    return _cap(zy - _logsumexp(z))


def token_logodds(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log p - log(1 - p) of ids under softmax(logits), as z_y - logsumexp(other logits).

    logits: (..., V) float; ids: integer array broadcastable to logits.shape[:-1].
    Returns (...) float64: finite for any finite logits (capped at +-SCORE_CAP otherwise).
    """
    z, zy = _gather(logits, ids)
    others = z.copy()
    np.put_along_axis(others, np.broadcast_to(np.asarray(ids, dtype=np.int64), z.shape[:-1])[..., None], -np.inf, axis=-1)
    with np.errstate(invalid="ignore"):
        return _cap(zy - _logsumexp(others))


def token_scores(logits: np.ndarray, ids: np.ndarray, score: str = "logodds") -> np.ndarray:
    """:func:`token_logodds` or :func:`token_logprob`, chosen by ``score``."""
    check_score(score)
    return token_logodds(logits, ids) if score == "logodds" else token_logprob(logits, ids)


