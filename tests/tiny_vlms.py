"""Tiny random-weight chat vision-language models for offline tests.

``build(family, folder, std=0.02) -> folder`` builds one model of a chat VLM family
(:data:`FAMILIES`: "llava", "qwen2_vl", "idefics3", "paligemma", "gemma3") with random
weights (hidden size 32, 2 layers, 32x32 px images; Qwen2-VL 56x56), a byte-level BPE
tokenizer trained on the spot, a hand-written chat template that imitates the real one,
and saves model + processor with ``save_pretrained``: the folder loads back through
``AutoProcessor`` / ``AutoModelForImageTextToText`` and ``HFCaptioner(folder)`` like a hub
model (Qwen2-VL: image processor + tokenizer only, as its processor needs torchvision).
Each build takes well under a second and writes well under 1 MB; the same arguments give
byte-identical files in any process (seeded weights, deterministic tokenizer training).

``dims`` (:class:`Dims`) sets hidden size, heads and FFN size; :data:`VLLM_DIMS` (head
dimension 32) gives models vLLM's CPU attention accepts.

``path(family, std=...)`` builds once per process into a temporary folder (removed at exit)
and returns the same folder afterwards.

``std`` is the initialisation std of every weight (``initializer_range``). At the default
0.02 images change the log-probabilities only slightly; 0.5 (0.1 for Gemma 3, whose greedy
answer degenerates into one whitespace token at 0.5) makes them matter and makes greedy
captions non-trivial. Gemma 3's projector, zeroed by its random initialisation, is
re-drawn with the same std.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from tiny_models import CAPTIONS

FAMILIES = ("llava", "qwen2_vl", "idefics3", "paligemma", "gemma3")

HIDDEN = 32
LAYERS = 2
HEADS = 2
FFN = 64
IMAGE = 32
PATCH = 8

# extra text the chat templates use, so the BPE has merges for it
_TEMPLATE_TEXT = [
    "USER: ASSISTANT: User: Assistant: system user assistant",
    "Describe this image in one sentence.",
    "You are a helpful assistant.",
    "caption en",
]

_SPECIALS = {
    "llava": ["<s>", "</s>", "<unk>", "<pad>", "<image>"],
    "qwen2_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"],
    "idefics3": ["<|begin_of_text|>", "<|end_of_text|>", "<unk>", "<|finetune_right_pad_id|>",
                 "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"],
    "paligemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
    "gemma3": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
               "<end_of_image>", "<image_soft_token>"],
}

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' }}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}{% elif item['type'] == 'text' %}"
    "{{ item['text'] | trim }}{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _tokenizer(family: str, **named: str):
    """A byte-level BPE fast tokenizer whose first ids are the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=_SPECIALS[family],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CAPTIONS + _TEMPLATE_TEXT, trainer)
    extra = {k: v for k, v in named.items() if k not in ("bos_token", "eos_token", "pad_token", "unk_token")}
    base = {k: v for k, v in named.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra, **base) if extra else \
        PreTrainedTokenizerFast(tokenizer_object=tok, **base)


@dataclass(frozen=True)
class Dims:
    """Sizes of a tiny model: hidden size, attention heads, feed-forward size (text and vision)."""

    hidden: int = HIDDEN
    heads: int = HEADS
    ffn: int = FFN

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


#: sizes vLLM's CPU attention accepts (head dimension 32; it refuses 16)
VLLM_DIMS = Dims(hidden=64, heads=2, ffn=128)


def _text_config(vocab: int, std: float, dims: Dims, **ids: int) -> dict:
    return dict(
        vocab_size=vocab, hidden_size=dims.hidden, intermediate_size=dims.ffn, num_hidden_layers=LAYERS,
        num_attention_heads=dims.heads, num_key_value_heads=dims.heads, max_position_embeddings=256,
        initializer_range=std, **ids,
    )


def _vision_config(std: float, dims: Dims) -> dict:
    return dict(
        hidden_size=dims.hidden, intermediate_size=dims.ffn, num_hidden_layers=LAYERS,
        num_attention_heads=dims.heads, image_size=IMAGE, patch_size=PATCH, initializer_range=std,
    )


def _finish(model, tok, folder: str, eos: int | list[int]) -> None:
    """Greedy generation config with the family's end-of-answer ids; save the weights."""
    gen = model.generation_config
    gen.eos_token_id = eos
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    gen.do_sample = False
    model.save_pretrained(folder)


def _init(cls, cfg, seed: int):
    import torch

    torch.manual_seed(seed)
    return cls(cfg).eval()


def _llava(folder: str, std: float, dims: Dims) -> None:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _tokenizer("llava", bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                     image_token="<image>")
    tok.add_bos_token = True
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **_vision_config(std, dims), projection_dim=dims.hidden),
        text_config=dict(model_type="llama", **_text_config(len(tok), std, dims, bos_token_id=tok.bos_token_id,
                                                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1, projector_hidden_act="gelu",
    )
    cfg.initializer_range = std
    model = _init(LlavaForConditionalGeneration, cfg, 11)
    _finish(model, tok, folder, tok.eos_token_id)
    ip = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE).save_pretrained(folder)


QWEN_SIDE = 56  # 56x56 px -> 4x4 patches of 14 -> 4 image tokens after the 2x2 merge


def _qwen2_vl(folder: str, std: float, dims: Dims) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tok = _tokenizer("qwen2_vl", eos_token="<|im_end|>", pad_token="<|endoftext|>",
                     image_token="<|image_pad|>", video_token="<|video_pad|>",
                     vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIALS["qwen2_vl"]}
    head_dim = dims.head_dim
    text = _text_config(len(tok), std, dims, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                        pad_token_id=ids["<|endoftext|>"])
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    vision = dict(depth=LAYERS, embed_dim=dims.hidden, hidden_size=dims.hidden, mlp_ratio=2, num_heads=dims.heads,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, initializer_range=std)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    cfg.initializer_range = std
    model = _init(Qwen2VLForConditionalGeneration, cfg, 12)
    _finish(model, tok, folder, ids["<|im_end|>"])
    ip = Qwen2VLImageProcessorPil(min_pixels=QWEN_SIDE * QWEN_SIDE, max_pixels=QWEN_SIDE * QWEN_SIDE,
                               patch_size=14, merge_size=2, temporal_patch_size=2)
    # Qwen2VLProcessor needs a video processor, which needs torchvision (capshap does not depend
    # on it): save the image processor and the tokenizer (with the chat template) only
    ip.save_pretrained(folder)
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(folder)


def _idefics3(folder: str, std: float, dims: Dims) -> None:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = _tokenizer("idefics3", bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", unk_token="<unk>",
                     pad_token="<|finetune_right_pad_id|>", image_token="<image>",
                     fake_image_token="<fake_token_around_image>", global_image_token="<global-img>",
                     end_of_utterance_token="<end_of_utterance>")
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    cfg = Idefics3Config(
        vision_config=dict(**_vision_config(std, dims)),
        text_config=dict(model_type="llama", **_text_config(len(tok), std, dims, bos_token_id=tok.bos_token_id,
                                                             eos_token_id=eou, pad_token_id=tok.pad_token_id)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    cfg.initializer_range = std
    model = _init(Idefics3ForConditionalGeneration, cfg, 13)
    _finish(model, tok, folder, eou)
    ip = Idefics3ImageProcessor(size={"longest_edge": IMAGE}, max_image_size={"longest_edge": IMAGE},
                                do_image_splitting=False)
    seq = (IMAGE // PATCH) ** 2 // 4  # patches / scale_factor**2
    Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq,
                      chat_template=IDEFICS3_TEMPLATE).save_pretrained(folder)


def _paligemma(folder: str, std: float, dims: Dims) -> None:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor

    tok = _tokenizer("paligemma", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                     image_token="<image>")
    ip = SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    ip.image_seq_length = (IMAGE // PATCH) ** 2
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds the <loc>/<seg> tokens
    tok = proc.tokenizer
    text = _text_config(len(tok), std, dims, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    text.update(model_type="gemma", head_dim=dims.head_dim, num_key_value_heads=1)
    cfg = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", **_vision_config(std, dims)),
        text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"), projection_dim=dims.hidden,
    )
    cfg.initializer_range = std
    cfg.vision_config.projection_dim = dims.hidden
    model = _init(PaliGemmaForConditionalGeneration, cfg, 14)
    _finish(model, tok, folder, tok.eos_token_id)
    proc.save_pretrained(folder)


def _gemma3(folder: str, std: float, dims: Dims) -> None:
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tok = _tokenizer("gemma3", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                     image_token="<image_soft_token>", boi_token="<start_of_image>", eoi_token="<end_of_image>")
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    text = _text_config(len(tok), std, dims, bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id, eot],
                        pad_token_id=tok.pad_token_id)
    text.update(head_dim=dims.head_dim, num_key_value_heads=1, sliding_window=64, query_pre_attn_scalar=dims.head_dim)
    cfg = Gemma3Config(
        text_config=text, vision_config=dict(model_type="siglip_vision_model", **_vision_config(std, dims)),
        mm_tokens_per_image=4, image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
    )
    cfg.initializer_range = std
    model = _init(Gemma3ForConditionalGeneration, cfg, 15)
    with torch.no_grad():  # random initialisation zeroes the projector: the image would not matter
        torch.manual_seed(16)
        for p in model.model.multi_modal_projector.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    _finish(model, tok, folder, [tok.eos_token_id, eot])
    ip = Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4,
                    chat_template=GEMMA3_TEMPLATE).save_pretrained(folder)


_BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl, "idefics3": _idefics3, "paligemma": _paligemma,
             "gemma3": _gemma3}


def build(family: str, folder: str, std: float = 0.02, dims: Dims = Dims()) -> str:
    """Build a tiny random ``family`` model into ``folder`` (created if missing); returns it.

    family: one of :data:`FAMILIES`. std: weight initialisation std. dims: sizes (default
    hidden 32, 2 heads, FFN 64; :data:`VLLM_DIMS` for a model vLLM's CPU build serves).
    Deterministic (seeded).
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny VLM family {family!r}; use one of {', '.join(FAMILIES)}")
    _offline()
    os.makedirs(folder, exist_ok=True)
    _BUILDERS[family](folder, float(std), dims)
    return folder


@functools.lru_cache(maxsize=None)
def _root() -> str:
    root = tempfile.mkdtemp(prefix="capshap-tiny-vlms-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=None)
def path(family: str, std: float = 0.02, dims: Dims = Dims()) -> str:
    """The folder of a tiny ``family`` model, built once per process (removed at exit)."""
    tag = "" if dims == Dims() else f"-h{dims.hidden}x{dims.heads}f{dims.ffn}"
    return build(family, os.path.join(_root(), f"{family}-{std:g}{tag}"), std=std, dims=dims)


def images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """n random uint8 RGB images (n, size, size, 3), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
