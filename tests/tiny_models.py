"""Tiny random-weight Hugging Face models for offline tests.

Each ``*_dir()`` function builds one model (hidden size 32, 2 layers, 32x32 images) with a
tokenizer trained on the spot with the ``tokenizers`` library, saves both with
``save_pretrained`` to a temporary folder and returns that folder's path. Results are cached
per test session (``functools.lru_cache``), so every model is built once however many tests
use it; tests load the folders back through the same code users call (``HFCaptioner``,
``SurrogateFactory``).

Models: ``vit_gpt2_dir`` (VisionEncoderDecoder, ViT + GPT-2, like
nlpconnect/vit-gpt2-image-captioning), ``blip_dir`` (BlipForConditionalGeneration),
``git_dir`` (GitForCausalLM), ``bart_dir`` (BartForConditionalGeneration, like distilbart) and
``gpt2_dir`` (GPT2LMHeadModel). Weights are seeded, so every build gives the same model.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np

CAPTIONS = [
    "a dog running on the grass",
    "two cats sleeping on a couch",
    "a man riding a horse on the beach",
    "a red car parked on the street",
    "a woman holding an umbrella in the rain",
    "a plate of food with broccoli and rice",
    "a group of people standing in a field",
    "a black and white photo of a train",
    "a little girl playing with a ball",
    "a bowl of fruit on a wooden table",
    "an airplane flying in the blue sky",
    "a cat sitting on top of a laptop",
    "a bus driving down a city street",
    "a bird perched on a tree branch",
    "a kitchen with a stove and a sink",
    "a pizza with cheese and tomatoes",
    "a boy throwing a frisbee in the park",
    "a man surfing a big wave",
    "two zebras grazing in the savanna",
    "a bathroom with a toilet and a mirror",
    "a person skiing down a snowy hill",
    "a clock tower in the middle of a town",
    "a teddy bear sitting on a bed",
    "a giraffe eating leaves from a tree",
    "a woman's hat, and a man's coat.",
    "the dogs are playing together!",
    "people walking along the sidewalk",
    "a motorcycle parked next to a building",
    "an elephant walking through the water",
    "a sandwich cut in half on a plate",
    "a laptop and a keyboard on a desk",
    "a child eating a slice of cake",
]

HIDDEN = 32
LAYERS = 2
HEADS = 2
FFN = 64
IMAGE = 32
PATCH = 8


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@functools.lru_cache(maxsize=None)
def _root() -> str:
    path = tempfile.mkdtemp(prefix="capshap-tiny-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _folder(name: str) -> str:
    path = os.path.join(_root(), name)
    os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _bpe_model():
    """A byte-level BPE ``tokenizers.Tokenizer`` (GPT-2/BART style) trained on CAPTIONS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CAPTIONS, trainer)
    return tok


def gpt2_tokenizer():
    """GPT-2 style fast tokenizer: byte-level BPE, no special tokens added, no pad token."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_bpe_model(),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def bart_tokenizer():
    """BART style fast tokenizer: the same BPE, wrapped as ``<s> text </s>``."""
    import copy

    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = copy.deepcopy(_bpe_model())
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def bert_tokenizer():
    """BERT style fast tokenizer (BLIP and GIT): lower-case WordPiece, ``[CLS] text [SEP]``,
    plus BLIP's ``[DEC]`` decoder start token as bos."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"],
        show_progress=False,
    )
    tok.train_from_iterator(CAPTIONS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[DEC]",
    )


def _seed(n: int) -> None:
    import torch

    torch.manual_seed(n)


@functools.lru_cache(maxsize=None)
def vit_gpt2_dir() -> str:
    """VisionEncoderDecoder (ViT encoder + GPT-2 decoder), ViTImageProcessor + GPT-2 tokenizer."""
    _offline()
    from transformers import GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    tok = gpt2_tokenizer()
    eos = tok.eos_token_id
    enc = ViTConfig(
        image_size=IMAGE, patch_size=PATCH, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN,
    )
    dec = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
        bos_token_id=eos, eos_token_id=eos, add_cross_attention=True, is_decoder=True,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = eos
    cfg.pad_token_id = eos
    cfg.eos_token_id = eos
    _seed(1)
    model = VisionEncoderDecoderModel(config=cfg).eval()
    model.generation_config.decoder_start_token_id = eos
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    path = _folder("vit-gpt2")
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=None)
def blip_dir() -> str:
    """BlipForConditionalGeneration with a BlipProcessor (BlipImageProcessor + WordPiece)."""
    _offline()
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = bert_tokenizer()
    text = dict(
        vocab_size=len(tok), hidden_size=HIDDEN, encoder_hidden_size=HIDDEN, intermediate_size=FFN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=64,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id,
    )
    vision = dict(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        image_size=IMAGE, patch_size=PATCH, initializer_range=0.02,
    )
    cfg = BlipConfig(text_config=text, vision_config=vision, projection_dim=HIDDEN)
    _seed(2)
    model = BlipForConditionalGeneration(cfg).eval()
    path = _folder("blip")
    model.save_pretrained(path)
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}), tokenizer=tok)
    proc.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=None)
def git_dir() -> str:
    """GitForCausalLM with a GitProcessor (CLIPImageProcessor + WordPiece)."""
    _offline()
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tok = bert_tokenizer()
    vision = dict(
        hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        image_size=IMAGE, patch_size=PATCH,
    )
    cfg = GitConfig(
        vision_config=vision, vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
    )
    _seed(3)
    model = GitForCausalLM(cfg).eval()
    path = _folder("git")
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    GitProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


@functools.lru_cache(maxsize=None)
def bart_dir() -> str:
    """BartForConditionalGeneration (a distilbart stand-in) with a BART style tokenizer."""
    _offline()
    from transformers import BartConfig, BartForConditionalGeneration

    tok = bart_tokenizer()
    cfg = BartConfig(
        vocab_size=len(tok), d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None,
    )
    _seed(4)
    model = BartForConditionalGeneration(cfg).eval()
    path = _folder("bart")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=None)
def gpt2_dir() -> str:
    """GPT2LMHeadModel (a distilgpt2 stand-in) with a GPT-2 style tokenizer (no pad token)."""
    _offline()
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )
    _seed(5)
    model = GPT2LMHeadModel(cfg).eval()
    path = _folder("gpt2")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """n random uint8 RGB images (n, size, size, 3), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
