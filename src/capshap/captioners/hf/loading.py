"""Loading Hugging Face objects: devices, dtypes, and ``from_pretrained`` with errors in the
user's terms (which id, where it looked, how to work offline)."""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["ModelLoadError", "resolve_device", "resolve_dtype", "load_pretrained"]

logger = logging.getLogger("capshap.captioners.hf")


class ModelLoadError(OSError):
    """A Hugging Face model, tokenizer or processor could not be found or loaded."""


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
    looked and how to work offline (or which missing package it needs); a model of the wrong
    kind raises ValueError naming its type, followed by ``hint``.
    """
    try:
        return loader.from_pretrained(name, **kwargs)
    except ValueError as err:
        msg = str(err).strip()
        first = msg.splitlines()[0] if msg else repr(err)
        if "Unrecognized" in msg:
            raise ValueError(f"{name!r} is not a model capshap can load as the {what}: {first} {hint}".rstrip()) from err
        raise ModelLoadError(f"{_not_found_message(name, what)} (transformers said: {first})") from err
    except ImportError as err:  # e.g. a processor that needs torchvision or num2words
        msg = " ".join(str(err).split())
        raise ModelLoadError(
            f"could not load the {what} of {name!r}: it needs a package that is not installed ({msg}); "
            "install it into this environment (for torchvision, the build that matches your torch) and retry"
        ) from err
    except OSError as err:
        msg = str(err).strip()
        first = msg.splitlines()[0] if msg else repr(err)
        raise ModelLoadError(f"{_not_found_message(name, what)} (transformers said: {first})") from err


