"""Secret scrubbing of the forms a server may echo: exact, URL-quoted, upper- or
lower-cased, reversed, a character left out, changed or added, inside other text; and
ordinary text (short words, other tokens) left alone. End to end: a 401 whose body
echoes the key altered never reaches the error text or the logs."""

from __future__ import annotations

import logging

import pytest

from capshap.captioners.http import Secret, scrub

KEY = "sk-proj-Abc123XyZ-987qwe"


def _variants(k: str) -> dict[str, str]:
    return {
        "exact": k, "upper": k.upper(), "lower": k.lower(), "swapped": k.swapcase(), "reversed": k[::-1],
        "reversed upper": k[::-1].upper(), "minus first": k[1:], "minus last": k[:-1],
        "minus middle": k[:9] + k[10:], "minus two": k[:3] + k[4:12] + k[13:], "one changed": k[:5] + "#" + k[6:],
        "one added": k[:7] + "Q" + k[7:], "quoted": k.replace("-", "%2D"),
    }


@pytest.mark.parametrize("name, form", list(_variants(KEY).items()))
def test_echoed_forms_are_scrubbed(name, form):
    for text in (f"invalid key {form}", f'{{"error": "key={form}&x"}}', f"Bearer {form}."):
        out = scrub(text, [Secret(KEY)])
        assert "***" in out, (name, out)
        low = out.lower()
        assert KEY.lower()[3:15] not in low and KEY.lower()[::-1][3:15] not in low, (name, out)


def test_ordinary_text_and_short_secrets_are_left_alone():
    text = "401 Unauthorized: Incorrect API key provided. See https://platform.example/account/api-keys."
    assert scrub(text, [Secret(KEY)]) == text
    # a short secret: its exact form only (altered forms would hit ordinary words)
    assert scrub("the cat sat; a CAT, a tac, a ct", [Secret("cat")]) == "the *** sat; a CAT, a tac, a ct"
    assert scrub("sk-proj-Abc123XyZ-000000", [Secret(KEY)]) == "sk-proj-Abc123XyZ-000000"  # far from the key


def test_a_401_echoing_the_key_altered_never_reaches_errors_or_logs(caplog, monkeypatch):
    pytest.importorskip("httpx")
    import numpy as np
    import tiny_vlms as tv
    from fake_openai import MODEL, FakeOpenAI

    from capshap.captioners.hf import HFCaptioner
    from capshap.captioners.openai import open_captioner

    hf = HFCaptioner(tv.path("llava", std=0.5), device="cpu", batch_size=8, generate_kwargs={"max_new_tokens": 6})
    caplog.set_level(logging.DEBUG)
    forms = list(_variants(KEY).values())
    with FakeOpenAI(hf, key="the-right-key") as s:
        real = s._error
        monkeypatch.setattr(s, "_error", lambda status, message: real(status, message + " got: " + " | ".join(forms)))
        cap = open_captioner(MODEL, own_head="no", base_url=s.base_url, proxies={}, api_key=KEY, max_retries=0,
                             max_concurrency=1)
        res = cap.caption_each([np.zeros((16, 16, 3), np.uint8)])
    texts = [str(res[0]), repr(res[0]), caplog.text]
    assert "401" in texts[0] and "got: ***" in texts[0]  # the body is shown, scrubbed
    for t in texts:
        low = t.lower()
        for f in forms:
            assert f.lower() not in low, (f, t[:500])
