"""Gemma 3 (google/gemma-3-4b-it, ...): SigLIP vision tower + Gemma 3 language model."""

from __future__ import annotations

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["Gemma3Adapter"]


@register("gemma3")
class Gemma3Adapter(ChatAdapter):
    """"<bos><start_of_turn>user\\n<start_of_image>{prompt}<end_of_turn>\\n<start_of_turn>model\\n"
    then the answer; answer tokens have ``token_type_ids`` 0 (text), image tokens 1."""

    name = "gemma3"
    nested_images = True
