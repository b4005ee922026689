"""Scorers and their registry.

A scorer factory binds a target caption to a :class:`~capshap.interfaces.Scorer`. The
registry builds factories from specs (``--scorer``): ``auto``, ``own``, ``presence``,
``surrogate[:LM_ID_OR_PATH]``. Factories get ``context["captioner"]`` (the captioner of the
run) and ``context["device"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from capshap.interfaces import Captioner, Scorer, ScorerFactory
from capshap.registry import Registry, SpecError
from capshap.scoring.own import OwnHeadFactory, has_own_head
from capshap.scoring.presence import PresenceFactory

__all__ = ["SCORERS", "DEFAULT_SURROGATE", "build_scorer", "bind_scorer", "scorer_options"]

logger = logging.getLogger(__name__)

#: The SHAP notebook's surrogate language model (needs the Hugging Face hub or a local copy).
DEFAULT_SURROGATE = "sshleifer/distilbart-xsum-12-6"

SCORERS: Registry[Any] = Registry("scorer", "--scorer")

_OWN_OPTIONS = ("score", "merge_words")


def _name(captioner: Any) -> str:
    return getattr(captioner, "name", type(captioner).__name__)


@SCORERS.register("auto", help="auto, the captioner's own head where it has one, else presence", options=_OWN_OPTIONS)
def _auto(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Any:
    cap = context["captioner"]
    if has_own_head(cap):
        return OwnHeadFactory(cap, **options)
    logger.info("captioner %s has no language head: scoring by word presence", _name(cap))
    return PresenceFactory(cap)


@SCORERS.register("own", help="own, teacher-force the captioner's own language head (builtin, hf)", options=_OWN_OPTIONS)
def _own(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Any:
    cap = context["captioner"]
    if not has_own_head(cap):
        raise SpecError(
            "--scorer", "own",
            f"the captioner {_name(cap)} has no language head to score with; "
            "use --scorer presence or --scorer surrogate:LM_ID_OR_PATH",
        )
    return OwnHeadFactory(cap, **options)


@SCORERS.register("presence", help="presence, 1/0 per word by whether the masked image's caption has it")
def _presence(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Any:
    return PresenceFactory(context["captioner"])


@SCORERS.register("surrogate", help="surrogate:LM_ID_OR_PATH, a language model scores the caption given the "
                  "masked image's caption (the SHAP notebook's method)", options=("score",))
def _surrogate(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Any:
    from capshap.scoring.surrogate import SurrogateFactory

    return SurrogateFactory(context["captioner"], arg or DEFAULT_SURROGATE, device=context.get("device"), **options)


def build_scorer(
    spec: str | None, captioner: Captioner, options: Mapping[str, Any] | None = None, device: str | None = None
) -> Any:
    """A scorer factory (anything with ``bind(caption)``) from a spec; None means ``auto``."""
    return SCORERS.create("auto" if spec is None else spec, options, {"captioner": captioner, "device": device})


def scorer_options(settings: Any, captioner: Captioner) -> dict[str, Any]:
    """The scorer options a run's settings imply: ``settings.scorer_options``, plus
    ``merge_words=True`` with ``settings.tokens == "words"`` where the scorer takes it
    (own head and surrogate; presence scores words already)."""
    opts = dict(settings.scorer_options)
    name = (settings.scorer or "auto").partition(":")[0].lower()
    if settings.tokens == "words" and name in ("auto", "own", "surrogate") and "merge_words" not in opts:
        if name != "auto" or has_own_head(captioner):
            opts["merge_words"] = True
    return opts


def bind_scorer(scorer: Any, captioner: Captioner | None, caption: str) -> Scorer:
    """Bind a scorer to ``caption``.

    scorer: a spec string (see :data:`SCORERS`; needs ``captioner``), a factory with
    ``bind(caption)``, a function caption -> Scorer, or an already bound :class:`Scorer`.
    """
    if scorer is None or isinstance(scorer, str):
        if captioner is None:
            raise ValueError(f"scorer={scorer!r} needs a captioner")
        scorer = build_scorer(scorer, captioner)
    if isinstance(scorer, Scorer):
        return scorer
    if isinstance(scorer, ScorerFactory):
        out = scorer.bind(caption)
        if not isinstance(out, Scorer):
            raise TypeError(f"{type(scorer).__name__}.bind returned {type(out).__name__}, expected a capshap Scorer "
                            "(subclass capshap.Scorer)")
        return out
    if callable(scorer):
        out = scorer(caption)
        if not isinstance(out, Scorer):
            raise TypeError(f"scorer function returned {type(out).__name__}, expected a capshap Scorer")
        return out
    raise TypeError(f"cannot use {type(scorer).__name__} as a scorer")
