"""Idefics3 and SmolVLM (HuggingFaceTB/SmolVLM-256M-Instruct, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["Idefics3Adapter"]


@register("idefics3", "smolvlm")
class Idefics3Adapter(ChatAdapter):
    """"User:<image>{prompt}<end_of_utterance>\\nAssistant:" then the answer (after a space).
    Images go to the processor as one list per sample."""

    name = "idefics3"
    answer_sep = " "

    def process(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        text = self.prompt_text()
        pil = [[im] for im in self.pil(images)]
        return dict(self.processor(images=pil, text=[text] * len(images), return_tensors="pt"))
