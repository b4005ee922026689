"""Rebuild the scorer of a saved explanation, only as far as the user allows.

A run folder may come from someone else. Its files name a captioner (``hf:someone/model``
downloads and runs that model, ``azure`` spends the user's key), a scorer (``surrogate:LM``
loads a language model), and options that go straight to the model (prompt, generation
settings, the kind's options). Evaluating such a folder must not do any of that unless the
user said so. The rule, per explanation:

- A captioner or scorer the user names (``captioner=`` / ``scorer=``; the CLI's
  ``--captioner`` / ``--scorer``) is rebuilt with default settings. It must equal the one the
  run stored, since scoring with another model would not measure this explanation.
- ``trust_run=True`` (``--trust-run``) rebuilds everything the run stored: specs, kind
  options, prompt and generation settings.
- Without either, only local kinds that run no downloaded code are rebuilt from the file:
  the ``builtin`` captioner (the embedded EfficientNet-Lite0) and the ``auto`` / ``own`` /
  ``presence`` scorers, which only use that captioner.
- Stored kind options, prompts and generation settings are used only with trust; a run
  that stored any is refused without it (ignoring them would not reproduce its scorer).

What is not allowed is collected over all files and raised once as :class:`RebuildRefused`,
before anything is built, listing what would be rebuilt and the flag to pass.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capshap.interfaces import Captioner, Scorer, ScorerFactory
from capshap.registry import parse_spec
from capshap.settings import Settings
from capshap.text import printable

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_CAPTIONERS",
    "LOCAL_SCORERS",
    "Recipe",
    "Unconfirmed",
    "RebuildRefused",
    "plan_recipe",
    "ScorerBuilder",
    "bind_given",
]

#: Captioner kinds rebuilt from a run's files without the user naming them: local, offline,
#: no downloaded code (the builtin captioner's weights ship inside capshap).
LOCAL_CAPTIONERS = frozenset({"builtin"})
#: Scorer kinds that only use the captioner (no model of their own).
LOCAL_SCORERS = frozenset({"auto", "own", "presence"})

_WHAT = {
    "hf": "downloads (or loads) and runs this Hugging Face model",
    "azure": "sends the images to Azure AI Vision with your AZURE_VISION_KEY",
    "surrogate": "downloads and runs this language model",
}


def _show(value: Any, limit: int = 120) -> str:
    """A value from a file, made safe for a terminal and cut short."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return printable(repr(text) if isinstance(value, str) else text, limit)


def _arg(spec: str) -> str:
    """A spec from a file as a shell-safe command-line argument."""
    return shlex.quote(printable(spec, 120))


def _same_spec(a: str, b: str) -> bool:
    return parse_spec(a) == parse_spec(b)


def _what(spec: str) -> str:
    name = parse_spec(spec)[0]
    for prefix, text in _WHAT.items():
        if name.startswith(prefix):
            return f" ({text})"
    return ""


@dataclass(frozen=True)
class Recipe:
    """What to build for one explanation: registry specs, options, prompt, generation."""

    captioner: str
    scorer: str
    captioner_options: dict[str, Any] = field(default_factory=dict)
    scorer_options: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    generate: dict[str, Any] | None = None
    tokens: str = "pieces"

    def captioner_key(self) -> str:
        return json.dumps([self.captioner, self.captioner_options, self.prompt, self.generate],
                          sort_keys=True, default=repr)

    def key(self) -> str:
        return self.captioner_key() + "|" + json.dumps([self.scorer, self.scorer_options, self.tokens], sort_keys=True, default=repr)


class Unconfirmed(Exception):
    """One explanation needs something the user did not name: ``items`` say what (already
    made printable), ``flags`` what to pass."""

    def __init__(self, items: list[str], flags: list[str]):
        self.items, self.flags = items, flags
        super().__init__("; ".join(items))


class RebuildRefused(ValueError):
    """Evaluating would rebuild models, servers or settings named only by the run's files.

    ``needs`` maps a description of what would be rebuilt to the files that need it.
    """

    def __init__(self, needs: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]]):
        self.needs = needs
        n = sum(len(f) for f in needs.values())
        ways_all = list(dict.fromkeys(" ".join(fl) for _, fl in needs))
        ways = " or ".join(ways_all[:3]) + (" or ..." if len(ways_all) > 3 else "")
        # the first line stands alone (a CLI may print only it); the rest gives the details
        lines = [f"evaluate built nothing: {n} saved explanation{'s' if n != 1 else ''} name models or settings "
                 f"that you did not give; to rebuild them pass {ways}"]
        for (items, flags), files in needs.items():
            shown = ", ".join(printable(f, 80) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            lines.append(f"  - {len(files)} file{'s' if len(files) != 1 else ''} ({shown}): {'; '.join(items)}")
            lines.append(f"    to rebuild: {' '.join(flags)}")
        lines.append(
            "--captioner/--scorer (Python: captioner=, scorer=) rebuild the named kind with default settings; "
            "--trust-run (trust_run=True) rebuilds everything a run stored, prompt and generation options "
            "included: only for runs you trust. Evaluate files that need different captioners separately."
        )
        super().__init__("\n".join(lines))


def _check_types(s: Settings) -> None:
    """The settings plan_recipe reads, checked for type (they come from a file)."""
    kinds = {"captioner": (str, type(None)), "scorer": (str, type(None)), "prompt": (str, type(None)),
             "captioner_options": (Mapping,), "scorer_options": (Mapping,), "generate": (Mapping, type(None))}
    shown = {type(None): "None", Mapping: "dict"}
    for name, types in kinds.items():
        if not isinstance(getattr(s, name), types):
            raise ValueError(f"settings.{name} is a {type(getattr(s, name)).__name__}, "
                             f"expected {' or '.join(shown.get(t, t.__name__) for t in types)}")


def plan_recipe(
    settings: Settings | None,
    *,
    captioner: str | None = None,
    scorer: str | None = None,
    trust_run: bool = False,
) -> Recipe:
    """The recipe that rebuilds one explanation's scorer, under the rule of this module.

    Parameters
    ----------
    settings : the explanation's stored settings (``exp.settings``), or None.
    captioner, scorer : specs the user named, or None.
    trust_run : use everything the run stored.

    Raises
    ------
    Unconfirmed
        The stored recipe needs the user's say-so (see :class:`RebuildRefused`).
    ValueError
        Nothing names a captioner (neither the file nor the user), or a stored setting has
        the wrong type.
    """
    s = settings
    if s is not None:
        _check_types(s)
    stored_c = s.captioner if s is not None else None
    stored_s = s.scorer if s is not None else None
    items: list[str] = []
    flags: list[str] = []
    mismatch = needs_trust = False
    if captioner is not None:
        if stored_c is not None and not _same_spec(stored_c, captioner):
            items.append(f"explained with captioner {_show(stored_c)}, not {_show(captioner)} "
                         "(another model's scores would not measure it)")
            mismatch = True
            flags.append(f"--captioner {_arg(stored_c)}")
        cap_spec = captioner
    elif stored_c is None:
        raise ValueError(
            "records no captioner spec (settings.captioner; 0.1 files: params captioner_spec), so its scorer "
            "cannot be rebuilt; name one with --captioner SPEC (captioner=) or pass scorer_factory= in Python"
        )
    else:
        cap_spec = stored_c
        if not trust_run and parse_spec(stored_c)[0] not in LOCAL_CAPTIONERS:
            items.append(f"captioner {_show(stored_c)}{_what(stored_c)}")
            flags.append(f"--captioner {_arg(stored_c)}")
    if scorer is not None:
        if stored_s is not None and not _same_spec(stored_s, scorer):
            items.append(f"scored with {_show(stored_s)}, not {_show(scorer)}")
            mismatch = True
            flags.append(f"--scorer {_arg(stored_s)}")
        sc_spec = scorer
    else:
        sc_spec = stored_s if stored_s is not None else "auto"
        if not trust_run and parse_spec(sc_spec)[0] not in LOCAL_SCORERS:
            items.append(f"scorer {_show(sc_spec)}{_what(sc_spec)}")
            flags.append(f"--scorer {_arg(sc_spec)}")
    extras = {}
    if s is not None:
        extras = {
            "captioner options": s.captioner_options or None,
            "prompt": s.prompt,
            "generation options": s.generate or None,
            "scorer options": s.scorer_options or None,
        }
    if not trust_run:
        for name, val in extras.items():
            if val is not None:
                items.append(f"{name} {_show(val)}")
                needs_trust = True
    if needs_trust and not mismatch:
        flags = ["--trust-run"]  # trust covers the specs as well
    elif needs_trust:
        flags.append("--trust-run")
    if items:
        raise Unconfirmed(items, flags)
    if stored_s is None and scorer is None:
        logger.info("no scorer spec stored; rebuilding with 'auto'")
    return Recipe(
        captioner=cap_spec,
        scorer=sc_spec,
        captioner_options=dict(s.captioner_options) if trust_run and s is not None else {},
        scorer_options=dict(s.scorer_options) if trust_run and s is not None else {},
        prompt=s.prompt if trust_run and s is not None else None,
        generate=dict(s.generate) if trust_run and s is not None and s.generate else None,
        tokens=s.tokens if s is not None else "pieces",
    )


class ScorerBuilder:
    """Builds captioners and scorer factories from recipes through the registries, once per
    recipe (a failure is remembered too, so one broken model fails fast for every file).

    device, cache_dir: the user's (never the run's: its device may not exist here and its
    cache folder is a path chosen by whoever made the files).
    """

    def __init__(self, device: str | None = None, cache_dir: str | None = None):
        self.device, self.cache_dir = device, cache_dir
        self._captioners: dict[str, Any] = {}
        self._factories: dict[str, Any] = {}

    def captioner(self, recipe: Recipe) -> Captioner:
        from capshap.captioners import build_captioner

        key = recipe.captioner_key()
        if key not in self._captioners:
            logger.info("Building captioner %s", printable(recipe.captioner, 200))
            try:
                self._captioners[key] = build_captioner(
                    recipe.captioner, recipe.captioner_options, device=self.device, cache_dir=self.cache_dir,
                    batch_size=None, prompt=recipe.prompt, generate=recipe.generate,
                )
            except Exception as e:
                self._captioners[key] = e
        got = self._captioners[key]
        if isinstance(got, Exception):
            raise got
        return got

    def factory(self, recipe: Recipe) -> tuple[Any, Captioner]:
        """The scorer factory of ``recipe`` and its captioner."""
        from capshap.scoring import build_scorer, scorer_options
        from capshap.settings import Settings

        cap = self.captioner(recipe)
        key = recipe.key()
        if key not in self._factories:
            try:
                # the scored tokens must match the explanation's (words or pieces)
                opts = scorer_options(
                    Settings(scorer=recipe.scorer, scorer_options=recipe.scorer_options, tokens=recipe.tokens), cap)
                self._factories[key] = build_scorer(recipe.scorer, cap, opts, device=self.device)
            except Exception as e:
                self._factories[key] = e
        got = self._factories[key]
        if isinstance(got, Exception):
            raise got
        return got, cap

    def scorer(self, recipe: Recipe, caption: str) -> Scorer:
        """A scorer bound to ``caption``."""
        from capshap.scoring import bind_scorer

        fac, cap = self.factory(recipe)
        return bind_scorer(fac, cap, caption)


def bind_given(scorer_factory: Any, exp: Any) -> Scorer:
    """A scorer for ``exp`` from what a Python caller gave: a :class:`Scorer` (used as is), an
    object with ``bind(caption)``, or a callable that receives the explanation and returns
    either."""
    from capshap.scoring import bind_scorer

    if isinstance(scorer_factory, (Scorer, ScorerFactory)):
        return bind_scorer(scorer_factory, None, exp.caption)
    if callable(scorer_factory):
        return bind_scorer(scorer_factory(exp), None, exp.caption)
    raise TypeError(f"scorer_factory must be a Scorer, have bind(caption) or be callable, got {type(scorer_factory).__name__}")

