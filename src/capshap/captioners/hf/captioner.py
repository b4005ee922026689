"""HFCaptioner (a Hugging Face model as a captioner) and OwnHeadScorer (its own head as scorer).

The family-specific work (processors, prompt layout, which ids generate returns, which
logits predict the answer) lives in one adapter per family (:mod:`.families`); this module
only batches, remembers generated ids and turns logits into scores.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from capshap.captioners.hf.families import FamilyAdapter, adapter_for
from capshap.captioners.hf.loading import load_pretrained, resolve_device, resolve_dtype
from capshap.captioners.hf.tokens import TokenLayout, caption_text, leading_blank
from capshap.images import check_batch
from capshap.interfaces import Captioner, Scorer
from capshap.scoring.logodds import check_score, token_scores_torch

__all__ = ["HFCaptioner", "OwnHeadScorer", "EmptyCaptionError"]

logger = logging.getLogger("capshap.captioners.hf")

_GENERATED_CACHE = 4096


class EmptyCaptionError(ValueError):
    """The model wrote no caption tokens for an image."""


def _check_images(images: Any, who: str) -> list[np.ndarray]:
    return check_batch(images, who)


class HFCaptioner(Captioner):
    """A Hugging Face image-to-text or chat vision-language model as a captioner, with its
    own head for scoring.

    Parameters
    ----------
    model : str or PreTrainedModel
        Hub id or local folder, loaded with ``AutoModelForImageTextToText``; or an already
        loaded model (its processors load from ``model.name_or_path`` unless given). The
        family comes from the config's ``model_type``: VisionEncoderDecoder (ViT + GPT-2),
        BLIP, GIT, and the chat models LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM and
        PaliGemma (:func:`capshap.captioners.hf.families.supported_families`).
    device : str or torch.device, optional
        ``None``/``"auto"``: cuda, then mps, then cpu.
    dtype : torch dtype or name, optional
        Weight dtype; overrides ``half``.
    half : bool
        float16 weights on a GPU (ignored with a warning on cpu). Default False.
    batch_size : int
        Images per ``generate`` call and per scoring forward pass.
    generate_kwargs : dict, optional
        Passed to ``model.generate`` (``max_new_tokens``, ``num_beams``, ``min_new_tokens``,
        ...). Chat models decode greedily with at most 60 new tokens unless told otherwise.
    prompt : str, optional
        BLIP, GIT, VisionEncoderDecoder: text the caption continues (e.g. "a picture of"),
        none by default. Chat models: the user's request, by default "Describe this image
        in one sentence." (PaliGemma: "caption en"). Never part of captions or scored tokens.
    image_processor, tokenizer : optional
        Objects (or ids/paths) to use instead of those in ``model``'s folder.
    load_kwargs : dict, optional
        Passed to every ``from_pretrained`` (``revision``, ``cache_dir``, ``local_files_only``).

    Attributes
    ----------
    kind : str
        The family ("encoder-decoder", "blip", "git", "llava", "qwen2-vl", "idefics3", "paligemma").
    adapter : FamilyAdapter
        The family adapter.
    input_size : (int, int) or None
        (height, width) the processor resizes images to; None where it depends on the image.
    """

    def __init__(
        self,
        model: Any,
        device: Any = None,
        dtype: Any = None,
        half: bool = False,
        batch_size: int = 16,
        generate_kwargs: dict[str, Any] | None = None,
        prompt: str | None = None,
        image_processor: Any = None,
        tokenizer: Any = None,
        load_kwargs: dict[str, Any] | None = None,
    ):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.batch_size = int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, half, self.device)
        load_kwargs = dict(load_kwargs or {})

        if isinstance(model, (str, os.PathLike)):
            self.model_id = os.fspath(model)
            cfg = load_pretrained(AutoConfig, self.model_id, "model config", **load_kwargs)
            family = adapter_for(getattr(cfg, "model_type", "") or "", self.model_id)  # before loading weights
            model = load_pretrained(
                AutoModelForImageTextToText,
                self.model_id,
                "image captioning model",
                hint="HFCaptioner loads image-to-text and chat vision-language models; "
                "a text-only language model belongs in SurrogateFactory(captioner, lm, tokenizer).",
                dtype=self.dtype,
                **load_kwargs,
            )
        else:
            if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate"):
                raise TypeError(
                    f"model must be a hub id, a local folder or a transformers model with generate(); got {type(model).__name__}"
                )
            self.model_id = str(getattr(model, "name_or_path", "") or type(model).__name__)
            family = adapter_for(getattr(model.config, "model_type", "") or "", self.model_id)
            if dtype is None and not half:  # a loaded model keeps its dtype unless asked
                self.dtype = model.dtype
            model = model.to(self.dtype)
        self.model = model.to(self.device).eval()

        def load(auto: Any, name: str, what: str) -> Any:
            return load_pretrained(auto, name, what, **load_kwargs)

        self.adapter: FamilyAdapter = family(
            self.model, self.model_id, prompt, load, image_processor=image_processor, tokenizer=tokenizer
        )
        self.kind = self.adapter.name
        self.prompt = self.adapter.prompt
        self.tokenizer = self.adapter.tokenizer
        self.image_processor = self.adapter.image_processor
        self.input_size = self.adapter.input_size
        self._special = self.adapter.special_ids()
        self._generated: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        logger.info(
            "loaded %s (%s, %s) on %s in %s", self.model_id, type(self.model).__name__, self.kind, self.device, self.dtype
        )

    @property
    def name(self) -> str:
        return self.model_id

    # -- captioning --------------------------------------------------------------------

    def _remember(self, caption: str, ids: tuple[int, ...]) -> None:
        self._generated[caption] = ids
        self._generated.move_to_end(caption)
        while len(self._generated) > _GENERATED_CACHE:
            self._generated.popitem(last=False)

    def _empty_message(self, which: str) -> str:
        prompt = f"the prompt {self.prompt!r}" if self.prompt else "no prompt"
        return (
            f"{self.model_id} wrote an empty caption for {which} (with {prompt}); ask for at least one "
            "token with generate_kwargs={'min_new_tokens': 1} (CLI: --generate min_new_tokens=1) or change the prompt"
        )

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """Caption a batch: list of N uint8 (H, W, 3) arrays -> N strings (prompt not included).

        A caption is written as vLLM writes it (:func:`~capshap.captioners.hf.tokens.caption_text`):
        special tokens skipped, a trailing incomplete UTF-8 character dropped, whitespace
        stripped. Own-head scoring of the caption still teacher-forces every generated id.

        When the model writes nothing for some image, chat models raise
        :class:`EmptyCaptionError` naming the images (after captioning all of them); the
        other families log that warning and return "" for those images."""
        import torch

        images = _check_images(images, f"HFCaptioner({self.model_id!r})")
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            with torch.inference_mode():
                answers = self.adapter.generate(batch, self.generate_kwargs)
            for ids in answers:
                text = caption_text(self.tokenizer, ids)  # as vLLM's detokenizer writes it
                if text:
                    self._remember(text, ids)
                captions.append(text)
        empty = [i for i, c in enumerate(captions) if not c]
        if empty:
            msg = self._empty_message("image " + ", ".join(map(str, empty)))
            if self.adapter.empty_answer_is_error:
                raise EmptyCaptionError(msg)
            logger.warning("%s", msg)
        return captions

    # -- own-head scoring --------------------------------------------------------------

    def caption_ids(self, caption: str) -> list[int]:
        """The answer ids teacher-forced for ``caption`` (no prompt, no EOS): the ids
        generated for it when this captioner wrote it, else its tokenization as the model's
        answer, checked by decoding it back (a warning names a caption that does not
        round-trip, case and spacing aside)."""
        key = caption.strip()
        if key in self._generated:
            return list(self._generated[key])
        ids = self.adapter.answer_ids(key)
        back = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if " ".join(back.casefold().split()) != " ".join(key.casefold().split()):
            logger.warning(
                "caption %r does not round-trip through the tokenizer of %s (decodes as %r); its scores "
                "are for the tokens %s",
                key, self.model_id, back, self.tokenizer.convert_ids_to_tokens(ids),
            )
        return ids

    def own_scorer(self, caption: str, score: str = "logodds", merge_words: bool = False) -> OwnHeadScorer:
        """A scorer bound to ``caption`` that teacher-forces this model's own head.

        Any caption works: the one this model wrote (its generated ids are reused) or one
        from elsewhere (e.g. to compare why the model prefers its caption over another)."""
        return OwnHeadScorer(self, caption, score=score, merge_words=merge_words)


class OwnHeadScorer(Scorer):
    """White-box scores of one caption under an :class:`HFCaptioner`'s own head.

    ``score(images)``: images (N, H, W, 3) uint8 -> (N, T) float64, where column t is the
    log-odds (or log-prob with ``score="logprob"``) of answer token t given the masked image,
    the prompt and the answer's previous tokens. Only the answer's non-special tokens are
    columns (T of them; whole words with ``merge_words``). One forward pass per
    ``captioner.batch_size`` images, so memory stays bounded on large batches.
    """

    def __init__(self, captioner: HFCaptioner, caption: str, score: str = "logodds", merge_words: bool = False):
        import torch

        self.captioner = captioner
        self.caption = caption
        self.score_kind = check_score(score)
        ids = captioner.caption_ids(caption)
        if not ids:
            raise EmptyCaptionError(captioner._empty_message(f"the caption {caption!r}") if not caption.strip() else
                                    f"caption {caption!r} has no tokens to score for {captioner.model_id!r}")
        special = captioner.adapter.special_ids()
        lead = leading_blank(captioner.tokenizer, ids)  # the separator before the answer: read, not scored
        keep = [j for j, t in enumerate(ids) if t not in special and j >= lead]
        if not keep:
            raise ValueError(f"caption {caption!r} has no tokens to score for {captioner.model_id!r}")
        self.answer_ids = list(ids)
        self.token_ids = [ids[j] for j in keep]
        self.layout = TokenLayout(captioner.tokenizer, self.token_ids, merge_words=merge_words)
        self.tokens = self.layout.tokens
        self._keep = torch.tensor(keep, dtype=torch.long)
        self._target = torch.tensor(self.token_ids, dtype=torch.long)

    def score(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, 3) uint8 -> (N, T) float64 scores."""
        import torch

        cap = self.captioner
        images = _check_images(images, f"own-head scorer of {cap.model_id!r}")
        if not images:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        dev = cap.device
        keep, target = self._keep.to(dev), self._target.to(dev)
        out = []
        for start in range(0, len(images), cap.batch_size):
            batch = images[start : start + cap.batch_size]
            with torch.inference_mode():
                logits = cap.adapter.answer_logits(batch, self.answer_ids)
                out.append(token_scores_torch(logits[:, keep, :], target, self.score_kind))
        return self.layout.apply(np.concatenate(out, axis=0))

    @property
    def stack_key(self) -> tuple[str, int]:
        """Scorers of one captioner object share forward passes (:meth:`score_stacked`)."""
        return ("hf-own", id(self.captioner))

    def score_stacked(self, requests: Sequence[tuple[Scorer, np.ndarray]]) -> list[np.ndarray]:
        """Score several (scorer, images (N_i, H, W, 3)) requests of scorers of this
        captioner, each bound to its own caption, in shared forward passes of
        ``captioner.batch_size`` images; returns each request's (N_i, T_i) float64.

        The answers of different captions are right-padded to one length (padded teacher
        forcing, :meth:`FamilyAdapter.answer_logits_many`); each row is read at its own
        caption's positions. Equal to :meth:`score` up to float rounding: the batch a row
        is computed in differs (the tests bound the difference on every family).
        """
        import torch

        cap = self.captioner
        scorers: list[OwnHeadScorer] = []
        for sc, _ in requests:
            if not isinstance(sc, OwnHeadScorer) or sc.captioner is not cap:
                raise TypeError(f"cannot stack {type(sc).__name__} with the own-head scorers of {cap.model_id!r}")
            scorers.append(sc)
        checked = [_check_images(imgs, f"own-head scorer of {cap.model_id!r}") for _, imgs in requests]
        flat = [(r, im) for r, imgs in enumerate(checked) for im in imgs]
        rows: list[list[np.ndarray]] = [[] for _ in requests]
        dev = cap.device
        for start in range(0, len(flat), cap.batch_size):
            chunk = flat[start : start + cap.batch_size]
            with torch.inference_mode():
                logits = cap.adapter.answer_logits_many([im for _, im in chunk],
                                                        [scorers[r].answer_ids for r, _ in chunk])
                mine: dict[int, list[int]] = {}
                for j, (r, _) in enumerate(chunk):
                    mine.setdefault(r, []).append(j)
                for r, js in mine.items():
                    sc = scorers[r]
                    z = torch.stack([logits[j] for j in js])
                    rows[r].append(token_scores_torch(z[:, sc._keep.to(dev), :], sc._target.to(dev), sc.score_kind))
        return [
            sc.layout.apply(np.concatenate(got, axis=0)) if got else np.zeros((0, len(sc.tokens)), dtype=np.float64)
            for sc, got in zip(scorers, rows)
        ]
