"""PaliGemma (google/paligemma-3b-mix-224, ...): a task prompt such as "caption en", no chat template."""

from __future__ import annotations

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["PaliGemmaAdapter"]


@register("paligemma")
class PaliGemmaAdapter(ChatAdapter):
    """The processor lays out image tokens + BOS + prompt + newline; the answer follows.
    Prompt tokens attend both ways (``token_type_ids`` 0), answer tokens causally (1)."""

    name = "paligemma"
    default_prompt = "caption en"
    answer_fill = {"attention_mask": 1, "token_type_ids": 1}

    def prompt_text(self) -> str:
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        return image_token + self.prompt  # the processor adds BOS after the image tokens, and "\n"

    def context_text(self) -> str:
        return self.prompt + "\n"
