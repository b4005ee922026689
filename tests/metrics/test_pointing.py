"""Pointing game, energy share and boxes files (see metrics_helpers)."""

import math

import numpy as np
import pytest

from capshap.metrics import load_boxes, pointing_game, scale_boxes
from metrics_helpers import CAT, CAT_BOX, DOG_BOX, custom_exp


def test_pointing_game_hits_the_square_and_misses_elsewhere(exp):
    pg = pointing_game(exp, [CAT_BOX], token="cat")
    assert pg["hit"] and pg["distance"] == 0
    assert pg["energy_share"] > 0.8 and pg["box_fraction"] == pytest.approx(16 * 16 / 64**2)
    x, y = pg["point"]
    assert CAT[0] <= x <= CAT[1] and CAT[0] <= y <= CAT[1]
    miss = pointing_game(exp, [DOG_BOX], token="cat")
    assert not miss["hit"] and miss["distance"] > 15
    assert miss["energy_share"] < 0.2
    # a generous tolerance turns the miss into a hit
    assert pointing_game(exp, [DOG_BOX], token="cat", tolerance=miss["distance"] + 1)["hit"]
    # dog points at its own square; default token = largest positive attribution (the brighter cat)
    assert pointing_game(exp, [DOG_BOX], token=1)["hit"]
    assert pointing_game(exp, [CAT_BOX])["token"] == "cat"


def test_pointing_game_bad_input(exp):
    with pytest.raises(ValueError, match="box 0"):
        pointing_game(exp, [[1, 2, 3]])
    with pytest.raises(ValueError, match="empty"):
        pointing_game(exp, [[10, 10, 5, 20]])
    with pytest.raises(ValueError, match="not in the caption"):
        pointing_game(exp, [CAT_BOX], token="bird")


def test_pointing_ties_and_energy_share_exact():
    v = np.zeros((64, 64, 2))
    v[0:40, 0:40, 0] = 2.0  # a flat top region: the point is its most central pixel
    v[60:64, 60:64, 0] = 1.0
    v[50:60, 0:10, 0] = -7.0  # negative attribution does not count as energy
    v[..., 1] = -1.0  # no positive attribution at all
    exp = custom_exp(v, ["cat", "dog"])
    pg = pointing_game(exp, [[18, 18, 22, 22]], token="cat", tolerance=0)
    assert pg["hit"] and pg["point"] == [19.5, 19.5]
    assert not pointing_game(exp, [[0, 45, 5, 50]], token="cat", tolerance=0)["hit"]
    total = 2.0 * 1600 + 16
    share = pointing_game(exp, [[0, 0, 20, 40], [56, 56, 64, 64]], token="cat")["energy_share"]
    assert share == pytest.approx((2.0 * 800 + 16) / total)
    assert math.isnan(pointing_game(exp, [[0, 0, 8, 8]], token="dog")["energy_share"])
    assert pointing_game(exp, [[0, 0, 8, 8]])["token"] == "cat"


def test_scale_boxes():
    assert scale_boxes([[10, 20, 30, 40]], (200, 100), (100, 50)) == [[5.0, 10.0, 15.0, 20.0]]
    assert scale_boxes([[0, 0, 100, 50]], (50, 100), (25, 200)) == [[0.0, 0.0, 200.0, 25.0]]
    with pytest.raises(ValueError, match="positive"):
        scale_boxes([[0, 0, 1, 1]], (0, 10), (10, 10))


def test_load_boxes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_boxes(tmp_path / "nope.json")
    p = tmp_path / "bad.json"
    p.write_text('{"a": [[1, 2, 3, 4]],', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON"):
        load_boxes(p)
    p.write_text('[[1, 2, 3, 4]]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*expected an object"):
        load_boxes(p)
    p.write_text('{"ok": [[1, 2, 3, 4]], "cat.jpg": [[1, 2, 3, 4], [5, "x", 7, 8]]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json, entry 'cat\.jpg'.*box 1"):
        load_boxes(p)
    p.write_text('{"cat": [1, 2, 30, 40], "dog": [[0, 0, 5, 5], [1, 1, 2, 2]]}', encoding="utf-8")
    assert load_boxes(p) == {"cat": [[1.0, 2.0, 30.0, 40.0]], "dog": [[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 2.0, 2.0]]}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, None, "15"])
def test_tolerance_must_be_finite_and_not_negative(exp, bad):
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(exp, [CAT_BOX], token="cat", tolerance=bad)
    assert pointing_game(exp, [CAT_BOX], token="cat", tolerance=np.float32(2))["tolerance"] == 2.0


def test_boxes_are_found_by_the_recorded_source_and_scaled_to_the_explained_image():
    from capshap.metrics.pointing import boxes_for, lookup_boxes

    e = custom_exp(np.zeros((64, 64, 2)), ["cat", "dog"])
    e.params.update(source="/photos/2024/pets_01.jpg", original_size=[128, 256])
    table = {"other": [[0, 0, 1, 1]], "pets_01.jpg": [[0, 0, 256, 64]]}
    assert lookup_boxes(table, e) == ("pets_01.jpg", [[0, 0, 256, 64]])
    assert lookup_boxes({"pets_01": [[1, 1, 2, 2]]}, e)[0] == "pets_01"
    assert lookup_boxes({"nothing": [[1, 1, 2, 2]]}, e) is None
    # 256 x 128 original -> 64 x 64 explained: x / 4, y / 2
    assert boxes_for(e, [[0, 0, 256, 64]]) == [[0.0, 0.0, 64.0, 32.0]]
    e.params.pop("original_size")
    assert boxes_for(e, [[0, 0, 256, 64]]) == [[0.0, 0.0, 256.0, 64.0]]  # taken as they are
