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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["Settings", "SettingError", "FrozenMap", "freeze", "thaw", "settings_from_legacy_params"]

_TOKENS = ("words", "pieces")

#: Settings that say how a run is carried out, not what it computes: a resumed run may
#: change them (they are not in :meth:`Settings.engine_key`).
RUN_ONLY = ("cache_dir", "batch_size_model", "runner", "in_flight", "ray_address", "workers", "gpus_per_worker",
            "grounded_above", "contradicted_below")


class FrozenMap(Mapping):
    """An immutable, hashable mapping (the options dicts of :class:`Settings`).

    Values are frozen too (dicts become FrozenMaps, lists tuples), so a Settings can be
    neither changed in place nor made unhashable through one of its options.
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None):
        items = {str(k): freeze(v) for k, v in (data or {}).items()}
        object.__setattr__(self, "_items", items)
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(tuple(sorted(self._items.items(), key=lambda kv: kv[0]))))
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> Any:  # pickles (Ray ships Settings) as a plain dict
        return (FrozenMap, (thaw(self),))


def freeze(value: Any) -> Any:
    """``value`` made immutable and hashable: dicts -> :class:`FrozenMap`, lists/tuples ->
    tuples (recursively); other values as they are."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The JSON-ready form of a frozen value: FrozenMaps -> dicts, tuples -> lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


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
    runner, in_flight, ray_address, workers, gpus_per_worker
        How the images are run (they never change the values): ``"auto"`` (in flight where
        that keeps values exact: a GPU or a server captioner; else serial), ``"serial"``,
        ``"in_flight"``, ``"ray"`` or any runner registered in
        :data:`capshap.runners.RUNNERS`; images at once (in flight, or per Ray actor); the
        Ray cluster (None: a local one), its actors and the GPUs each asks for. The
        options dicts (``captioner_options``, ``scorer_options``, ``generate``) are stored
        frozen (:class:`FrozenMap`): a Settings is immutable and hashable.
    grounded_above, contradicted_below
        A word whose evidence (score on the image minus score with it all hidden) is
        above ``grounded_above`` is *grounded*, below ``contradicted_below``
        *contradicted*, else *prior*-driven (see :mod:`capshap.grounding`); score units.
    """

    captioner: str | None = "builtin"
    captioner_options: Mapping[str, Any] = field(default_factory=FrozenMap)
    scorer: str | None = "auto"
    scorer_options: Mapping[str, Any] = field(default_factory=FrozenMap)
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
    generate: Mapping[str, Any] | None = None
    caption: str | None = None
    contrast: str | None = None
    tokens: str = "words"
    render_size: str | int = "full"
    cache_dir: str | None = None
    runner: str = "auto"
    in_flight: int | None = None
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0
    grounded_above: float = 0.5
    contradicted_below: float = -0.5

    def __post_init__(self) -> None:
        # deeply immutable: dicts become FrozenMaps, their lists tuples (hashable, read-only);
        # a value of the wrong type is left as it is, for validate() to name
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping) and not isinstance(value, FrozenMap):
                object.__setattr__(self, f.name, FrozenMap(value))

    # ------------------------------------------------------------------ validation

    def validate(self) -> "Settings":
        """Check every setting; raise ValueError naming the first bad one. Returns self."""
        from capshap.masking import parse_fill

        # the engine's own bounds (capshap.owen.check_params): f(image), f(all masked), one split
        _check_int("max_evals", self.max_evals, 3)
        _check_int("batch_size", self.batch_size, 1)
        if self.fixed_context not in (None, 0, 1) or isinstance(self.fixed_context, bool):
            raise SettingError("fixed_context", self.fixed_context, "must be None, 0 or 1")
        if self.seed is not None:  # numpy's SeedSequence takes non-negative integers
            _check_int("seed", self.seed, 0)
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
        if not isinstance(self.mask, str):
            raise SettingError("mask", self.mask, "must be a fill spec (text); pass a background image as mask= to explain()")
        if self.mask != "image":
            try:
                parse_fill(self.mask)
            except ValueError as e:
                raise SettingError("mask", self.mask, str(e)) from None
        for name in ("caption", "contrast", "prompt"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise SettingError(name, value, f"must be text (a str), got {type(value).__name__}")
            if not value.strip():
                what = {"caption": "the caption to explain, or None to generate one",
                        "contrast": "the caption to compare against",
                        "prompt": "the captioning prompt, or None for the captioner's default"}[name]
                raise SettingError(name, value, f"is empty; give {what}")
        if self.contrast is not None:
            if (self.scorer or "auto").partition(":")[0].lower() not in ("auto", "own", "surrogate"):
                raise SettingError("contrast", self.contrast,
                                   f"needs log-probabilities: use --scorer own or surrogate, not {self.scorer}")
        for name in ("captioner_options", "scorer_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise SettingError(name, getattr(self, name), "must be a dict of option names to values")
        if self.generate is not None and not isinstance(self.generate, Mapping):
            raise SettingError("generate", self.generate, "must be a dict of generation settings, e.g. {'max_new_tokens': 20}")
        if self.channels and self.tree != "axis":
            raise SettingError("channels", True, "shap's channel leaves only work with tree='axis'")
        for name in ("grounded_above", "contradicted_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SettingError(name, v, "must be a finite number (score units)")
        if self.contradicted_below > self.grounded_above:
            raise SettingError("contradicted_below", self.contradicted_below,
                               f"must not be above grounded_above ({self.grounded_above:g})")
        self._validate_runner()
        self._validate_device()
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

    def _validate_runner(self) -> None:
        """The runner's settings (the runner's name is checked against the registry by the
        run owner, :class:`capshap.run.Run`)."""
        if not isinstance(self.runner, str) or not self.runner.strip():
            raise SettingError("runner", self.runner, "must name a runner, e.g. auto, serial, in_flight or ray")
        _check_int("in_flight", self.in_flight, 1, allow_none=True)
        _check_int("workers", self.workers, 1, allow_none=True)
        g = self.gpus_per_worker
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise SettingError("gpus_per_worker", g, "must be a finite number >= 0")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise SettingError("ray_address", self.ray_address, "must be HOST:PORT, ray://HOST:PORT or None")
        ray = self.runner.lower() == "ray"
        for name, value, default in (("workers", self.workers, None), ("gpus_per_worker", g, 0),
                                     ("ray_address", self.ray_address, None)):
            if value != default and not ray:
                raise SettingError(name, value, "applies to the Ray runner only: add --ray (runner='ray')")
        if self.runner.lower() == "serial" and self.in_flight not in (None, 1):
            raise SettingError("in_flight", self.in_flight, "a serial run explains one image at a time: "
                               "leave --in-flight out, or use the in-flight runner")

    def _validate_device(self) -> None:
        """A torch device that is not there fails now, not once per image."""
        dev = self.device
        if dev is None:
            return
        if not isinstance(dev, str) or not dev.strip():
            raise SettingError("device", dev, "must be a torch device such as cpu, cuda, cuda:1 or mps")
        kind, _, index = dev.strip().lower().partition(":")
        if kind == "cpu":
            return
        if kind not in ("cuda", "mps") or (index and not index.isdigit()):
            raise SettingError("device", dev, "is not a torch device; use cpu, cuda, cuda:N or mps")
        if self.runner.lower() == "ray":
            return  # the device is the workers', not this machine's
        try:
            import torch
        except ImportError:
            raise SettingError("device", dev, "needs torch: pip install torch") from None
        if kind == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise SettingError("device", dev, "no CUDA GPU is available to torch here; use --device cpu "
                                   "(or leave --device out)")
            if index and int(index) >= n:
                raise SettingError("device", dev, f"there are {n} CUDA GPU(s) here (cuda:0 to cuda:{n - 1})")
        elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SettingError("device", dev, "Apple's MPS is not available to torch here; use --device cpu")

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting (options as plain dicts)."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}

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
        how the run is carried out (:data:`RUN_ONLY`: the cache folder, the model batch
        size and the runner's settings)."""
        d = self.to_dict()
        for name in RUN_ONLY:
            d.pop(name, None)
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
