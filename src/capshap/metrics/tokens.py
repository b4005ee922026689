"""Which tokens a metric looks at, and an explanation's per-pixel values checked for use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from capshap.explanation import Explanation

__all__ = ["TokenSpec", "token_index", "token_indices", "pixel_values"]

#: None (all tokens), an index, a token string, or a list of them.
TokenSpec = Union[None, int, str, Sequence[Union[int, str]]]


def token_index(exp: Explanation, token: int | str) -> int:
    """Index of one token of ``exp`` given as an index (negative counts from the end) or
    a token string. Raises ValueError / TypeError naming the token and the caption's tokens."""
    T = len(exp.tokens)
    if isinstance(token, str):
        if token not in exp.tokens:
            raise ValueError(f"token {token!r} is not in the caption's tokens {exp.tokens!r}")
        return exp.tokens.index(token)
    if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
        raise TypeError(f"token must be an index or a token string, got {type(token).__name__}")
    t = int(token)
    if not -T <= t < T:
        raise ValueError(f"token index {t} is out of range for {T} tokens {exp.tokens!r}")
    return t % T


def token_indices(exp: Explanation, token: TokenSpec) -> list[int]:
    """Indices of ``token`` (see :data:`TokenSpec`), without repeats, in the order given."""
    if token is None:
        return list(range(len(exp.tokens)))
    if isinstance(token, (str, int, np.integer)):
        return [token_index(exp, token)]
    out = [token_index(exp, t) for t in token]
    if not out:
        raise ValueError("token list is empty; give None for all tokens")
    return list(dict.fromkeys(out))


def pixel_values(exp: Explanation) -> np.ndarray:
    """(H, W, T) float64 values of ``exp`` (channels summed), checked to match its image
    and to be finite; ValueError naming the explanation otherwise."""
    v = np.asarray(exp.pixel_values(), dtype=np.float64)
    if v.ndim != 3 or v.shape[:2] != exp.image.shape[:2]:
        raise ValueError(
            f"explanation {exp.name!r}: values of shape {np.shape(exp.values)} do not match "
            f"its image {exp.image.shape[:2]}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(f"explanation {exp.name!r} has non-finite values")
    return v
