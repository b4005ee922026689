"""Surrogate (black-box) scoring: the SHAP image-captioning notebook's method.

Any captioner captions each masked image; a language model is then teacher-forced on the
*original* caption with the masked image's caption as its source text, and each original
token gets its log-odds (or log-prob) under that model. Works with seq2seq models (BART, T5,
e.g. ``sshleifer/distilbart-xsum-12-6``) and causal models (GPT-2-like), the way
``shap.models.TeacherForcing`` does it:

- target: ``tokenizer(caption)["input_ids"]`` with the tokenizer's boundary tokens cut off
  (as many as it adds to the empty string: BART's ``<s>``/``</s>``, T5's ``</s>``, none for
  GPT-2);
- source: ``tokenizer(masked_caption)["input_ids"]`` with its special tokens, padded on the
  right for seq2seq models and on the left for causal ones (pad id: the tokenizer's pad, else
  its eos);
- seq2seq: decoder input = decoder start id + target, logits at positions 0..T-1;
- causal: source + target in one sequence with position ids counted over real tokens,
  logits at the T positions before each target token.

The scores equal shap's to float precision wherever shap's are finite; shap computes
log(p / (1 - p)) naively and overflows to inf/NaN for large logits, ours stay finite (see
:mod:`capshap.scoring.logodds`). One deliberate difference: for a causal model, a masked caption
that is empty gets the tokenizer's bos (else eos) token as its source, so the first target
token has something to be predicted from (shap would read a padding position there).

Identical masked captions are scored once per bound caption (a cache by caption string).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import numpy as np

from capshap.captioners.hf import TokenLayout, load_pretrained, resolve_device
from capshap.interfaces import Captioner, Scorer, as_captioner
from capshap.scoring.logodds import check_score, token_scores_torch

__all__ = ["SurrogateFactory", "SurrogateBound", "boundary_tokens"]

logger = logging.getLogger(__name__)


def boundary_tokens(tokenizer: Any) -> tuple[int, int]:
    """(keep_prefix, keep_suffix): how many tokens the tokenizer adds before and after a
    text, found by tokenizing the empty string (as shap's parse_prefix_suffix_for_tokenizer).
    """
    null = list(tokenizer("")["input_ids"])
    if len(null) == 1:
        text = tokenizer.decode(null)
        eos, bos = getattr(tokenizer, "eos_token", None), getattr(tokenizer, "bos_token", None)
        if eos is not None and text == eos:
            return 0, 1
        if bos is not None and text == bos:
            return 1, 0
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} adds one token ({text!r}) to the empty string that is "
            "neither its eos_token nor its bos_token, so capshap cannot tell which end of a caption it marks"
        )
    if len(null) % 2:
        raise ValueError(
            f"the tokenizer {type(tokenizer).__name__} adds an odd number of tokens ({null}) to the empty string; "
            "capshap cannot tell which of them mark the start and the end of a caption"
        )
    return len(null) // 2, len(null) // 2


class SurrogateFactory:
    """Factory for surrogate scoring: ``SurrogateFactory(captioner, lm, tokenizer).bind(caption)``.

    Parameters
    ----------
    captioner : Captioner or function
        Captions each masked image (any captioner: Hugging Face, Azure, a function).
    lm : str or PreTrainedModel
        The language model: hub id or local folder (loaded with ``AutoModelForSeq2SeqLM`` or
        ``AutoModelForCausalLM`` as its config says), or a loaded model.
    tokenizer : str or tokenizer, optional
        Its tokenizer, or an id/folder to load one from; default: the ``lm`` id/folder.
    device : str or torch.device, optional
        Where to run the language model. Default: a loaded ``lm`` stays where it is; a
        loaded-by-id one goes to cuda, then mps, then cpu.
    batch_size : int
        Distinct masked captions per language-model forward pass.
    score : "logodds" or "logprob"
        Per-token score.
    merge_words : bool
        Sum sub-word token scores into words (word strings as tokens).
    load_kwargs : dict, optional
        Passed to ``from_pretrained`` (``revision``, ``cache_dir``, ``local_files_only``).
    """

    def __init__(
        self,
        captioner: Any,
        lm: Any,
        tokenizer: Any = None,
        device: Any = None,
        batch_size: int = 32,
        score: str = "logodds",
        merge_words: bool = False,
        load_kwargs: dict[str, Any] | None = None,
    ):
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
            AutoTokenizer,
        )

        self.captioner: Captioner = as_captioner(captioner)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.batch_size = int(batch_size)
        self.score_kind = check_score(score)
        self.merge_words = bool(merge_words)
        load_kwargs = dict(load_kwargs or {})

        if isinstance(lm, (str, os.PathLike)):
            name = os.fspath(lm)
            config = load_pretrained(AutoConfig, name, "language model", **load_kwargs)
            auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
            lm = load_pretrained(auto, name, "language model", **load_kwargs)
            self.device = resolve_device(device)
            lm = lm.to(self.device)
            if tokenizer is None:
                tokenizer = name
        else:
            if not isinstance(lm, torch.nn.Module) or not hasattr(lm, "config"):
                raise TypeError(f"lm must be a hub id, a local folder or a transformers model; got {type(lm).__name__}")
            if device is None:
                self.device = next(lm.parameters()).device
            else:
                self.device = resolve_device(device)
                lm = lm.to(self.device)
            if tokenizer is None:
                tokenizer = getattr(lm, "name_or_path", None) or None
                if tokenizer is None:
                    raise ValueError("pass tokenizer= with a loaded language model (it has no name_or_path to load one from)")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_pretrained(AutoTokenizer, os.fspath(tokenizer), "tokenizer", **load_kwargs)
        self.lm = lm.eval()
        self.tokenizer = tokenizer
        self.lm_name = str(getattr(lm, "name_or_path", "") or type(lm).__name__)

        cfg = self.lm.config
        self.seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
        self.keep_prefix, self.keep_suffix = boundary_tokens(tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad if pad is not None else eos if eos is not None else 0)
        bos = getattr(tokenizer, "bos_token_id", None)
        self.empty_source_id = int(bos if bos is not None else eos if eos is not None else self.pad_id)
        self.decoder_start_id = self._decoder_start() if self.seq2seq else None
        params = inspect.signature(self.lm.forward).parameters
        self._takes_position_ids = "position_ids" in params
        #: language-model forward passes and captions scored so far (all bound captions)
        self.lm_calls = 0
        self.captions_scored = 0

    def _decoder_start(self) -> int:
        cfg = self.lm.config
        for value in (
            getattr(cfg, "decoder_start_token_id", None),
            getattr(cfg, "bos_token_id", None),
            getattr(getattr(cfg, "decoder", None), "bos_token_id", None),
        ):
            if value is not None:
                return int(value)
        raise ValueError(
            f"language model {self.lm_name!r} has no decoder_start_token_id or bos_token_id in its config; "
            "set lm.config.decoder_start_token_id"
        )

    def target_ids(self, caption: str) -> list[int]:
        """The caption's token ids as the language model is teacher-forced on them."""
        ids = list(self.tokenizer(caption)["input_ids"])
        end = len(ids) - self.keep_suffix
        return [int(i) for i in ids[self.keep_prefix : end]]

    def bind(self, caption: str) -> SurrogateBound:
        """A :class:`Scorer` for ``caption``."""
        return SurrogateBound(self, caption)

    # -- the language model ------------------------------------------------------------

    def _sources(self, captions: list[str], left: bool) -> tuple[Any, Any]:
        import torch

        rows = [list(r) for r in self.tokenizer(list(captions))["input_ids"]]
        if not self.seq2seq:
            rows = [r if r else [self.empty_source_id] for r in rows]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            if left:
                ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
            else:
                ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def lm_scores(self, sources: list[str], target: list[int]) -> np.ndarray:
        """Teacher-force ``target`` ids given each source caption: (len(sources), T) float64."""
        import torch

        n, t = len(sources), len(target)
        tgt = torch.tensor([target] * n, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            if self.seq2seq:
                src, mask = self._sources(sources, left=False)
                start = torch.full((n, 1), self.decoder_start_id, dtype=torch.long, device=self.device)
                out = self.lm(input_ids=src, attention_mask=mask, decoder_input_ids=torch.cat([start, tgt], dim=1))
                logits = out.logits[:, :-1, :]
            else:
                src, mask = self._sources(sources, left=True)
                ids = torch.cat([src, tgt], dim=1)
                mask = torch.cat([mask, torch.ones_like(tgt)], dim=1)
                kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
                if self._takes_position_ids:
                    pos = mask.cumsum(-1) - 1
                    kw["position_ids"] = pos.masked_fill(mask == 0, 0)
                out = self.lm(**kw)
                logits = out.logits[:, -t - 1 : -1, :]
            self.lm_calls += 1
            self.captions_scored += n
            return token_scores_torch(logits, tgt[0], self.score_kind)


class SurrogateBound(Scorer):
    """A surrogate scorer bound to one caption (from :meth:`SurrogateFactory.bind`).

    ``score_with_captions(images)``: images (N, H, W, 3) uint8 -> ((N, T) float64, the N
    masked captions). Distinct captions not seen before for this caption are scored in
    batches; the rest come from the cache.
    """

    def __init__(self, factory: SurrogateFactory, caption: str):
        self.factory = factory
        self.caption = caption
        self.token_ids = factory.target_ids(caption)
        if not self.token_ids:
            raise ValueError(f"caption {caption!r} has no tokens for the tokenizer of {factory.lm_name!r}")
        self.layout = TokenLayout(factory.tokenizer, self.token_ids, merge_words=factory.merge_words)
        self.tokens = self.layout.tokens
        self._cache: dict[str, np.ndarray] = {}

    def score_captions(self, captions: list[str]) -> np.ndarray:
        """Scores for given masked-image captions: N strings -> (N, T) float64."""
        f = self.factory
        new = [c for c in dict.fromkeys(captions) if c not in self._cache]
        for start in range(0, len(new), f.batch_size):
            chunk = new[start : start + f.batch_size]
            for c, row in zip(chunk, f.lm_scores(chunk, self.token_ids)):
                self._cache[c] = row
        if not captions:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        return self.layout.apply(np.stack([self._cache[c] for c in captions]))

    def score_with_captions(self, images: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        captions = self.factory.captioner.caption(list(images))
        if len(captions) != len(images):
            raise ValueError(
                f"captioner {self.factory.captioner.name!r} returned {len(captions)} captions for {len(images)} images"
            )
        return self.score_captions(captions), captions

    def score(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, 3) uint8 -> (N, T) float64."""
        return self.score_with_captions(images)[0]
