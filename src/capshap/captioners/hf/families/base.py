"""The interface every Hugging Face model family implements, and the family registry.

A :class:`FamilyAdapter` knows how one family of models (BLIP, LLaVA, Qwen2-VL, ...) turns
images and a prompt into model inputs. :class:`~capshap.captioners.hf.HFCaptioner` and its
own-head scorer only talk to the adapter:

- ``generate(images, generate_kwargs)``: the answer ids the model writes for each image
  (prompt, image and template tokens removed, cut before the first end-of-answer token);
- ``answer_ids(caption)``: a caption given as text, tokenized the way it would stand as the
  model's answer;
- ``answer_logits(images, ids)``: one teacher-forced forward pass over a batch of images
  with ``ids`` as the answer, returning only the logits that predict each answer token;
- ``answer_logits_many(images, answers)``: the same with a different answer per image
  (padded teacher forcing), so that the masked batches of several captions share one
  forward pass (the in-flight runner stacks them).

Adding a family is one file with a subclass plus ``@register("model_type", ...)``, imported
in ``families/__init__.py``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from capshap.registry import Registry

__all__ = [
    "FamilyAdapter",
    "pad_rows",
    "UnsupportedFamilyError",
    "register",
    "adapter_for",
    "supported_families",
    "as_id_set",
    "size_of",
    "FAMILIES",
]

logger = logging.getLogger("capshap.captioners.hf")

#: model_type -> adapter class: the same registry mechanism as captioners, scorers, trees
#: and runners (an entry per family, its other model types as aliases).
FAMILIES: Registry[type["FamilyAdapter"]] = Registry("model family", "--captioner")


class UnsupportedFamilyError(ValueError):
    """The model's ``model_type`` has no capshap adapter."""


def register(*model_types: str) -> Callable[[type["FamilyAdapter"]], type["FamilyAdapter"]]:
    """Class decorator: use the adapter for configs whose ``model_type`` is one of these."""

    def deco(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
        for mt in model_types:
            if mt in FAMILIES and FAMILIES.get(mt).factory is not cls:
                raise ValueError(f"model_type {mt!r} is already handled by {FAMILIES.get(mt).factory.__name__}")
        if model_types[0] not in FAMILIES:
            FAMILIES.register(model_types[0], cls, help=cls.name, aliases=tuple(model_types[1:]))
        cls.model_types = tuple(model_types)
        return cls

    return deco


def supported_families() -> dict[str, tuple[str, ...]]:
    """Family name -> the config ``model_type`` values it handles."""
    return {entry.factory.name: entry.factory.model_types for entry in FAMILIES}


def adapter_for(model_type: str, name: str) -> type["FamilyAdapter"]:
    """The adapter class for a config's ``model_type``; ``name`` (the model id) is only for
    the error, which names the model type and every supported family."""
    if model_type in FAMILIES:
        return FAMILIES.get(model_type).factory
    fams = "; ".join(f"{fam} ({', '.join(types)})" for fam, types in sorted(supported_families().items()))
    raise UnsupportedFamilyError(
        f"{name!r} is a model of type {model_type!r} (its config's model_type), which is not a family "
        f"HFCaptioner supports. HFCaptioner loads image-to-text and chat vision-language models of "
        f"these families (model_type values in brackets): {fams}. A text-only language model belongs in "
        "SurrogateFactory(captioner, lm, tokenizer); a new family needs an adapter in "
        "capshap/captioners/hf/families/."
    )


def as_id_set(x: Any) -> set[int]:
    """None, an int or a list of ints (as in configs) -> a set of ints."""
    if x is None:
        return set()
    if isinstance(x, (list, tuple, set)):
        return {int(v) for v in x if v is not None}
    return {int(x)}


def pad_rows(rows: Sequence[Sequence[int]]) -> list[list[int]]:
    """Right-pad id rows to one length by repeating each row's last id.

    For causal decoders: a position never attends to the positions after it, so what
    fills the tail of a shorter row is never seen by that row's real positions (its own
    last id keeps every filler a valid id of the vocabulary)."""
    width = max(len(r) for r in rows)
    return [[int(i) for i in r] + [int(r[-1])] * (width - len(r)) for r in rows]


def size_of(image_processor: Any) -> tuple[int, int] | None:
    """The (height, width) an image processor resizes (and crops) every image to, or None
    where the size depends on the image (shortest-edge resizes without a crop, dynamic
    resolution)."""
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop:
        hw = _hw(crop)
        if hw:
            return hw
    return _hw(getattr(image_processor, "size", None))


def _hw(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    get = size.get if hasattr(size, "get") else (lambda k, d=None: getattr(size, k, d))
    h, w = get("height", None), get("width", None)
    if h and w:
        return int(h), int(w)
    return None


class FamilyAdapter(ABC):
    """How one model family captions and teacher-forces (see the module docstring).

    Parameters
    ----------
    model : PreTrainedModel
        The loaded model (on its device, in eval mode).
    source : str
        Id or folder the processors load from.
    prompt : str or None
        The captioning prompt; None uses :attr:`default_prompt`.
    load : callable
        ``load(auto_class, name, what)`` -> object: ``from_pretrained`` with capshap's errors
        and the user's load options.
    image_processor, tokenizer : optional
        Objects given by the user instead of loading them from ``source``.
    """

    #: short family name, also ``HFCaptioner.kind``
    name: ClassVar[str] = ""
    #: config model_type values (set by :func:`register`)
    model_types: ClassVar[tuple[str, ...]] = ()
    #: the prompt used when the user gives none (None: no prompt)
    default_prompt: ClassVar[str | None] = None
    #: whether an empty answer makes ``HFCaptioner.caption`` raise (else it warns)
    empty_answer_is_error: ClassVar[bool] = False

    def __init__(
        self,
        model: Any,
        source: str,
        prompt: str | None,
        load: Callable[[Any, str, str], Any],
        image_processor: Any = None,
        tokenizer: Any = None,
    ):
        self.model = model
        self.source = source
        self.prompt = prompt if prompt else self.default_prompt
        self.load_processors(load, image_processor, tokenizer)

    # -- set up ------------------------------------------------------------------------

    @abstractmethod
    def load_processors(self, load: Callable[[Any, str, str], Any], image_processor: Any, tokenizer: Any) -> None:
        """Set ``self.tokenizer`` and ``self.image_processor`` (and any processor)."""

    @property
    def device(self) -> Any:
        return self.model.device

    @property
    def dtype(self) -> Any:
        return self.model.dtype

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the processor resizes every image to, or None where it varies."""
        return size_of(self.image_processor)

    def eos_ids(self, generate_kwargs: dict[str, Any]) -> set[int]:
        """Ids that end an answer: the generation config's EOS plus any in generate_kwargs."""
        cfg = self.model.config
        gen = getattr(self.model, "generation_config", None)
        eos = as_id_set(getattr(gen, "eos_token_id", None)) or as_id_set(getattr(cfg, "eos_token_id", None))
        return eos | as_id_set(generate_kwargs.get("eos_token_id"))

    def special_ids(self) -> set[int]:
        """Ids fed to the model but never scored (the tokenizer's special tokens)."""
        return {int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or []}

    # -- the three operations ----------------------------------------------------------

    @abstractmethod
    def generate(self, images: Sequence[np.ndarray], generate_kwargs: dict[str, Any]) -> list[tuple[int, ...]]:
        """Greedy (or as configured) answers: N images (H, W, 3) uint8 -> N tuples of answer
        ids, without prompt, image or template tokens, cut before the first end-of-answer id."""

    def answer_ids(self, caption: str) -> list[int]:
        """``caption`` tokenized as the model's answer (no special tokens added)."""
        return [int(i) for i in self.tokenizer(caption, add_special_tokens=False)["input_ids"]]

    @abstractmethod
    def answer_logits(self, images: Sequence[np.ndarray], ids: Sequence[int]) -> Any:
        """Teacher-forced logits: n images and answer ids (T,) -> tensor (n, T, V) whose
        row t predicts ids[t]. One forward pass; only these T positions reach the LM head
        where the model allows it."""

    def answer_logits_many(self, images: Sequence[np.ndarray], answers: Sequence[Sequence[int]]) -> list[Any]:
        """Teacher-forced logits with one answer per image: n images and n id lists (T_i,)
        -> n tensors (T_i, V), row t of the i-th predicting ``answers[i][t]``.

        This default makes one :meth:`answer_logits` pass per distinct answer; the
        families here override it with one padded pass for all of them.
        """
        out: list[Any] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, ids in enumerate(answers):
            groups.setdefault(tuple(int(t) for t in ids), []).append(i)
        for ids, idx in groups.items():
            logits = self.answer_logits([images[i] for i in idx], list(ids))
            for j, i in enumerate(idx):
                out[i] = logits[j]
        return out

    # -- helpers -----------------------------------------------------------------------

    def split_answer(self, row: Sequence[int], start: int, eos: set[int]) -> tuple[int, ...]:
        """Ids of a generated row from ``start`` up to the first EOS; trailing padding dropped."""
        content = [int(i) for i in row[start:]]
        for j, t in enumerate(content):
            if t in eos:
                content = content[:j]
                break
        pad = getattr(self.tokenizer, "pad_token_id", None)
        while content and pad is not None and content[-1] == pad:
            content.pop()
        return tuple(content)

    def pil(self, images: Sequence[np.ndarray]) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(np.asarray(im)) for im in images]
