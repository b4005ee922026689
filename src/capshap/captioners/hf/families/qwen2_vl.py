"""Qwen2-VL and Qwen2.5-VL (Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct, ...).

Their processors carry a video processor that needs torchvision; capshap does not, so it
expands the image tokens itself from the image processor and the tokenizer: each image
becomes ``grid_t * grid_h * grid_w / merge_size**2`` ``<|image_pad|>`` tokens, and
``mm_token_type_ids`` marks them (1) for the multimodal rotary positions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.chat import ChatAdapter

__all__ = ["Qwen2VLAdapter"]

# the Qwen2-VL instruct chat template for one user turn of images and text
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@register("qwen2_vl", "qwen2_5_vl")
class Qwen2VLAdapter(ChatAdapter):
    """"<|im_start|>user\\n<|vision_start|><|image_pad|>...<|vision_end|>{prompt}<|im_end|>\\n
    <|im_start|>assistant\\n" then the answer."""

    name = "qwen2-vl"

    def load_processors(self, load: Callable[[Any, str, str], Any], image_processor: Any, tokenizer: Any) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        if image_processor is None or isinstance(image_processor, (str, os.PathLike)):
            image_processor = load(AutoImageProcessor, os.fspath(image_processor or self.source), "image processor")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load(AutoTokenizer, os.fspath(tokenizer or self.source), "tokenizer")
        self.image_processor, self.tokenizer, self.processor = image_processor, tokenizer, None
        cfg = self.model.config
        self.image_token = tokenizer.convert_ids_to_tokens(int(cfg.image_token_id))
        self.image_token_id = int(cfg.image_token_id)
        self.video_token_id = int(getattr(cfg, "video_token_id", -1) or -1)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None  # dynamic resolution: the size depends on the image

    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or QWEN_TEMPLATE

    def process(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        import torch

        vis = self.image_processor(images=self.pil(images), return_tensors="pt")
        grid = vis["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        text = self.prompt_text()
        if text.count(self.image_token) != 1:
            raise ValueError(
                f"the chat template of {self.source!r} gave {text.count(self.image_token)} image tokens "
                f"{self.image_token!r} for one image"
            )
        texts = [text.replace(self.image_token, self.image_token * (int(g.prod()) // merge)) for g in grid]
        enc = dict(self.tokenizer(texts, add_special_tokens=False, return_tensors="pt"))
        ids = enc["input_ids"]
        enc["mm_token_type_ids"] = (ids == self.image_token_id).long() + 2 * (ids == self.video_token_id).long()
        enc["pixel_values"] = vis["pixel_values"]
        enc["image_grid_thw"] = grid.to(torch.long)
        return enc
