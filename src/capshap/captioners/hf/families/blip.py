"""BLIP captioners (Salesforce/blip-image-captioning-base/-large)."""

from __future__ import annotations

from typing import Any

from capshap.captioners.hf.families.base import as_id_set, register
from capshap.captioners.hf.families.prefix import PrefixAdapter

__all__ = ["BlipAdapter"]


@register("blip")
class BlipAdapter(PrefixAdapter):
    """Starts at the text config's bos ([DEC]); ends at [SEP]."""

    name = "blip"

    def start_id(self) -> int:
        return int(self.model.config.text_config.bos_token_id)

    def eos_ids(self, generate_kwargs: dict[str, Any]) -> set[int]:
        return as_id_set(self.model.config.text_config.sep_token_id) | as_id_set(generate_kwargs.get("eos_token_id"))

    def _generate(self, pv: Any, kw: dict[str, Any]) -> Any:
        # BLIP's generate replaces the first id by bos and drops the last one
        sep = int(self.model.config.text_config.sep_token_id)
        return self.model.generate(pixel_values=pv, input_ids=self.prefix_tensor(pv.shape[0], [sep]), **kw)
