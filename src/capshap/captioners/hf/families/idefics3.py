"""Idefics3 and SmolVLM (HuggingFaceTB/SmolVLM-256M-Instruct, ...)."""

from __future__ import annotations

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["Idefics3Adapter"]


@register("idefics3", "smolvlm")
class Idefics3Adapter(ChatAdapter):
    """"User:<image>{prompt}<end_of_utterance>\\nAssistant:" then the answer (after a space)."""

    name = "idefics3"
    answer_sep = " "
    nested_images = True
