"""Hugging Face captioners, and white-box scoring with the captioner's own head.

:class:`HFCaptioner` loads an image-to-text or chat vision-language model by hub id or local
folder through ``AutoModelForImageTextToText`` and captions batches of images with
``generate``. One adapter per model family (:mod:`capshap.captioners.hf.families`, chosen by
the config's ``model_type``) knows the family's processor and prompt layout:

- VisionEncoderDecoder (``nlpconnect/vit-gpt2-image-captioning``), BLIP
  (``Salesforce/blip-image-captioning-base``), GIT (``microsoft/git-base-coco``): the caption
  continues a start token and an optional prompt ("a picture of");
- chat models, LLaVA (``llava-hf/llava-1.5-7b-hf``), Qwen2-VL / Qwen2.5-VL
  (``Qwen/Qwen2-VL-2B-Instruct``), Idefics3 / SmolVLM (``HuggingFaceTB/SmolVLM-256M-Instruct``),
  PaliGemma (``google/paligemma-3b-mix-224``): the caption is the assistant's answer to a
  prompt ("Describe this image in one sentence.", PaliGemma's "caption en").

``HFCaptioner.own_scorer(caption)`` (used by ``OwnHeadFactory(captioner).bind(caption)``) returns an
:class:`OwnHeadScorer`: the model is teacher-forced on the caption as its answer, one
forward pass per batch of masked images, and each answer token gets its log-odds
log p - log(1 - p) (or log p with ``score="logprob"``) given the masked image. Own-head
scorers of one captioner declare a ``stack_key``: in flight (``runner="in_flight"``) the
masked batches of several images, each with its own caption, go through one forward pass,
the answers right-padded to one length (padded teacher forcing; the decoders are causal, so
no caption's positions see the padding), equal to one-by-one scoring within float32
rounding.

Which token ids are teacher-forced
----------------------------------
The scores must be those of the tokens the model actually produced. ``caption()`` therefore
remembers, per caption string, the ids ``generate`` returned (the last 4096 captions);
``own_scorer`` uses those ids whenever the caption came from this captioner, which is the
normal path (caption the image, then explain that caption). A caption from elsewhere is
tokenized as the model's answer (after the prompt, so that e.g. the space after
"ASSISTANT:" belongs to its first token), and checked by decoding it back: a caption that
does not round-trip to the same text (case and spacing aside) logs a warning naming it.
The tests check that teacher-forced log-probabilities equal the log-softmax of the logits
``generate`` produced for each token it picked.

Special, prompt, image and template tokens are fed to the model but are not among the T
scored tokens. Captions returned by ``caption()`` do not include the prompt.
"""

from __future__ import annotations

from capshap.captioners.hf.captioner import (
    EmptyCaptionError,
    HFCaptioner,
    OwnHeadScorer,
)
from capshap.captioners.hf.families import (
    CHAT_PROMPT,
    FamilyAdapter,
    UnsupportedFamilyError,
    register,
    supported_families,
)
from capshap.captioners.hf.loading import (
    ModelLoadError,
    load_pretrained,
    resolve_device,
    resolve_dtype,
)
from capshap.captioners.hf.tokens import TokenLayout, token_pieces

__all__ = [
    "HFCaptioner",
    "OwnHeadScorer",
    "EmptyCaptionError",
    "ModelLoadError",
    "TokenLayout",
    "resolve_device",
    "resolve_dtype",
    "load_pretrained",
    "token_pieces",
    "FamilyAdapter",
    "UnsupportedFamilyError",
    "CHAT_PROMPT",
    "register",
    "supported_families",
]
