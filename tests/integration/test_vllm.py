"""Own-head explanations through a real vLLM server equal the in-process ones.

A tiny random chat VLM (tests/tiny_vlms.py, sizes vLLM's CPU attention accepts) is built,
served by the CPU build of vLLM on 127.0.0.1 (tests/integration/vllm_server.py: loopback
only, checked by the server's sockets; bounded lifetime; stopped by PID) and explained
through the ``openai:`` captioner and in process through ``HFCaptioner`` (``hf:``).

Runs where ``CAPSHAP_VLLM_PYTHON`` names the python of a vLLM venv (``.ci/vllm-stage`` makes
one and sets it); skipped with the reason elsewhere, and failing instead of skipping with
``CAPSHAP_REQUIRE_VLLM=1`` (CI).

PaliGemma: vLLM's CPU build cannot serve it here. Its engine computes the image token count
through ``vllm/model_executor/models/vision.py:get_vision_encoder_info``, which imports
``vllm/model_executor/models/pixtral.py`` whatever the vision tower, and that imports
transformers' Pixtral image processor, which needs torchvision; the torchvision wheels on
PyPI for torch 2.13.0+cpu are CUDA builds that do not load next to it (``operator
torchvision::nms does not exist``), so the stage uninstalls them. The PaliGemma case runs
where that import works, and is skipped naming the import error where it does not.

Tolerance of own-head values: both sides compute float32 logits (in process: torch on CPU,
batched; vLLM: its CPU attention kernels, one request per masked image); summation order
differs, so log-probabilities differ by a few float32 ulps of the logits (about 1e-6
relative), and log-odds log p - log(1 - p) amplify that near p = 1. Measured: about 3e-5
relative at most. Checked at 1e-4 relative plus 1e-4 times the largest output magnitude.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tiny_vlms as tv
from vllm_server import VLLMServer, run_python, unavailable, vllm_python

FAMILIES = ("idefics3", "paligemma")
PROMPT = {"idefics3": "Describe this image in one sentence.", "paligemma": "caption en"}
STD = 0.5  # the image matters and greedy captions vary
MAX_TOKENS = 12
KW = {"max_evals": 40, "batch_size": 20, "on_error": "raise", "progress": False}
RTOL = 1e-4
CONTRAST = "a cat sitting on a mat"
NEAR_TIE = 1e-3  # nats between two tokens that float32 kernels may order either way

# PaliGemma has no chat template: the prompt is the task text, then a newline, then the answer
PALIGEMMA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('') -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{ text }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ text }}{{ '<eos>' }}{%- endif -%}"
    "{%- endfor -%}"
)


def close(server: np.ndarray, local: np.ndarray, scale: float) -> None:
    np.testing.assert_allclose(server, local, rtol=RTOL, atol=RTOL * max(1.0, scale))


@dataclass
class Served:
    family: str
    server: VLLMServer
    model: str
    version: str
    hf: Any  # HFCaptioner that captioned the candidates
    cap: Any  # OpenAIOwnHeadCaptioner that captioned the candidates
    hf_text: Any  # HFCaptioner that captioned nothing: explains captions given as text
    cap_text: Any  # the same through the server
    candidates: np.ndarray
    captions: list[str]  # through the server
    local_captions: list[str]
    differ: list[int] = field(default_factory=list)  # candidates whose caption text does not round-trip

    @property
    def images(self) -> list[np.ndarray]:
        return list(self.candidates[:2])


def _blocker(family: str, py: str) -> str | None:
    """Why the CPU build cannot serve ``family`` here (None: it can)."""
    if family != "paligemma":
        return None
    r = run_python(py, "import vllm.model_executor.models.pixtral")
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
    return ("vLLM's PaliGemma counts image tokens through models/vision.py, which imports models/pixtral.py, "
            f"which needs torchvision (not loadable next to the CPU torch): {last}")


@pytest.fixture(scope="module", params=FAMILIES)
def served(request, tmp_path_factory):
    py = vllm_python()
    try:
        import psutil  # noqa: F401
    except ImportError:
        unavailable("psutil is not installed: the server's sockets cannot be checked, so no server is started")
    family = request.param
    why = _blocker(family, py)
    if why is not None:
        pytest.skip(why)
    r = run_python(py, "import vllm; print(vllm.__version__)")
    if r.returncode != 0:
        unavailable(f"vLLM does not import in {py}: {(r.stderr.strip().splitlines() or [''])[-1]}")
    version = r.stdout.strip().splitlines()[-1]

    from capshap.captioners.hf import HFCaptioner
    from capshap.captioners.openai import OpenAIOwnHeadCaptioner, open_captioner

    folder = tmp_path_factory.mktemp(family)
    model = tv.build(family, str(folder / "model"), std=STD, dims=tv.VLLM_DIMS)
    extra: tuple[str, ...] = ()
    if family == "paligemma":
        (folder / "template.jinja").write_text(PALIGEMMA_TEMPLATE)
        extra = ("--chat-template", str(folder / "template.jinja"))
    server = VLLMServer(py, model, f"tiny-{family}", folder / "server.log", extra)
    request.addfinalizer(server.stop)
    server.start()
    def captioners() -> tuple[Any, Any]:
        hf = HFCaptioner(model, device="cpu", batch_size=KW["batch_size"], prompt=PROMPT[family],
                         generate_kwargs={"max_new_tokens": MAX_TOKENS})
        cap = open_captioner(f"tiny-{family}", base_url=server.base_url, proxies={}, prompt=PROMPT[family],
                             max_tokens=MAX_TOKENS, max_concurrency=4, timeout=300)
        request.addfinalizer(cap.close)
        assert isinstance(cap, OpenAIOwnHeadCaptioner)
        return hf, cap

    hf, cap = captioners()
    hf_text, cap_text = captioners()
    candidates = tv.images(8, size=40, seed=5)
    s = Served(family, server, model, version, hf, cap, hf_text, cap_text, candidates,
               cap.caption(list(candidates)), hf.caption(list(candidates)))
    from capshap.captioners.openai import CaptionTokensDiffer

    for i, c in enumerate(s.captions):
        try:
            cap.own_scorer(c)
        except CaptionTokensDiffer:
            s.differ.append(i)
    # a random model rarely writes a caption the way its tokenizer splits the text
    print(f"\n[{family}] vLLM {version}: {len(s.differ)} of {len(candidates)} captions do not round-trip "
          "through the text")
    return s


def test_the_server_listens_on_loopback_only_and_says_what_it_serves(served):
    served.server.check_sockets()  # after it has answered requests too
    assert served.server.sockets_checked >= 2
    assert served.cap.provenance() == {"served_model": served.model, "vllm_version": served.version}


def test_captions_are_identical(served):
    # trailing incomplete characters are dropped in process as vLLM drops them
    assert served.captions == served.local_captions


def test_auto_chooses_the_own_head(served):
    from capshap.captioners.openai import OpenAIOwnHeadScorer
    from capshap.scoring import bind_scorer

    assert isinstance(bind_scorer("auto", served.cap_text, served.captions[0]), OpenAIOwnHeadScorer)


def _explain(captioner, images, **kw):
    import capshap

    return capshap.explain(list(images), captioner=captioner, **{**KW, **kw})


def _own_pair(served, i: int, **kw):
    """Image i explained with the server's caption of it, given as text, through the server
    and in process (captioners that did not write it: both score the text's tokens)."""
    opts = {"scorer": "own", "caption": served.captions[i], **kw}
    return (_explain(served.cap_text, [served.candidates[i]], **opts)[0],
            _explain(served.hf_text, [served.candidates[i]], **opts)[0])


def test_own_head_values_through_the_server_equal_in_process(served):
    worst = 0.0
    for i in (0, 1):
        r, lo = _own_pair(served, i)
        assert r.caption == lo.caption == served.captions[i] and r.tokens == lo.tokens
        assert "".join(r.tokens) == "".join(served.captions[i].split())  # words keep every character
        assert r.coalitions == lo.coalitions
        scale = float(np.abs(lo.outputs).max())
        close(r.base_values, lo.base_values, scale)
        close(r.outputs, lo.outputs, scale)
        close(r.values, lo.values, scale)
        worst = max(worst, float(np.abs(r.values - lo.values).max()) / max(1.0, float(np.abs(lo.values).max())))
        assert r.params["server"] == {"served_model": served.model, "vllm_version": served.version}
        assert "server" not in lo.params
    print(f"\n[{served.family}] own head: values differ by at most {worst:.1e} of their largest magnitude")


def test_own_head_pieces_through_the_server_equal_in_process(served):
    r, lo = _own_pair(served, 0, tokens="pieces")
    assert len(r.tokens) == len(lo.tokens) and len(r.tokens) > 1
    close(r.values, lo.values, float(np.abs(lo.outputs).max()))


def test_presence_values_agree_where_the_masked_captions_agree(served):
    remote = _explain(served.cap, served.images, scorer="presence")
    local = _explain(served.hf, served.images, scorer="presence")
    for r, lo in zip(remote, local):
        assert r.caption == lo.caption
        rows = {c: k for k, c in enumerate(lo.coalitions)}
        matched = [(k, rows[c]) for k, c in enumerate(r.coalitions) if c in rows]
        assert len(matched) >= 0.9 * len(lo.coalitions)
        differ = [(a, b) for a, b in matched if r.captions[a] != lo.captions[b]]
        for a, b in matched:
            if r.captions[a] == lo.captions[b]:
                np.testing.assert_array_equal(r.scores[a], lo.scores[b])
        # nothing but an incomplete character: vLLM answers "", in process the U+FFFD is kept
        # (an empty caption would stop a chat model's explanation)
        partial = [(a, b) for a, b in differ if r.captions[a] == "" and set(lo.captions[b]) <= {"\ufffd"}]
        gaps = [_tie_gap(served, r, r.coalitions[a], r.captions[a], lo.captions[b])
                for a, b in differ if (a, b) not in partial]
        print(f"\n[{served.family}] presence: masked captions differ in {len(differ)} of {len(matched)}: "
              f"{len(partial)} only incomplete characters; where the others part, the in-process log-probability "
              f"gaps between the two tokens are {[f'{g:.1e}' for g in gaps]}")
        # otherwise greedy decoding only parts where two tokens nearly tie (float32 kernels differ)
        assert len(differ) <= 0.1 * len(matched)
        assert all(g < NEAR_TIE for g in gaps)
        if not differ and r.coalitions == lo.coalitions:
            np.testing.assert_array_equal(r.values, lo.values)


def _tie_gap(served, exp, coalition, remote_caption: str, local_caption: str) -> float:
    """Where the server's greedy caption of a masked image parts from the in-process one:
    how much more log-probability the model in process gives its own token than the
    server's token at that step (the server's ids: what it reported generating)."""
    import torch

    from capshap.masking import Masker

    image = Masker(np.ascontiguousarray(exp.image), exp.tree, "inpaint_ns").render([coalition])[0]
    eos = min(served.hf.adapter.eos_ids({}))
    ours, theirs = list(served.cap.written_ids(remote_caption)), list(served.hf._generated[local_caption])
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    assert k < max(len(ours), len(theirs)), f"same ids, other texts: {remote_caption!r} vs {local_caption!r}"
    ours, theirs = ours + [eos], theirs + [eos]  # the shorter one ended there
    with torch.inference_mode():
        logits = served.hf.adapter.answer_logits([image], theirs[: k + 1])
    lp = torch.log_softmax(logits[0, k].double(), -1)
    return float(lp[theirs[k]] - lp[ours[k]])


def test_contrast_through_the_server_equals_in_process(served):
    r, lo = _own_pair(served, 0, contrast=CONTRAST)
    assert r.tokens == lo.tokens and len(r.tokens) == 1
    scale = float(np.abs(lo.outputs).max())
    close(r.outputs, lo.outputs, scale)
    close(r.values, lo.values, scale)


def test_four_in_flight_against_the_server_equal_serial(served):
    images = [*served.images, *served.images[::-1]]
    opts = {"scorer": "own", "caption": served.captions[0]}
    flight = _explain(served.cap_text, images, runner="in_flight", in_flight=4, **opts)
    serial = _explain(served.cap_text, images, **opts)
    assert len(flight) == len(serial) == 4
    for f, s in zip(flight, serial):
        scale = float(np.abs(s.outputs).max())
        close(f.values, s.values, scale)  # vLLM batches concurrent requests: float32 order differs
        close(f.base_values, s.base_values, scale)


def test_a_caption_that_does_not_round_trip_fails_clearly_on_the_server(served):
    from capshap.captioners.openai import CaptionTokensDiffer

    assert served.differ, "every caption round-tripped: no case to check"
    for i in served.differ:
        caption = served.captions[i]
        # the model wrote ids its caption text does not carry: the server path says which, and stops
        with pytest.raises(CaptionTokensDiffer, match=r"from token \d+ the server has \[.*\], the model wrote \["):
            served.cap.own_scorer(caption, merge_words=True)
        # the ids the server reported generating are the ids generated in process
        assert list(served.cap.written_ids(caption)) == list(served.hf.caption_ids(caption))
    # the same caption as text is scored on both paths (test_own_head_values_... above)
