"""Registries: names to factories, one per role (captioners, scorers, fills, trees).

A spec is a short text such as ``"hf:Salesforce/blip-image-captioning-base"``: the name
before the first colon picks the entry, the rest is its argument. Per-kind options
(``--captioner-opt K=V``) arrive as a dict. Adding a captioner is one file plus one call::

    from capshap.captioners import CAPTIONERS

    @CAPTIONERS.register("mine", help="mine:MODEL, my own captioner", options=("temperature",))
    def _make(arg, options, context):
        return MyCaptioner(arg, **options)

``context`` carries the run-wide settings a factory may use (``device``, ``cache_dir``,
``batch_size``, ``prompt``, ``generate``, ...); ``options`` holds only what the user gave
for this kind, checked against the declared ``options`` names (``"*"`` accepts any).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "Entry", "SpecError", "parse_spec", "parse_options"]

T = TypeVar("T")


class SpecError(ValueError):
    """A spec or option that cannot be used; the message names the option and the value."""

    def __init__(self, option: str, value: str, reason: str):
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"{option} {value}: {reason}")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered kind: its name, factory, help line and accepted options."""

    name: str
    factory: Callable[[str, dict[str, Any], Mapping[str, Any]], T]
    help: str = ""
    options: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    needs_arg: bool = False


def parse_spec(spec: str) -> tuple[str, str]:
    """``"hf:org/model"`` -> ``("hf", "org/model")``; the name is lower-cased."""
    name, _, arg = str(spec).strip().partition(":")
    return name.strip().lower(), arg.strip()


def _convert(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


def parse_options(text: str | list[str] | None, option: str) -> dict[str, Any]:
    """``"a=1,b=x"`` (or a list of ``K=V`` strings) -> ``{"a": 1, "b": "x"}``.

    Integers, floats, true/false and none are converted; anything else stays a string.
    Raises :class:`SpecError` naming ``option`` for a part that is not ``KEY=VALUE``.
    """
    if text is None:
        return {}
    parts = text if isinstance(text, list) else [text]
    out: dict[str, Any] = {}
    for chunk in parts:
        for part in filter(None, (p.strip() for p in str(chunk).split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or not key.isidentifier():
                raise SpecError(option, str(chunk), f"{part!r} is not KEY=VALUE; e.g. {option} max_new_tokens=20")
            out[key] = _convert(raw.strip())
    return out


@dataclass
class Registry(Generic[T]):
    """Names to factories for one role; ``create(spec)`` builds one."""

    role: str
    option: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def register(
        self,
        name: str,
        factory: Callable[..., T] | None = None,
        *,
        help: str = "",
        options: tuple[str, ...] = (),
        aliases: tuple[str, ...] = (),
        needs_arg: bool = False,
    ) -> Any:
        """Register ``factory(arg, options, context)`` under ``name`` (usable as a decorator)."""

        def add(f: Callable[..., T]) -> Callable[..., T]:
            key = name.lower()
            for n in (key, *aliases):
                if n in self._entries or n in self._aliases:
                    raise ValueError(f"{self.role} {n!r} is registered already")
            self._entries[key] = Entry(key, f, help, tuple(options), tuple(aliases), needs_arg)
            for a in aliases:
                self._aliases[a.lower()] = key
            return f

        return add(factory) if factory is not None else add

    def unregister(self, name: str) -> None:
        key = self._aliases.pop(name.lower(), name.lower())
        entry = self._entries.pop(key)
        for a in entry.aliases:
            self._aliases.pop(a, None)

    def __contains__(self, name: str) -> bool:
        n = name.lower()
        return n in self._entries or n in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Entry[T]:
        n = name.lower()
        key = self._aliases.get(n, n)
        if key not in self._entries:
            raise SpecError(self.option, name, f"unknown {self.role}; use {self.help_text()}")
        return self._entries[key]

    def help_text(self) -> str:
        """One line listing the registered kinds, for ``--help`` and errors."""
        return ", ".join(e.help.split(",")[0] if e.help else e.name for e in self)

    def describe(self) -> str:
        """Several lines: each kind with its help text and options."""
        lines = []
        first_with: dict[tuple[str, ...], str] = {}  # kinds sharing options list them once
        for e in self:
            extra = ""
            if e.options and e.options != ("*",):
                same = first_with.setdefault(e.options, e.name)
                extra = f" (options: {', '.join(e.options)})" if same == e.name else f" (options: as {same})"
            lines.append(f"  {e.name:<12} {e.help}{extra}")
        return "\n".join(lines)

    def check(self, spec: str, options: Mapping[str, Any] | None = None) -> Entry[T]:
        """Validate a spec and its options without building anything."""
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError(self.option, repr(spec), f"empty {self.role}; use {self.help_text()}")
        name, arg = parse_spec(spec)
        entry = self.get(name)
        if entry.needs_arg and not arg:
            raise SpecError(self.option, spec, f"give an argument: {entry.help or entry.name}")
        unknown = sorted(set(options or {}) - set(entry.options)) if "*" not in entry.options else []
        if unknown:
            allowed = ", ".join(entry.options) or "none"
            raise SpecError(
                f"{self.option}-opt", ",".join(unknown),
                f"not an option of {self.role} {entry.name!r} (it takes: {allowed})",
            )
        return entry

    def create(self, spec: str, options: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None) -> T:
        """Build the object a spec names. Errors from the factory become :class:`SpecError`
        naming the option and spec (the original error is kept as ``__cause__``)."""
        entry = self.check(spec, options)
        _, arg = parse_spec(spec)
        try:
            return entry.factory(arg, dict(options or {}), dict(context or {}))
        except SpecError:
            raise
        except ImportError as e:
            raise SpecError(self.option, spec, f"a package is missing: {e}") from e
        except Exception as e:  # the factory's own message, in the user's terms
            raise SpecError(self.option, spec, str(e) or type(e).__name__) from e
