"""Captioners and their registry.

``CAPTIONERS.create("hf:Salesforce/blip-image-captioning-base", options, context)`` builds a
captioner from a spec; the CLI's ``--captioner`` and saved runs use it. Register your own
with :meth:`capshap.registry.Registry.register` (see the README).

context keys every factory may read: ``device`` (torch device or None), ``cache_dir``
(caption cache folder or None), ``batch_size`` (images per forward pass or None),
``prompt`` (captioning prompt or None) and ``generate`` (generation settings dict or None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from capshap.interfaces import Captioner
from capshap.registry import Registry, SpecError

__all__ = ["CAPTIONERS", "build_captioner"]

CAPTIONERS: Registry[Captioner] = Registry("captioner", "--captioner")


def _refuse_generation(name: str, context: Mapping[str, Any]) -> None:
    if context.get("generate") or context.get("prompt"):
        raise SpecError("--generate/--prompt", name, "generation settings and prompts apply to hf: captioners only")


@CAPTIONERS.register("builtin", help="builtin[:K], the embedded EfficientNet-Lite0 'a photo of a {label}' (offline)",
                     options=("crop_fraction",))
def _builtin(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Captioner:
    from capshap.captioners.builtin import BuiltinCaptioner

    _refuse_generation("builtin", context)
    top_k = 1
    if arg:
        if not re.fullmatch(r"\d+", arg) or int(arg) < 1:
            raise SpecError("--captioner", f"builtin:{arg}", f"top-k {arg!r} is not a positive integer; e.g. builtin:3")
        top_k = int(arg)
    kw: dict[str, Any] = {"top_k": top_k, "device": context.get("device") or "cpu", **options}
    if context.get("batch_size") is not None:
        kw["batch_size"] = int(context["batch_size"])
    return BuiltinCaptioner(**kw)


@CAPTIONERS.register("hf", help="hf:ID_OR_PATH, a Hugging Face image-to-text or chat vision-language model",
                     options=("dtype", "half", "revision"), needs_arg=True)
def _hf(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Captioner:
    from capshap.captioners.hf import HFCaptioner

    kw: dict[str, Any] = {
        "device": context.get("device"),
        "generate_kwargs": dict(context.get("generate") or {}) or None,
        "prompt": context.get("prompt"),
    }
    if "revision" in options:
        kw["load_kwargs"] = {"revision": options.pop("revision")}
    kw.update(options)
    if context.get("batch_size") is not None:
        kw["batch_size"] = int(context["batch_size"])
    hf = HFCaptioner(arg, **kw)
    if context.get("cache_dir") is None:
        return hf
    from capshap.captioners.cache import CaptionCache, with_cache

    ns = f"hf/{arg}/{sorted(hf.generate_kwargs.items())!r}/{hf.prompt!r}"
    return with_cache(hf, CaptionCache(context["cache_dir"]), ns)


_AZURE_APIS = {"azure": "v3.2", "azure-v3.2": "v3.2", "azure-v3.1": "v3.1", "azure-v4": "v4"}


def _azure_factory(api: str) -> Any:
    def make(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Captioner:
        from capshap.captioners.azure import AzureCaptioner

        _refuse_generation("azure", context)
        if arg:
            raise SpecError("--captioner", f"azure:{arg}", "azure takes no argument; set AZURE_VISION_ENDPOINT and AZURE_VISION_KEY")
        return AzureCaptioner(api=api, cache_dir=context.get("cache_dir"), **options)

    return make


_AZURE_OPTIONS = ("language", "gender_neutral", "image_format", "jpeg_quality", "max_concurrency", "max_retries",
                  "timeout", "max_response_bytes", "backoff", "max_backoff")
for _name, _api in _AZURE_APIS.items():
    CAPTIONERS.register(
        _name, _azure_factory(_api), options=_AZURE_OPTIONS,
        help=f"{_name}, Azure AI Vision {'Image Analysis 4.0' if _api == 'v4' else _api + ' describe (the SHAP notebook)'}; "
        "reads AZURE_VISION_ENDPOINT and AZURE_VISION_KEY",
    )


_OPENAI_OPTIONS = ("base_url", "api_key_env", "own_head", "timeout", "max_concurrency", "max_retries", "seed",
                   "temperature", "max_tokens", "image_format", "jpeg_quality", "max_response_bytes", "backoff",
                   "max_backoff")


@CAPTIONERS.register("openai", help="openai:MODEL, a vision model behind an OpenAI-compatible chat API (vLLM, "
                     "OpenAI, Ollama); reads OPENAI_BASE_URL and OPENAI_API_KEY; own-head scoring where the "
                     "server returns prompt log-probabilities (vLLM)", options=_OPENAI_OPTIONS, needs_arg=True)
def _openai(arg: str, options: dict[str, Any], context: Mapping[str, Any]) -> Captioner:
    from capshap.captioners.openai import open_captioner

    kw: dict[str, Any] = dict(options)
    gen = dict(context.get("generate") or {})
    for src, dst in (("max_new_tokens", "max_tokens"), ("max_tokens", "max_tokens"), ("temperature", "temperature"),
                     ("seed", "seed")):
        if src in gen:
            kw.setdefault(dst, gen.pop(src))
    if gen:
        kw["extra_body"] = gen  # other sampling fields go to the server as they are
    if context.get("prompt"):
        kw["prompt"] = context["prompt"]
    return open_captioner(arg, cache_dir=context.get("cache_dir"), **kw)


def build_captioner(
    spec: str,
    options: Mapping[str, Any] | None = None,
    **context: Any,
) -> Captioner:
    """A captioner from a spec such as ``"builtin"``, ``"hf:ID_OR_PATH"`` or ``"azure-v4"``.

    ``options`` are the kind's own options (``--captioner-opt``); ``context`` the run-wide
    ones (device, cache_dir, batch_size, prompt, generate). The captioner's ``spec``
    attribute is set so that a saved run can name it. Raises :class:`SpecError`.
    """
    cap = CAPTIONERS.create(spec, options, context)
    try:
        cap.spec = spec.strip()
    except AttributeError:  # pragma: no cover - a captioner with a read-only spec
        pass
    return cap
