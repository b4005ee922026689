"""Chat vision-language models: the caption is the assistant's answer to a captioning prompt.

The user turn holds the image and the prompt ("Describe this image in one sentence."), laid
out by the model's chat template; the processor expands the image into its image tokens.
Generation returns only the answer. Teacher forcing appends the answer ids to the same
inputs, and only the logits that predict answer tokens are computed (``logits_to_keep``),
so prompt, image and template tokens are never scored and the LM head never runs over the
hundreds of image positions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from capshap.captioners.hf.families.base import FamilyAdapter, as_id_set, pad_rows

__all__ = ["ChatAdapter", "CHAT_PROMPT"]

logger = logging.getLogger("capshap.captioners.hf")

#: the default captioning prompt of chat models
CHAT_PROMPT = "Describe this image in one sentence."

# config attributes that name image placeholder tokens (never part of an answer)
_PLACEHOLDERS = (
    "image_token_id", "image_token_index", "video_token_id", "vision_start_token_id",
    "vision_end_token_id", "boi_token_id", "eoi_token_id", "boi_token_index", "eoi_token_index",
)


class ChatAdapter(FamilyAdapter):
    """Processor(images, chat-formatted prompt) -> inputs; the answer follows the prompt.

    Class attributes a family sets: ``answer_sep`` (text between the generation prompt and
    the answer when a caption is tokenized, e.g. " " after "ASSISTANT:"), ``answer_fill``
    (value of per-token inputs such as ``token_type_ids`` over the answer; 0 if not named),
    ``nested_images`` (the processor takes one list of images per sample).
    """

    default_prompt = CHAT_PROMPT
    empty_answer_is_error = True
    answer_sep: ClassVar[str] = ""
    answer_fill: ClassVar[dict[str, int]] = {"attention_mask": 1}
    nested_images: ClassVar[bool] = False

    # -- set up ------------------------------------------------------------------------

    def load_processors(self, load: Callable[[Any, str, str], Any], image_processor: Any, tokenizer: Any) -> None:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        self.processor = load(AutoProcessor, self.source, "processor")
        if not hasattr(self.processor, "image_processor"):
            raise ValueError(
                f"the processor of {self.source!r} ({type(self.processor).__name__}) has no image processor; "
                "the folder needs the processor files (preprocessor_config.json / processor_config.json) saved "
                "with the model"
            )
        if image_processor is not None:
            if isinstance(image_processor, (str, os.PathLike)):
                image_processor = load(AutoImageProcessor, os.fspath(image_processor), "image processor")
            self.processor.image_processor = image_processor
        if tokenizer is not None:
            if isinstance(tokenizer, (str, os.PathLike)):
                tokenizer = load(AutoTokenizer, os.fspath(tokenizer), "tokenizer")
            self.processor.tokenizer = tokenizer
        self.image_processor = self.processor.image_processor
        self.tokenizer = self.processor.tokenizer

    def placeholder_ids(self) -> set[int]:
        """Image/video placeholder token ids (from the config and the tokenizer)."""
        out: set[int] = set()
        for cfg in (self.model.config, getattr(self.model.config, "text_config", None)):
            for attr in _PLACEHOLDERS:
                out |= as_id_set(getattr(cfg, attr, None))
        tid = getattr(self.tokenizer, "image_token_id", None)
        if isinstance(tid, int):
            out.add(tid)
        return out

    # -- prompt and inputs -------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]

    def chat_template(self) -> str | None:
        return getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    def prompt_text(self) -> str:
        """The whole prompt as text (one image placeholder, unexpanded), ending where the
        answer starts."""
        template = self.chat_template()
        if not template:
            raise ValueError(
                f"{self.source!r} has no chat template (chat_template.jinja or the tokenizer's "
                "chat_template); capshap needs it to lay out the captioning prompt"
            )
        return self.tokenizer.apply_chat_template(
            self.messages(), chat_template=template, add_generation_prompt=True, tokenize=False
        )

    def context_text(self) -> str:
        """Text the answer follows when a given caption is tokenized in context."""
        return self.prompt_text() + self.answer_sep

    def process(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Processor call for n images with the prompt -> dict of tensors (CPU)."""
        text = self.prompt_text()
        pil = self.pil(images)
        batch = [[im] for im in pil] if self.nested_images else pil
        return dict(self.processor(images=batch, text=[text] * len(images), return_tensors="pt"))

    def encode(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Model inputs for n images of one :meth:`same_length` group: tensors on the
        device, floats in the model's dtype."""
        enc = self.process(images)
        enc.pop("labels", None)
        out = {}
        for k, v in enc.items():
            if hasattr(v, "to"):
                v = v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
            out[k] = v
        return out

    # -- the three operations ----------------------------------------------------------

    def generate(self, images: Sequence[np.ndarray], generate_kwargs: dict[str, Any]) -> list[tuple[int, ...]]:
        kw = {"do_sample": False, "max_new_tokens": 60, **generate_kwargs}
        eos = self.eos_ids(generate_kwargs)
        results: list[tuple[int, ...] | None] = [None] * len(images)
        for idx in _by_shape(images):
            enc = self.encode([images[i] for i in idx])
            start = enc["input_ids"].shape[1]
            out = self.model.generate(**enc, **kw)
            seqs = getattr(out, "sequences", out).detach().cpu().numpy()
            per = max(1, seqs.shape[0] // len(idx))  # num_return_sequences > 1: keep the first
            for i, row in zip(idx, seqs[::per]):
                results[i] = self._cut_placeholders(self.split_answer(row, start, eos))
        return [r if r is not None else () for r in results]

    def _cut_placeholders(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        bad = self.placeholder_ids()
        for j, t in enumerate(ids):
            if t in bad:
                logger.warning(
                    "%s wrote an image placeholder token (id %d) in its answer; the caption ends before it",
                    self.source, t,
                )
                return ids[:j]
        return ids

    def answer_ids(self, caption: str) -> list[int]:
        """The caption tokenized after the prompt, as the model would write it (e.g. with the
        leading space after "ASSISTANT:"); plain tokenization where that is not prefix-stable.
        Text that looks like a special token stays text, so a caption cannot inject image
        placeholders or end-of-turn tokens."""
        # special-token text in a caption ("<image>") stays text: split_special_tokens
        kw = {"add_special_tokens": False, "split_special_tokens": True}
        context = self.context_text()
        a = self.tokenizer(context, **kw)["input_ids"]
        b = self.tokenizer(context + caption, **kw)["input_ids"]
        if len(b) > len(a) and list(b[: len(a)]) == list(a):
            ids = [int(i) for i in b[len(a):]]
            if self.answer_sep and context.endswith(self.answer_sep):
                # the separator ("ASSISTANT:" + " ") is a token of its own before a caption that starts
                # with a symbol: the model reads it before the answer, as a server's template lays it out
                # (the own-head scorer does not score it: it is whitespace)
                bare = self.tokenizer(context[: -len(self.answer_sep)], **kw)["input_ids"]
                if len(a) > len(bare) and list(a[: len(bare)]) == list(bare):
                    ids = [int(i) for i in a[len(bare):]] + ids
            return ids
        return [int(i) for i in self.tokenizer(self.answer_sep + caption, **kw)["input_ids"]]

    def forced_inputs(self, images: Sequence[np.ndarray], ids: Sequence[int]) -> dict[str, Any]:
        """Model inputs for n images of one shape with ``ids[:-1]`` appended as the answer."""
        return self.forced_inputs_many(images, [ids] * len(images))

    def answer_logits(self, images: Sequence[np.ndarray], ids: Sequence[int]) -> Any:
        import torch

        return torch.stack(self.answer_logits_many(images, [ids] * len(images)))

    def forced_inputs_many(self, images: Sequence[np.ndarray], answers: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Model inputs for n images of one :meth:`same_length` group, the i-th with ``answers[i][:-1]``
        appended as its answer, right-padded to the longest (repeating the row's last id,
        with the answer's fill values: the answer is causal, so no real position sees the
        padding)."""
        import torch

        enc = self.encode(images)
        n, L = enc["input_ids"].shape
        k = max(len(ids) for ids in answers) - 1
        if k == 0:
            return enc
        last = enc["input_ids"][:, -1].tolist()
        tails = pad_rows([[last[j]] + [int(i) for i in ids[:-1]] for j, ids in enumerate(answers)])
        for key, v in list(enc.items()):
            if key == "input_ids":
                tail = torch.tensor([t[1:] for t in tails], dtype=v.dtype, device=v.device)
            elif hasattr(v, "shape") and v.dim() == 2 and tuple(v.shape) == (n, L):
                tail = torch.full((n, k), self.answer_fill.get(key, 0), dtype=v.dtype, device=v.device)
            else:
                continue
            enc[key] = torch.cat([v, tail], dim=1)
        return enc

    def same_length(self, images: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of images grouped so that each group becomes prompts of one length: all
        images where the processor resizes every image to one size (:attr:`input_size`),
        else by image shape (dynamic resolution: the shape sets the number of image tokens)."""
        if self.input_size is not None:
            return [list(range(len(images)))]
        return _by_shape(images)

    def answer_logits_many(self, images: Sequence[np.ndarray], answers: Sequence[Sequence[int]]) -> list[Any]:
        """One forward pass per group of :meth:`same_length` for n images with an answer
        each (padded teacher forcing, :meth:`forced_inputs_many`); n tensors (T_i, V)."""
        parts: list[Any] = [None] * len(images)
        for idx in self.same_length(images):
            group = [answers[i] for i in idx]
            T = max(len(ids) for ids in group)
            enc = self.forced_inputs_many([images[i] for i in idx], group)
            logits = self.model(**enc, logits_to_keep=T, use_cache=False).logits
            logits = logits[:, -T:, :]  # where logits_to_keep is ignored
            for j, i in enumerate(idx):
                parts[i] = logits[j, : len(answers[i]), :]
        return parts


def _by_shape(images: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of images grouped by shape, groups in first-seen order (images of one shape
    become the same number of image tokens, so a group needs no padding)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(np.shape(im)), []).append(i)
    return list(groups.values())
