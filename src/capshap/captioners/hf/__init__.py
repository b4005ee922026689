"""Hugging Face image captioners, and white-box scoring with the captioner's own head.

:class:`HFCaptioner` loads an image-to-text model by hub id or local folder through
``AutoModelForImageTextToText`` (VisionEncoderDecoder such as
``nlpconnect/vit-gpt2-image-captioning``, BLIP such as
``Salesforce/blip-image-captioning-base``, GIT such as ``microsoft/git-base-coco``), with
``AutoImageProcessor`` and ``AutoTokenizer`` from the same folder, and captions batches of
images with ``generate``.

``HFCaptioner.own_scorer(caption)`` (used by ``OwnHead(captioner).bind(caption)``) returns a
:class:`OwnHeadScorer`: the captioner's decoder is teacher-forced on the caption's token ids,
one forward pass per batch of masked images, and each caption token gets its log-odds
log p - log(1 - p) (or log p with ``score="logprob"``) given the masked image.

Which token ids are teacher-forced
----------------------------------
The scores must be those of the tokens the model actually produced. ``caption()`` therefore
remembers, per caption string, the ids ``generate`` returned (the last 4096 captions);
``own_scorer`` uses those ids whenever the caption came from this captioner, which is the
normal path (caption the image, then explain that caption). Only for a caption from
elsewhere is it tokenized with the model's tokenizer (no special tokens added), and the
result is checked by decoding it back: a caption that does not round-trip to the same text
(case and spacing aside) logs a warning naming the caption. The tests check that
teacher-forced log-probabilities equal the log-softmax of the logits ``generate`` produced
for each token it picked.

Special and prompt tokens (decoder start / BOS, EOS, padding, BLIP's or GIT's prompt such
as "a picture of", GIT's [CLS] / [SEP]) are fed to the model but are not among the T scored
tokens. Captions returned by ``caption()`` do not include the prompt.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from capshap.scoring.logodds import check_score, token_scores_torch
from capshap.interfaces import Captioner, Scorer

__all__ = [
    "HFCaptioner",
    "OwnHeadScorer",
    "ModelLoadError",
    "TokenLayout",
    "resolve_device",
    "load_pretrained",
    "token_pieces",
]

logger = logging.getLogger(__name__)

_GENERATED_CACHE = 4096


class ModelLoadError(OSError):
    """A Hugging Face model, tokenizer or processor could not be found or loaded."""


# --------------------------------------------------------------------------------------
# devices, dtypes, loading


def resolve_device(device: Any = None) -> Any:
    """A torch.device: ``None`` or ``"auto"`` picks cuda, then mps, then cpu; anything else
    (``"cpu"``, ``"cuda:1"``, a torch.device) is used as given."""
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but this torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r}, but MPS is not available here; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: Any, half: bool, device: Any) -> Any:
    """The torch dtype to load weights in: ``dtype`` if given (a torch.dtype or its name),
    else float16 when ``half`` and the device is a GPU (cuda/mps), else float32."""
    import torch

    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            return dtype
        name = str(dtype).replace("torch.", "")
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; use e.g. 'float32', 'float16' or 'bfloat16'")
        return value
    if half:
        if device.type in ("cuda", "mps"):
            return torch.float16
        logger.warning("half=True needs a GPU (cuda or mps); running in float32 on %s", device)
    return torch.float32


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or os.path.exists(name)
    )


def _not_found_message(name: str, what: str) -> str:
    from huggingface_hub import constants

    path = os.path.abspath(os.path.expanduser(name))
    if _looks_like_path(name) and not os.path.isdir(path):
        return f"could not load the {what} {name!r}: there is no folder {path}; check the path"
    if os.path.isdir(path):
        return f"could not load the {what} {name!r} from the local folder {path}"
    if constants.HF_HUB_OFFLINE:
        hub = "the hub was not asked because HF_HUB_OFFLINE is set"
    else:
        hub = f"the hub at {constants.ENDPOINT} did not provide it (no such repository, no access, or no connection)"
    return (
        f"could not find the {what} {name!r}: there is no local folder {path}, it is not in the "
        f"Hugging Face cache {constants.HF_HUB_CACHE}, and {hub}. To work offline, pass the path of a "
        f"local folder that holds the model (written by save_pretrained, or by `hf download {name} "
        "--local-dir DIR` on a machine with internet), or download it into the cache once and set "
        "HF_HUB_OFFLINE=1"
    )


def load_pretrained(loader: Any, name: str, what: str, hint: str = "", **kwargs: Any) -> Any:
    """``loader.from_pretrained(name, **kwargs)`` with errors in the user's terms.

    ``what`` names what was being loaded ("image captioning model", "tokenizer", ...). A
    model that cannot be found or read raises :class:`ModelLoadError` naming the id, where it
    looked and how to work offline; a model of the wrong kind raises ValueError naming its
    type, followed by ``hint``.
    """
    try:
        return loader.from_pretrained(name, **kwargs)
    except ValueError as err:
        msg = str(err).strip()
        first = msg.splitlines()[0] if msg else repr(err)
        if "Unrecognized" in msg:
            raise ValueError(f"{name!r} is not a model capshap can load as the {what}: {first} {hint}".rstrip()) from err
        raise ModelLoadError(f"{_not_found_message(name, what)} (transformers said: {first})") from err
    except OSError as err:
        msg = str(err).strip()
        first = msg.splitlines()[0] if msg else repr(err)
        raise ModelLoadError(f"{_not_found_message(name, what)} (transformers said: {first})") from err


# --------------------------------------------------------------------------------------
# tokens and words


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[tuple[str, bool]]:
    """Readable text of each token and whether it starts a new word.

    ``ids`` are non-special token ids of one caption. Each token's text is what it adds to
    the decoded caption (so GPT-2's "Ġ" and WordPiece's "##" disappear), stripped; a token
    starts a word when that addition begins with whitespace (or it is the first token).
    Returns a list of (text, starts_word), one per id.
    """
    ids = [int(i) for i in ids]
    out: list[tuple[str, bool]] = []
    prev = ""
    for i, tid in enumerate(ids):
        cur = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        raw = tokenizer.convert_ids_to_tokens(tid)
        raw = raw if isinstance(raw, str) else str(raw)
        if cur.startswith(prev):
            piece = cur[len(prev):]
            starts = i == 0 or piece[:1].isspace()
        else:  # decoding is not prefix-stable here (partial UTF-8, clean-up); use the raw token
            piece = tokenizer.decode([tid], skip_special_tokens=True)
            starts = i == 0 or raw.startswith(("Ġ", "▁")) or (not raw.startswith("##") and piece[:1].isspace())
        text = piece.strip()
        if text.startswith("##") and raw.startswith("##"):  # WordPiece keeps ## on a leading piece
            text = text[2:]
        if not text:
            text = raw.lstrip("Ġ▁").removeprefix("##") or raw
        out.append((text, starts))
        prev = cur
    return out


class TokenLayout:
    """The scored tokens of one caption, and optionally their grouping into words.

    Built from the non-special token ids of the caption. ``tokens`` are the T column names a
    scorer exposes: token texts, or word texts with ``merge_words=True``. :meth:`apply` turns
    per-token scores (N, T_tokens) into per-column scores (N, T), summing a word's tokens.
    """

    def __init__(self, tokenizer: Any, ids: Sequence[int], merge_words: bool = False):
        pieces = token_pieces(tokenizer, ids)
        self.token_texts = [p[0] for p in pieces]
        self.merge_words = bool(merge_words)
        if not self.merge_words:
            self.tokens = list(self.token_texts)
            self._starts = None
            return
        starts = [i for i, (_, s) in enumerate(pieces) if s or i == 0]
        self._starts = np.asarray(starts, dtype=np.intp)
        bounds = starts + [len(pieces)]
        ids = [int(i) for i in ids]
        self.tokens = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            word = tokenizer.decode(ids[a:b], skip_special_tokens=True).strip()
            self.tokens.append(word or "".join(self.token_texts[a:b]))

    def apply(self, token_scores: np.ndarray) -> np.ndarray:
        """(N, T_tokens) float64 -> (N, T) float64 (sums over each word's tokens when merging)."""
        if self._starts is None:
            return token_scores
        if token_scores.shape[0] == 0:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        return np.add.reduceat(token_scores, self._starts, axis=1)


def _check_images(images: Any, who: str) -> list[np.ndarray]:
    out = []
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"{who}: image {i} has shape {a.shape}; expected a (H, W, 3) uint8 RGB array")
        if a.dtype != np.uint8:
            raise ValueError(f"{who}: image {i} has dtype {a.dtype}; expected uint8 RGB (0-255)")
        out.append(a)
    return out


def _as_id_set(x: Any) -> set[int]:
    if x is None:
        return set()
    if isinstance(x, (list, tuple, set)):
        return {int(v) for v in x if v is not None}
    return {int(x)}


# --------------------------------------------------------------------------------------
# the captioner


class HFCaptioner(Captioner):
    """A Hugging Face image-to-text model as a captioner, with its own head for scoring.

    Parameters
    ----------
    model : str or PreTrainedModel
        Hub id (``"Salesforce/blip-image-captioning-base"``) or local folder, loaded with
        ``AutoModelForImageTextToText``; or an already loaded model (then pass
        ``image_processor`` and ``tokenizer`` or let them load from ``model.name_or_path``).
        Supported: VisionEncoderDecoder (ViT + GPT-2 etc.), BLIP, GIT.
    device : str or torch.device, optional
        ``None``/``"auto"``: cuda, then mps, then cpu.
    dtype : torch dtype or name, optional
        Weight dtype; overrides ``half``.
    half : bool
        float16 weights on a GPU (ignored with a warning on cpu). Default False.
    batch_size : int
        Images per ``generate`` call and per scoring forward pass.
    generate_kwargs : dict, optional
        Passed to ``model.generate`` (``max_new_tokens``, ``num_beams``, ...).
    prompt : str, optional
        Text the caption continues (BLIP's conditional captioning, e.g. "a picture of";
        also GIT and VisionEncoderDecoder). Not part of returned captions or scored tokens.
    image_processor, tokenizer : optional
        Objects (or ids/paths) to use instead of loading them from ``model``'s folder.
    load_kwargs : dict, optional
        Passed to every ``from_pretrained`` (``revision``, ``cache_dir``, ``local_files_only``).
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
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.batch_size = int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.prompt = prompt if prompt else None
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, half, self.device)
        load_kwargs = dict(load_kwargs or {})

        if isinstance(model, (str, os.PathLike)):
            self.model_id = os.fspath(model)
            model = load_pretrained(
                AutoModelForImageTextToText,
                self.model_id,
                "image captioning model",
                hint="HFCaptioner loads image-to-text models (VisionEncoderDecoder, BLIP, GIT); "
                "a text-only language model belongs in SurrogateScorer(captioner, lm, tokenizer).",
                dtype=self.dtype,
                **load_kwargs,
            )
        else:
            if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate"):
                raise TypeError(
                    f"model must be a hub id, a local folder or a transformers model with generate(); got {type(model).__name__}"
                )
            self.model_id = str(getattr(model, "name_or_path", "") or type(model).__name__)
            if dtype is None and not half:  # a loaded model keeps its dtype unless asked
                self.dtype = model.dtype
            model = model.to(self.dtype)
        self.model = model.to(self.device).eval()

        source = self.model_id
        if image_processor is None or isinstance(image_processor, (str, os.PathLike)):
            image_processor = load_pretrained(
                AutoImageProcessor, os.fspath(image_processor or source), "image processor", **load_kwargs
            )
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_pretrained(AutoTokenizer, os.fspath(tokenizer or source), "tokenizer", **load_kwargs)
        self.image_processor = image_processor
        self.tokenizer = tokenizer

        cfg = self.model.config
        mtype = getattr(cfg, "model_type", "")
        if mtype == "blip":
            self.kind = "blip"
        elif mtype == "git":
            self.kind = "git"
        elif getattr(cfg, "is_encoder_decoder", False) or mtype == "vision-encoder-decoder":
            self.kind = "encoder-decoder"
        else:
            self.kind = "causal"
        self._prefix = self._prefix_ids()
        self._eos = self._eos_ids()
        self._special = set(int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or [])
        self._generated: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        logger.info(
            "loaded %s (%s, %s) on %s in %s", self.model_id, type(self.model).__name__, self.kind, self.device, self.dtype
        )

    # -- model specifics -------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model_id

    def _start_id(self) -> int:
        cfg = self.model.config
        gen = getattr(self.model, "generation_config", None)
        if self.kind == "blip":
            return int(cfg.text_config.bos_token_id)
        if self.kind == "encoder-decoder":
            candidates = [
                getattr(gen, "decoder_start_token_id", None),
                getattr(cfg, "decoder_start_token_id", None),
                getattr(getattr(cfg, "decoder", None), "decoder_start_token_id", None),
                getattr(getattr(cfg, "decoder", None), "bos_token_id", None),
                getattr(gen, "bos_token_id", None),
            ]
        else:
            candidates = [getattr(gen, "bos_token_id", None), getattr(cfg, "bos_token_id", None)]
        for c in candidates:
            if c is not None:
                return int(c[0] if isinstance(c, (list, tuple)) else c)
        raise ValueError(
            f"model {self.model_id!r} defines no decoder start / bos token id in its config or generation "
            "config; set model.generation_config.decoder_start_token_id (or bos_token_id)"
        )

    def _prefix_ids(self) -> list[int]:
        prefix = [self._start_id()]
        if self.prompt:
            prompt_ids = self.tokenizer(self.prompt, add_special_tokens=False)["input_ids"]
            if not prompt_ids:
                raise ValueError(f"prompt={self.prompt!r} has no tokens for the tokenizer of {self.model_id!r}")
            prefix += [int(i) for i in prompt_ids]
        return prefix

    def _eos_ids(self) -> set[int]:
        cfg = self.model.config
        gen = getattr(self.model, "generation_config", None)
        if self.kind == "blip":
            eos = _as_id_set(cfg.text_config.sep_token_id)
        else:
            eos = _as_id_set(getattr(gen, "eos_token_id", None)) or _as_id_set(getattr(cfg, "eos_token_id", None))
            if not eos and getattr(cfg, "decoder", None) is not None:
                eos = _as_id_set(getattr(cfg.decoder, "eos_token_id", None))
        return eos | _as_id_set(self.generate_kwargs.get("eos_token_id"))

    def pixel_values(self, images: Sequence[np.ndarray]) -> Any:
        """Preprocess a batch: list of (H, W, 3) uint8 -> (n, 3, h, w) tensor on the device."""
        from PIL import Image

        pil = [Image.fromarray(im) for im in images]
        pv = self.image_processor(images=pil, return_tensors="pt")["pixel_values"]
        return pv.to(device=self.device, dtype=self.dtype)

    def _prefix_tensor(self, n: int, extra: Sequence[int] = ()) -> Any:
        import torch

        row = list(self._prefix) + [int(i) for i in extra]
        return torch.tensor([row] * n, dtype=torch.long, device=self.device)

    def _generate(self, pv: Any) -> Any:
        n = pv.shape[0]
        kw = dict(self.generate_kwargs)
        if self.kind == "blip":
            # BLIP's generate replaces the first id by bos and drops the last one
            sep = int(self.model.config.text_config.sep_token_id)
            return self.model.generate(pixel_values=pv, input_ids=self._prefix_tensor(n, [sep]), **kw)
        if self.kind == "encoder-decoder":
            return self.model.generate(pixel_values=pv, decoder_input_ids=self._prefix_tensor(n), **kw)
        return self.model.generate(pixel_values=pv, input_ids=self._prefix_tensor(n), **kw)

    def logits(self, pv: Any, ids: Any) -> Any:
        """Teacher-forced logits: pixel values (n, 3, h, w) and decoder ids (n, L) ->
        (n, L, V), where position j holds the prediction of ids[:, j + 1]."""
        if self.kind == "encoder-decoder":
            out = self.model(pixel_values=pv, decoder_input_ids=ids)
        else:
            out = self.model(pixel_values=pv, input_ids=ids)
        logits = out.logits
        # GIT (and other causal models) put the image tokens before the text
        return logits[:, -ids.shape[1]:, :]

    # -- captioning --------------------------------------------------------------------

    def _split_generated(self, row: Sequence[int]) -> tuple[int, ...]:
        """Ids after the prefix, up to (not including) the first EOS."""
        content = [int(i) for i in row[len(self._prefix):]]
        for j, t in enumerate(content):
            if t in self._eos:
                content = content[:j]
                break
        pad = getattr(self.tokenizer, "pad_token_id", None)
        while content and pad is not None and content[-1] == pad:
            content.pop()
        return tuple(content)

    def _remember(self, caption: str, ids: tuple[int, ...]) -> None:
        self._generated[caption] = ids
        self._generated.move_to_end(caption)
        while len(self._generated) > _GENERATED_CACHE:
            self._generated.popitem(last=False)

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """Caption a batch: list of N uint8 (H, W, 3) arrays -> N strings (prompt not included)."""
        import torch

        images = _check_images(images, f"HFCaptioner({self.model_id!r})")
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            with torch.inference_mode():
                out = self._generate(self.pixel_values(batch))
            seqs = getattr(out, "sequences", out)
            seqs = seqs.detach().cpu().numpy()
            per = max(1, seqs.shape[0] // len(batch))  # num_return_sequences > 1: keep the first
            for row in seqs[::per]:
                ids = self._split_generated(row)
                text = self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()
                self._remember(text, ids)
                captions.append(text)
        return captions

    # -- own-head scoring --------------------------------------------------------------

    def caption_ids(self, caption: str) -> list[int]:
        """The token ids teacher-forced for ``caption`` (after the prefix, without EOS): the
        ids generated for it when this captioner wrote it, else its tokenization, checked by
        decoding it back."""
        key = caption.strip()
        if key in self._generated:
            return list(self._generated[key])
        ids = [int(i) for i in self.tokenizer(key, add_special_tokens=False)["input_ids"]]
        back = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if " ".join(back.casefold().split()) != " ".join(key.casefold().split()):
            logger.warning(
                "caption %r does not round-trip through the tokenizer of %s (decodes as %r); its scores "
                "are for the tokens %s",
                key, self.model_id, back, self.tokenizer.convert_ids_to_tokens(ids),
            )
        return ids

    def own_scorer(self, caption: str, score: str = "logodds", merge_words: bool = False) -> OwnHeadScorer:
        """A scorer bound to ``caption`` that teacher-forces this model's own decoder."""
        return OwnHeadScorer(self, caption, score=score, merge_words=merge_words)


class OwnHeadScorer(Scorer):
    """White-box scores of one caption under an :class:`HFCaptioner`'s own decoder.

    ``score(images)``: images (N, H, W, 3) uint8 -> (N, T) float64, where column t is the
    log-odds (or log-prob) of caption token t given the masked image and the caption's
    previous tokens. One forward pass per ``captioner.batch_size`` images.
    """

    def __init__(self, captioner: HFCaptioner, caption: str, score: str = "logodds", merge_words: bool = False):
        import torch

        self.captioner = captioner
        self.caption = caption
        self.score_kind = check_score(score)
        ids = captioner.caption_ids(caption)
        keep = [j for j, t in enumerate(ids) if t not in captioner._special]
        if not keep:
            raise ValueError(f"caption {caption!r} has no tokens to score for {captioner.model_id!r}")
        self.token_ids = [ids[j] for j in keep]
        self.layout = TokenLayout(captioner.tokenizer, self.token_ids, merge_words=merge_words)
        self.tokens = self.layout.tokens
        prefix = captioner._prefix
        # the decoder reads prefix + ids[:-1]; position len(prefix) - 1 + j predicts ids[j]
        self._input = torch.tensor(prefix + ids[:-1], dtype=torch.long)
        self._pos = torch.tensor([len(prefix) - 1 + j for j in keep], dtype=torch.long)
        self._target = torch.tensor(self.token_ids, dtype=torch.long)

    def score(self, images: np.ndarray) -> np.ndarray:
        """images (N, H, W, 3) uint8 -> (N, T) float64 scores."""
        import torch

        cap = self.captioner
        images = _check_images(images, f"own-head scorer of {cap.model_id!r}")
        if not images:
            return np.zeros((0, len(self.tokens)), dtype=np.float64)
        dev = cap.device
        pos, target = self._pos.to(dev), self._target.to(dev)
        out = []
        for start in range(0, len(images), cap.batch_size):
            batch = images[start : start + cap.batch_size]
            ids = self._input.to(dev).unsqueeze(0).expand(len(batch), -1)
            with torch.inference_mode():
                logits = cap.logits(cap.pixel_values(batch), ids)
                out.append(token_scores_torch(logits[:, pos, :], target, self.score_kind))
        return self.layout.apply(np.concatenate(out, axis=0))

    @property
    def stack_key(self) -> tuple[str, int]:
        """Scorers of one captioner object share forward passes (:meth:`score_stacked`)."""
        return ("hf-own", id(self.captioner))

    def score_stacked(self, requests: Sequence[tuple[OwnHeadScorer, np.ndarray]]) -> list[np.ndarray]:
        """Score several (scorer, images (N_i, H, W, 3)) requests of this captioner in shared
        forward passes of ``batch_size`` images; returns each request's (N_i, T_i) float64.

        Captions of different lengths are right-padded: the decoder is causal, so a
        position never sees the padding after it, and each row is read at its own
        caption's positions. Equal to :meth:`score` up to float rounding (the batch differs).
        """
        import torch

        cap = self.captioner
        checked = [_check_images(imgs, f"own-head scorer of {cap.model_id!r}") for _, imgs in requests]
        flat = [(r, im) for r, imgs in enumerate(checked) for im in imgs]
        length = max(len(sc._input) for sc, _ in requests)
        pad = getattr(cap.tokenizer, "pad_token_id", None)
        pad = int(pad) if pad is not None else int(requests[0][0]._input[-1])
        padded = []
        for sc, _ in requests:
            row = torch.full((length,), pad, dtype=torch.long)
            row[: len(sc._input)] = sc._input
            padded.append(row)
        rows: list[list[np.ndarray]] = [[] for _ in requests]
        dev = cap.device
        for start in range(0, len(flat), cap.batch_size):
            chunk = flat[start : start + cap.batch_size]
            ids = torch.stack([padded[r] for r, _ in chunk]).to(dev)
            with torch.inference_mode():
                logits = cap.logits(cap.pixel_values([im for _, im in chunk]), ids)
                for j, (r, _) in enumerate(chunk):
                    sc = requests[r][0]
                    rows[r].append(token_scores_torch(logits[j : j + 1, sc._pos.to(dev), :], sc._target.to(dev),
                                                      sc.score_kind))
        out = []
        for (sc, _), got in zip(requests, rows):
            z = np.concatenate(got, axis=0) if got else np.zeros((0, len(sc.layout.token_texts)))
            out.append(sc.layout.apply(z))
        return out
