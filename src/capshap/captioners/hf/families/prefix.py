"""Captioners whose decoder continues a short prefix: a start token plus an optional prompt
(VisionEncoderDecoder, BLIP, GIT). Shared by their adapters."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from capshap.captioners.hf.families.base import FamilyAdapter, pad_rows

__all__ = ["PrefixAdapter"]


class PrefixAdapter(FamilyAdapter):
    """Pixel values plus decoder ids ``[start] + prompt ids``; the answer follows the prefix.

    The prompt (BLIP's "a picture of", ...) is fed to the decoder but is not part of the
    answer. Subclasses set :meth:`start_id`, and how ``generate`` and the forward pass take
    the ids (:meth:`_generate`, :meth:`_forward`).
    """

    def load_processors(self, load: Callable[[Any, str, str], Any], image_processor: Any, tokenizer: Any) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        if image_processor is None or isinstance(image_processor, (str, os.PathLike)):
            image_processor = load(AutoImageProcessor, os.fspath(image_processor or self.source), "image processor")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load(AutoTokenizer, os.fspath(tokenizer or self.source), "tokenizer")
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.prefix = self._prefix_ids()

    def start_id(self) -> int:
        cfg = self.model.config
        gen = getattr(self.model, "generation_config", None)
        for c in (getattr(gen, "bos_token_id", None), getattr(cfg, "bos_token_id", None)):
            if c is not None:
                return int(c[0] if isinstance(c, (list, tuple)) else c)
        raise ValueError(
            f"model {self.source!r} defines no decoder start / bos token id in its config or generation "
            "config; set model.generation_config.decoder_start_token_id (or bos_token_id)"
        )

    def _prefix_ids(self) -> list[int]:
        prefix = [self.start_id()]
        if self.prompt:
            prompt_ids = self.tokenizer(self.prompt, add_special_tokens=False)["input_ids"]
            if not prompt_ids:
                raise ValueError(f"prompt={self.prompt!r} has no tokens for the tokenizer of {self.source!r}")
            prefix += [int(i) for i in prompt_ids]
        return prefix

    def pixel_values(self, images: Sequence[np.ndarray]) -> Any:
        """list of (H, W, 3) uint8 -> (n, 3, h, w) tensor on the model's device and dtype."""
        pv = self.image_processor(images=self.pil(images), return_tensors="pt")["pixel_values"]
        return pv.to(device=self.device, dtype=self.dtype)

    def prefix_tensor(self, n: int, extra: Sequence[int] = ()) -> Any:
        import torch

        row = list(self.prefix) + [int(i) for i in extra]
        return torch.tensor([row] * n, dtype=torch.long, device=self.device)

    def _generate(self, pv: Any, kw: dict[str, Any]) -> Any:
        return self.model.generate(pixel_values=pv, input_ids=self.prefix_tensor(pv.shape[0]), **kw)

    def _forward(self, pv: Any, ids: Any) -> Any:
        """(n, L, V) logits where position j predicts ids[:, j + 1]."""
        logits = self.model(pixel_values=pv, input_ids=ids).logits
        return logits[:, -ids.shape[1]:, :]  # causal models (GIT) put the image tokens first

    def generate(self, images: Sequence[np.ndarray], generate_kwargs: dict[str, Any]) -> list[tuple[int, ...]]:
        out = self._generate(self.pixel_values(images), dict(generate_kwargs))
        seqs = getattr(out, "sequences", out).detach().cpu().numpy()
        per = max(1, seqs.shape[0] // len(images))  # num_return_sequences > 1: keep the first
        eos = self.eos_ids(generate_kwargs)
        return [self.split_answer(row, len(self.prefix), eos) for row in seqs[::per]]

    def answer_logits(self, images: Sequence[np.ndarray], ids: Sequence[int]) -> Any:
        import torch

        return torch.stack(self.answer_logits_many(images, [ids] * len(images)))

    def answer_logits_many(self, images: Sequence[np.ndarray], answers: Sequence[Sequence[int]]) -> list[Any]:
        """One forward pass for n images with an answer each: the decoder rows
        ``prefix + answers[i][:-1]`` are right-padded to one length (the decoders are
        causal, so no real position sees the padding); n tensors (T_i, V)."""
        import torch

        # the decoder reads prefix + ids[:-1]; position p - 1 + j predicts ids[j]
        p = len(self.prefix)
        rows = pad_rows([self.prefix + [int(i) for i in ids[:-1]] for ids in answers])
        logits = self._forward(self.pixel_values(images), torch.tensor(rows, dtype=torch.long, device=self.device))
        return [logits[j, p - 1 : p - 1 + len(ids), :] for j, ids in enumerate(answers)]
