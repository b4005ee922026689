"""The family registry of HFCaptioner: detection from model_type, errors for unknown families."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models as tm  # noqa: E402

from capshap.captioners.hf import FamilyAdapter, HFCaptioner, UnsupportedFamilyError, supported_families  # noqa: E402
from capshap.captioners.hf.families import adapter_for, register  # noqa: E402


def test_every_family_is_registered_by_model_type():
    fams = supported_families()
    assert set(fams) == {"encoder-decoder", "blip", "git", "llava", "qwen2-vl", "idefics3", "paligemma", "gemma3"}
    assert "qwen2_5_vl" in fams["qwen2-vl"] and "smolvlm" in fams["idefics3"]
    for name, types in fams.items():
        for mt in types:
            cls = adapter_for(mt, "x")
            assert issubclass(cls, FamilyAdapter) and cls.name == name


def test_an_unknown_model_type_names_it_and_the_supported_families(tmp_path):
    from transformers import Blip2Config

    folder = tmp_path / "blip2"
    Blip2Config().save_pretrained(folder)  # a config alone: refused before any weights load
    with pytest.raises(UnsupportedFamilyError) as err:
        HFCaptioner(str(folder), device="cpu")
    msg = str(err.value)
    assert "'blip-2'" in msg and str(folder) in msg
    for fam, types in supported_families().items():
        assert fam in msg and all(t in msg for t in types)
    assert isinstance(err.value, ValueError)


def test_registering_a_model_type_twice_is_refused():
    with pytest.raises(ValueError, match="already handled"):

        @register("llava")
        class Other(FamilyAdapter):  # pragma: no cover - never instantiated
            name = "other"


def test_classic_families_report_their_input_size():
    # ViT and BLIP resize to height x width; GIT's CLIP processor centre-crops
    for folder in (tm.vit_gpt2_dir(), tm.blip_dir(), tm.git_dir()):
        cap = HFCaptioner(folder, device="cpu")
        assert cap.input_size == (tm.IMAGE, tm.IMAGE)
        enc = cap.adapter.pixel_values([np.zeros((50, 70, 3), np.uint8)])
        assert tuple(enc.shape[-2:]) == cap.input_size


def test_a_given_caption_that_does_not_round_trip_warns_with_its_tokens(caplog):
    import logging

    cap = HFCaptioner(tm.git_dir(), device="cpu")  # lower-case WordPiece: no emoji, no capitals
    caption = "a dog \U0001f436 on the grass"
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.hf"):
        scorer = cap.own_scorer(caption)
    assert "does not round-trip" in caplog.text and repr(caption) in caplog.text and "[UNK]" in caplog.text
    assert "[UNK]" not in scorer.tokens  # special tokens are fed, not scored
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="capshap.captioners.hf"):
        cap.own_scorer("A Dog on  the grass")  # case and spacing aside, it round-trips
    assert "round-trip" not in caplog.text


def test_a_processor_that_needs_a_missing_package_says_which():
    from capshap.captioners.hf import ModelLoadError, load_pretrained

    class NeedsTorchvision:
        @staticmethod
        def from_pretrained(name, **kw):
            raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")

    with pytest.raises(ModelLoadError) as err:
        load_pretrained(NeedsTorchvision, "some/vlm", "processor")
    msg = str(err.value)
    assert "'some/vlm'" in msg and "processor" in msg and "Torchvision" in msg and "install" in msg
