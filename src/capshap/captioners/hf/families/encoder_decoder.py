"""VisionEncoderDecoder models (ViT + GPT-2 such as nlpconnect/vit-gpt2-image-captioning)."""

from __future__ import annotations

from typing import Any

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.prefix import PrefixAdapter

__all__ = ["EncoderDecoderAdapter"]


@register("vision-encoder-decoder")
class EncoderDecoderAdapter(PrefixAdapter):
    """The encoder reads pixels; the decoder starts at ``decoder_start_token_id``."""

    name = "encoder-decoder"

    def start_id(self) -> int:
        cfg = self.model.config
        gen = getattr(self.model, "generation_config", None)
        dec = getattr(cfg, "decoder", None)
        for c in (
            getattr(gen, "decoder_start_token_id", None),
            getattr(cfg, "decoder_start_token_id", None),
            getattr(dec, "decoder_start_token_id", None),
            getattr(dec, "bos_token_id", None),
            getattr(gen, "bos_token_id", None),
        ):
            if c is not None:
                return int(c[0] if isinstance(c, (list, tuple)) else c)
        return super().start_id()

    def eos_ids(self, generate_kwargs: dict[str, Any]) -> set[int]:
        from capshap.captioners.hf.families.base import as_id_set

        eos = super().eos_ids({})
        dec = getattr(self.model.config, "decoder", None)
        if not eos and dec is not None:
            eos = as_id_set(getattr(dec, "eos_token_id", None))
        return eos | as_id_set(generate_kwargs.get("eos_token_id"))

    def _generate(self, pv: Any, kw: dict[str, Any]) -> Any:
        return self.model.generate(pixel_values=pv, decoder_input_ids=self.prefix_tensor(pv.shape[0]), **kw)

    def _forward(self, pv: Any, ids: Any) -> Any:
        return self.model(pixel_values=pv, decoder_input_ids=ids).logits
