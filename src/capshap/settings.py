"""Settings: every knob of a run, typed, validated once, and serializable.

A :class:`Settings` says how to repeat a run anywhere: the engine's parameters and the specs
that rebuild the captioner, scorer, fill and tree from their registries. It is stored in
each :class:`~capshap.explanation.Explanation` (``exp.settings``), written into the run
folder's manifest, read back by ``Explanation.load`` and ``capshap evaluate``, and is what a
distributed runner ships to its workers. Secrets never go into it: keys come from the
environment where the captioner is built.

Examples
--------
>>> s = Settings(max_evals=100, mask="blur(16,16)")
>>> s.validate()
>>> Settings.from_dict(s.to_dict()) == s
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["Settings", "SettingError", "settings_from_legacy_params"]

_TOKENS = ("words", "pieces")


class SettingError(ValueError):
    """A bad setting: ``str(err)`` is ``"name=value: what is wrong"``; ``setting``,
    ``value`` and ``reason`` let the CLI say ``--name value: what is wrong``."""

    def __init__(self, setting: str, value: Any, reason: str):
        self.setting, self.value, self.reason = setting, value, reason
        super().__init__(f"{setting}={value!r}: {reason}")

    def as_option(self) -> str:
        """The message in command-line terms: ``--max-evals 1: must be ...``."""
        return f"--{self.setting.replace('_', '-')} {self.value}: {self.reason}"


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingError(name, value, f"must be an integer >= {minimum}" + (" or None" if allow_none else ""))


@dataclass(frozen=True)
class Settings:
    """Every setting of a run (see the CLI's ``capshap explain --help`` for each one).

    Attributes
    ----------
    captioner, captioner_options
        Registry spec (``"builtin"``, ``"hf:ID_OR_PATH"``, ``"azure-v4"``, ...) and the kind's
        own options. ``captioner`` is None when a captioner object was passed by hand.
    scorer, scorer_options
        ``"auto"``, ``"own"``, ``"presence"``, ``"surrogate:LM"``; None for a scorer object.
    mask
        The fill of hidden regions: ``"inpaint_ns"``, ``"inpaint_telea"``, ``"blur(kx,ky)"``,
        a grey level or ``"r,g,b"``; ``"image"`` when a background array was passed.
    max_evals, batch_size, fixed_context, seed
        The Owen engine's budget (model evaluations per image), masked images per model
        call, None / 0 / 1, and the seed that breaks ties.
    tolerance
        Adaptive budget: stop expanding regions once the largest change left is below this
        fraction of the largest word total (``max_evals`` is then the cap); 0: fixed budget.
    tree, n_segments, channels
        Region tree spec (``"axis"``, ``"slic"``, ``"labels:PATH"``, ...; ``"custom"`` for a
        tree object), superpixel count, and shap's channel leaves (axis tree only).
    max_side
        Longest image side in pixels after loading (None: full size).
    max_pixels
        Largest image (width x height) decoded at all; bigger files are refused unread.
    device, batch_size_model
        Torch device for models (None: the captioner's default) and images per forward
        pass of the captioner (None: its default).
    prompt, generate
        Captioning prompt and generation settings for Hugging Face captioners.
    caption
        Explain this caption instead of the captioner's own (None: generate one).
    contrast
        Explain why the model prefers its caption over this one: the score is the
        whole-caption log-probability difference (see :mod:`capshap.scoring.contrast`).
    tokens
        ``"words"`` (sub-word pieces merged, their values summed) or ``"pieces"``.
    render_size
        Resolution masks are rendered at: ``"full"`` (the loaded image; exact shap
        parity), ``"auto"`` (the captioner's input size where known) or an int side.
    cache_dir
        Caption cache folder (None: no on-disk cache).
    """

    captioner: str | None = "builtin"
    captioner_options: dict[str, Any] = field(default_factory=dict)
    scorer: str | None = "auto"
    scorer_options: dict[str, Any] = field(default_factory=dict)
    mask: str = "inpaint_ns"
    max_evals: int = 300
    batch_size: int = 50
    fixed_context: int | None = None
    seed: int | None = 0
    tolerance: float = 0.0
    tree: str = "axis"
    n_segments: int = 64
    channels: bool = False
    max_side: int | None = 500
    max_pixels: int = 50_000_000
    device: str | None = None
    batch_size_model: int | None = None
    prompt: str | None = None
    generate: dict[str, Any] | None = None
    caption: str | None = None
    contrast: str | None = None
    tokens: str = "words"
    render_size: str | int = "full"
    cache_dir: str | None = None

    # ------------------------------------------------------------------ validation

    def validate(self) -> "Settings":
        """Check every setting; raise ValueError naming the first bad one. Returns self."""
        from capshap.masking import parse_fill

        _check_int("max_evals", self.max_evals, 2)
        _check_int("batch_size", self.batch_size, 1)
        if self.fixed_context not in (None, 0, 1) or isinstance(self.fixed_context, bool):
            raise SettingError("fixed_context", self.fixed_context, "must be None, 0 or 1")
        if self.seed is not None:
            _check_int("seed", self.seed, -(2**63))
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not 0 <= self.tolerance < 1:
            raise SettingError("tolerance", self.tolerance, "must be a number in [0, 1): a fraction of the largest word total")
        _check_int("n_segments", self.n_segments, 2)
        _check_int("max_side", self.max_side, 8, allow_none=True)
        _check_int("max_pixels", self.max_pixels, 64)
        _check_int("batch_size_model", self.batch_size_model, 1, allow_none=True)
        if not isinstance(self.channels, bool):
            raise SettingError("channels", self.channels, "must be True or False")
        if self.tokens not in _TOKENS:
            raise SettingError("tokens", self.tokens, f"must be one of {', '.join(_TOKENS)}")
        rs = self.render_size
        if not (rs in ("full", "auto") or (isinstance(rs, int) and not isinstance(rs, bool) and rs >= 8)):
            raise SettingError("render_size", rs, "must be 'full', 'auto' or an integer >= 8 (pixels)")
        if self.mask != "image":
            try:
                parse_fill(self.mask)
            except ValueError as e:
                raise SettingError("mask", self.mask, str(e)) from None
        if self.caption is not None and not str(self.caption).strip():
            raise SettingError("caption", self.caption, "is empty; give the caption to explain, or None to generate one")
        if self.contrast is not None:
            if not str(self.contrast).strip():
                raise SettingError("contrast", self.contrast, "is empty; give the caption to compare against")
            if (self.scorer or "auto").partition(":")[0].lower() not in ("auto", "own", "surrogate"):
                raise SettingError("contrast", self.contrast,
                                   f"needs log-probabilities: use --scorer own or surrogate, not {self.scorer}")
        for name in ("captioner_options", "scorer_options"):
            if not isinstance(getattr(self, name), dict):
                raise SettingError(name, getattr(self, name), "must be a dict of option names to values")
        if self.generate is not None and not isinstance(self.generate, dict):
            raise SettingError("generate", self.generate, "must be a dict of generation settings, e.g. {'max_new_tokens': 20}")
        if self.channels and self.tree != "axis":
            raise SettingError("channels", True, "shap's channel leaves only work with tree='axis'")
        if self.captioner is not None:
            from capshap.captioners import CAPTIONERS

            CAPTIONERS.check(self.captioner, self.captioner_options)
        if self.scorer is not None:
            from capshap.scoring import SCORERS

            SCORERS.check(self.scorer, self.scorer_options)
        if self.tree != "custom":
            from capshap.regions import TREES

            TREES.check(self.tree)
        return self

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Settings":
        """Settings from :meth:`to_dict`'s output; unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"settings must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown settings {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def engine_key(self) -> dict[str, Any]:
        """The settings that change the values of one image (for resumable runs): all but
        the cache folder and the model batch size."""
        d = self.to_dict()
        d.pop("cache_dir", None)
        d.pop("batch_size_model", None)
        return d


def settings_from_legacy_params(params: dict[str, Any]) -> Settings:
    """Settings from the ``params`` dict that capshap 0.1 saved in ``NAME.json``.

    Such files keep loading: their ``params`` become these settings (fields that 0.1 did
    not record keep their defaults).
    """
    kw: dict[str, Any] = {"tokens": "pieces"}  # 0.1 scored the model's pieces
    for key in ("max_evals", "batch_size", "fixed_context", "seed", "channels", "max_side", "device", "prompt"):
        if key in params:
            kw[key] = params[key]
    if isinstance(params.get("mask"), str):
        kw["mask"] = "image" if params["mask"] == "background image" else params["mask"]
    elif isinstance(params.get("mask"), (int, float)):
        kw["mask"] = str(params["mask"])
    elif isinstance(params.get("mask"), list) and len(params["mask"]) == 3:  # an (r, g, b) colour
        kw["mask"] = ",".join(str(v) for v in params["mask"])
    if params.get("n_segments") is not None:
        kw["n_segments"] = params["n_segments"]
    tree = params.get("tree_spec") or params.get("tree")
    if isinstance(tree, str):
        kw["tree"] = tree if tree in ("axis", "slic", "felzenszwalb", "quickshift") or ":" in tree else "custom"
    if params.get("captioner_spec"):
        kw["captioner"] = params["captioner_spec"]
    else:
        kw["captioner"] = None
    if params.get("scorer_spec"):
        kw["scorer"] = params["scorer_spec"]
    else:
        kw["scorer"] = None
    if params.get("generate_kwargs"):
        kw["generate"] = params["generate_kwargs"]
    if isinstance(kw.get("max_evals"), float) and math.isfinite(kw["max_evals"]):
        kw["max_evals"] = int(kw["max_evals"])
    return Settings(**kw)
