"""Model families of :class:`~capshap.captioners.hf.HFCaptioner`, one adapter per file.

Importing this package registers every adapter. A new family: write ``families/NAME.py``
with a :class:`FamilyAdapter` subclass decorated with ``@register("model_type", ...)`` and
import it below.
"""

from capshap.captioners.hf.families import (  # noqa: F401
    blip,
    encoder_decoder,
    gemma3,
    git,
    idefics3,
    llava,
    paligemma,
    qwen2_vl,
)
from capshap.captioners.hf.families.base import (
    FamilyAdapter,
    UnsupportedFamilyError,
    adapter_for,
    register,
    supported_families,
)
from capshap.captioners.hf.families.chat import CHAT_PROMPT, ChatAdapter

__all__ = [
    "FamilyAdapter",
    "ChatAdapter",
    "CHAT_PROMPT",
    "UnsupportedFamilyError",
    "adapter_for",
    "register",
    "supported_families",
]
