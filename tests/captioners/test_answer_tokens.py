"""A caption's tokens on a vLLM server (capshap.captioners.answer_tokens), with the shapes vLLM
0.32 sends (checked against a real server in tests/integration/test_vllm.py)."""

from __future__ import annotations

import pytest

from capshap.captioners.answer_tokens import (
    generated_ids,
    leading_extra,
    token_difference,
    trailing_extra,
    word_pieces,
)


def test_generated_ids_leave_out_the_stop_token_and_unknown_cuts():
    assert generated_ids({"token_ids": [5, 6, 4], "finish_reason": "stop", "stop_reason": None}) == (5, 6)
    assert generated_ids({"token_ids": [5, 6, 9], "finish_reason": "stop", "stop_reason": 9}) == (5, 6)
    assert generated_ids({"token_ids": [5, 6, 7], "finish_reason": "length", "stop_reason": None}) == (5, 6, 7)
    # a stop string cut the text somewhere inside the ids: not known
    assert generated_ids({"token_ids": [5, 6, 7], "finish_reason": "stop", "stop_reason": "."}) is None
    assert generated_ids({"finish_reason": "stop"}) is None  # a server that sends no ids
    assert generated_ids({"token_ids": ["5"], "finish_reason": "length"}) is None
    assert generated_ids({"token_ids": [True], "finish_reason": "length"}) is None


def test_whitespace_around_the_caption_is_counted_not_empty_pieces():
    # vLLM: " " separator, "" for a partial byte, a newline appended after the caption
    pieces = [" ", "", "é", " cat", "\n"]
    assert leading_extra(pieces) == 1 and trailing_extra(pieces) == 1
    assert leading_extra(["", " "]) == 0 and trailing_extra([" cat", ""]) == 0
    assert leading_extra([None, " "]) == 0 and trailing_extra([]) == 0
    assert trailing_extra([" a", "\n", " "]) == 2


def test_word_pieces_give_back_what_vllm_decodes_to_nothing():
    # a real answer of vLLM 0.32 for "a cat\ufffd a dog": U+FFFD's three tokens decode to ""
    pieces = [" a", " cat", "", "", "", " a", " dog"]
    fixed = word_pieces("a cat\ufffd a dog", pieces)
    assert fixed == [" a", " cat", "", "", "\ufffd", " a", " dog"]
    # a character completed by a later token keeps its place
    assert word_pieces("a caté", [" a", " cat", "", "é"]) == [" a", " cat", "", "é"]
    # leading U+FFFD (after a separator token) and one at the end
    assert word_pieces("\ufffdson", ["", "", "", "son"]) == ["", "", "\ufffd", "son"]
    assert word_pieces("son\ufffd", ["son", "", "", ""]) == ["son", "", "", "\ufffd"]
    # pieces that do not spell the caption: no words rather than wrong ones
    assert word_pieces("a dog", [" a", " cat"]) is None
    assert word_pieces("a cat", [" a", " cat"]) == [" a", " cat"]


def test_token_difference_names_the_tokens_and_why():
    msg = token_difference("a cat\ufffd", [264, 369, 179, 131, 129], [" a", " cat", "", "", ""], [264, 369, 203])
    assert "from token 2 the server has [179 '', 131 '', 129 '']" in msg
    assert "the model wrote [203]" in msg and "U+FFFD" in msg and "--caption" in msg
    msg = token_difference("a cat", [264, 369], [" a", " cat"], [264, 369, 228])
    assert "last 1 tokens are not in the text" in msg
    msg = token_difference("a cat", [264, 369], [" a", " cat"], [264, 36, 9])
    assert "tokenizes differently" in msg and "from token 1" in msg


@pytest.mark.parametrize("n", [3, 20])
def test_token_difference_shows_a_bounded_excerpt(n):
    msg = token_difference("x", list(range(n)), ["p"] * n, list(range(100, 100 + n)))
    assert len(msg) < 1200 and ("more" in msg) == (n > 8)
