"""How grounding labels look wherever words are shown (notebook, report, PNG, summary).

One colour and one symbol per label, so a word reads the same on every page and in print
(the symbol keeps it readable without colour): grounded words in the heatmap's red family
(the image raises them), contradicted ones in its blue family (the image lowers them),
prior-driven ones grey.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from capshap.grounding import CONTRADICTED, GROUNDED, PRIOR, Thresholds

if TYPE_CHECKING:  # pragma: no cover
    from capshap import Explanation

__all__ = ["BACKGROUND", "BORDER", "SYMBOL", "MEANING", "legend_text", "strongest_grounded", "strongest_words", "live_tokens"]

#: Background tint of a word, per label (CSS colours).
BACKGROUND = {GROUNDED: "#ffe3ea", PRIOR: "#efefef", CONTRADICTED: "#e1efff"}
#: Border colour of a word, per label.
BORDER = {GROUNDED: "#e0577a", PRIOR: "#b5b5b5", CONTRADICTED: "#3f86d6"}
#: A symbol per label (readable without colour).
SYMBOL = {GROUNDED: "\u25b2", PRIOR: "\u25cb", CONTRADICTED: "\u25bc"}
#: What each label means, for legends and tooltips.
MEANING = {
    GROUNDED: "the image raises the word",
    PRIOR: "said about as readily without the image (language prior)",
    CONTRADICTED: "the image lowers the word (hallucination candidate)",
}


def legend_text(th: Thresholds) -> dict[str, str]:
    """Label -> one line for a legend, with the thresholds in score units."""
    return {
        GROUNDED: f"{SYMBOL[GROUNDED]} grounded: {MEANING[GROUNDED]} (evidence > {th.grounded_above:+g})",
        PRIOR: f"{SYMBOL[PRIOR]} prior: {MEANING[PRIOR]}",
        CONTRADICTED: f"{SYMBOL[CONTRADICTED]} contradicted: {MEANING[CONTRADICTED]} "
                      f"(evidence < {th.contradicted_below:+g})",
    }


def live_tokens(exp: "Explanation") -> list[int]:
    """Indices of the tokens some pixel gives non-zero credit."""
    pv = np.asarray(exp.pixel_values())
    T = pv.shape[-1] if pv.ndim else 0
    if T == 0:
        return []
    nz = np.any(pv.reshape(-1, T) != 0, axis=0)
    return [int(t) for t in np.flatnonzero(nz)]


def strongest_grounded(exp: "Explanation") -> int | None:
    """The grounded token with the most evidence among those with non-zero credit; else
    the live token with the largest |evidence|; None when no token has credit."""
    live = live_tokens(exp)
    if not live:
        return None
    g = exp.grounding()
    ev = np.nan_to_num(exp.evidence, nan=0.0)
    grounded = [t for t in live if g[t].label == GROUNDED]
    if grounded:
        return max(grounded, key=lambda t: ev[t])
    return max(live, key=lambda t: abs(ev[t]))


def strongest_words(exp: "Explanation", n: int) -> list[int]:
    """The ``n`` strongest tokens, in caption order: those with non-zero credit first, then
    by |evidence| (ties: caption order)."""
    live = set(live_tokens(exp))
    ev = np.abs(np.nan_to_num(exp.evidence, nan=0.0))
    order = sorted(range(len(exp.tokens)), key=lambda t: (t not in live, -ev[t], t))
    return sorted(order[: max(0, int(n))])
