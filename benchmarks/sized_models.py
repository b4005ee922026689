"""Random-weight captioners at real model sizes, for timing on a GPU (a helper, not a script).

The test suite's tiny models (tests/tiny_models.py, tests/tiny_vlms.py: hidden size 32)
show per-call overheads; these have the compute of real models and random weights, so
their timings are real and their captions are not:

* ``blip-base``: ``BlipForConditionalGeneration`` with Salesforce/blip-image-captioning-base's
  configuration (ViT-B/16 at 384 px, a 12-layer BERT-base text decoder, 30,524-token
  vocabulary; about 224 M parameters);
* ``2b``: a LLaVA-style chat VLM of about 2 B parameters (CLIP ViT-L/14 at 336 px, 577
  image tokens, and a Llama text model: hidden 2048, 26 layers, MLP 8192, 32 heads with 4
  key/value heads, 32,000-token vocabulary).

The tokenizers are byte-level BPEs trained on the spot (a few hundred tokens, the tests'
captions) inside the real vocabulary size, so a random model's generated ids may not
decode: the benchmarks explain a fixed caption (:data:`CAPTION`) with the own head.
Only the processor files are written (to a temporary folder the model's
``name_or_path`` points at); the weights are built in memory on the chosen device.

``build(size, device="meta")`` builds the model on PyTorch's meta device: no memory, no
weights, only the parameter count (a build check on a machine without the memory).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

SIZES = ("blip-base", "2b")
#: The caption every sized model explains (its tokenizer was trained on it).
CAPTION = "a dog running on the grass"


def _folder() -> str:
    d = tempfile.mkdtemp(prefix="capshap-sized-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def _bpe(specials: list[str], **named: str):
    """A byte-level BPE whose first ids are ``specials``, trained on the tests' captions."""
    from tiny_models import CAPTIONS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(CAPTIONS) + ["USER: ASSISTANT: Describe this image in one sentence."], trainer)
    base = {k: v for k, v in named.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    extra = {k: v for k, v in named.items() if k not in base}
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra, **base)


def _blip_base(folder: str) -> tuple[Any, Any, dict]:
    from tiny_models import bert_tokenizer
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = bert_tokenizer()
    text = dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=768, intermediate_size=3072,
                num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
                sep_token_id=tok.sep_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=384, patch_size=16)
    cfg = BlipConfig(text_config=text, vision_config=vision, projection_dim=512)
    ip = BlipImageProcessor(size={"height": 384, "width": 384})
    BlipProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return BlipForConditionalGeneration, cfg, {"image_processor": ip, "tokenizer": tok}


def _llava_2b(folder: str) -> tuple[Any, Any, dict]:
    from tiny_vlms import LLAVA_TEMPLATE
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _bpe(["<s>", "</s>", "<unk>", "<pad>", "<image>"], bos_token="<s>", eos_token="</s>", unk_token="<unk>",
               pad_token="<pad>", image_token="<image>")
    tok.add_bos_token = True
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                           projection_dim=768),
        text_config=dict(model_type="llama", vocab_size=32000, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=26, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE).save_pretrained(folder)
    return LlavaForConditionalGeneration, cfg, {}


_BUILDERS = {"blip-base": _blip_base, "2b": _llava_2b}


def build(size: str, device: str = "cpu", dtype: Any = None, seed: int = 0) -> tuple[Any, int, dict]:
    """Build the ``size`` model with random weights directly on ``device``.

    Returns
    -------
    (model, n_parameters, captioner keywords)
        The model (eval mode; its ``name_or_path`` is the folder holding the processor
        files) and the keywords ``HFCaptioner`` needs besides it.
    """
    import torch

    if size not in _BUILDERS:
        raise ValueError(f"unknown model size {size!r}; use one of {', '.join(SIZES)}")
    folder = _folder()
    cls, cfg, kw = _BUILDERS[size](folder)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    model.name_or_path = folder
    model.config._name_or_path = folder
    gen = model.generation_config
    gen.eos_token_id = cfg.get_text_config().eos_token_id
    gen.pad_token_id = cfg.get_text_config().pad_token_id
    gen.do_sample = False
    return model, sum(p.numel() for p in model.parameters()), kw


def captioner(size: str, device: str = "cpu", dtype: Any = None, batch_size: int = 16) -> tuple[Any, int]:
    """``(HFCaptioner, n_parameters)`` over a freshly built ``size`` model on ``device``."""
    from capshap.captioners.hf import HFCaptioner

    model, n, kw = build(size, device, dtype)
    return HFCaptioner(model, device=device, dtype=dtype, batch_size=batch_size,
                       generate_kwargs={"max_new_tokens": 8}, **kw), n
