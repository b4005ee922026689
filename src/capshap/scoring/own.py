"""White-box scoring with the captioner's own language head."""

from __future__ import annotations

from typing import Any

from capshap.interfaces import Captioner, OwnHeadCaptioner, Scorer

__all__ = ["OwnHeadFactory", "has_own_head"]


def has_own_head(captioner: Any) -> bool:
    """True when ``captioner`` can teacher-force its own head (:class:`OwnHeadCaptioner`)."""
    return isinstance(captioner, OwnHeadCaptioner)


class OwnHeadFactory:
    """Factory for white-box scoring with the captioner's own language head.

    ``OwnHeadFactory(captioner, **options).bind(caption)`` calls ``captioner.own_scorer(caption,
    **options)``; captioners that can teacher-force their decoder implement that method
    (builtin, Hugging Face models, OpenAI-compatible servers with prompt log-probabilities).
    options: ``score`` ("logodds" or "logprob"), ``merge_words`` (bool).
    """

    def __init__(self, captioner: Captioner, **options: Any):
        if not has_own_head(captioner):
            raise TypeError(
                f"captioner {getattr(captioner, 'name', type(captioner).__name__)!r} has no "
                "language head to score with (no own_scorer method); use a surrogate scorer "
                "(SurrogateFactory) or the model-free PresenceFactory instead"
            )
        if "score" in options:  # checked now, not once per image at bind time
            from capshap.scoring.logodds import check_score

            check_score(options["score"])
        self.captioner = captioner
        self.options = options

    def bind(self, caption: str) -> Scorer:
        return self.captioner.own_scorer(caption, **self.options)  # type: ignore[attr-defined]
