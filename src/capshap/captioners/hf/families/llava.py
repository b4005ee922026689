"""LLaVA (llava-hf/llava-1.5-7b-hf, ...): CLIP vision tower + Llama-style language model."""

from __future__ import annotations

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["LlavaAdapter"]


@register("llava")
class LlavaAdapter(ChatAdapter):
    """"USER: <image>\\n{prompt} ASSISTANT:" then the answer (after a space)."""

    name = "llava"
    answer_sep = " "
