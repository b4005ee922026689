"""Grounding shown wherever words are shown: notebook, index.html, the PNG, the terminal, the
run summary; and every view bounded in the number of words it draws."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from known_words import word_scores

from capshap import Explanation, FunctionScorer, explain_image
from capshap.cli.output import Row, grounding_of, print_summary
from capshap.grounding import CONTRADICTED, GROUNDED, PRIOR, Thresholds
from capshap.summary import Summary, summarize, write_summary
from capshap.viz.marks import strongest_grounded
from capshap.viz.plots import MAX_WORDS, plot, save_figure
from capshap.viz.report import MAX_WORDS as REPORT_MAX_WORDS
from capshap.viz.report import Report

H = W = 32
IMG = np.full((H, W, 3), 200, dtype=np.uint8)


_f = word_scores(H, scale=200.0, bird=4.0, dog=6.0)  # 'dog' falls more than 'bird' rises


@pytest.fixture(scope="module")
def exp() -> Explanation:
    return explain_image(IMG, FunctionScorer(_f, ["a", "bird", "dog"], caption="a bird dog"), mask=0,
                         max_evals=64, name="known.jpg")


def _many(T: int, seed: int = 0, side: int = 8) -> Explanation:
    """An explanation with T tokens (built directly: values sum to outputs - base_values);
    every third token has no credit."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(side, side, T)).astype(np.float32) * 1e-3
    values[..., ::3] = 0
    base = rng.normal(size=T)
    outputs = base + values.astype(np.float64).sum(axis=(0, 1))
    return Explanation(values=values, base_values=base, outputs=outputs, tokens=[f"w{t}" for t in range(T)],
                       caption=" ".join(f"w{t}" for t in range(T)), image=np.zeros((side, side, 3), np.uint8),
                       name="many.jpg")


def test_strongest_grounded_beats_a_larger_contradicted_word(exp):
    assert exp.labels() == [PRIOR, GROUNDED, CONTRADICTED]
    assert abs(exp.evidence[2]) > abs(exp.evidence[1])  # 'dog' moves more, but against the image
    assert strongest_grounded(exp) == 1


def test_notebook_marks_every_word_with_its_label_and_the_legend_gives_thresholds(exp):
    frag = exp._repr_html_()
    marks = re.findall(r'<span class="capshap-token" data-grounding="(\w+)" title="([^"]*)"', frag)
    assert [m[0] for m in marks] == exp.labels()
    assert "prior -1, evidence +4" in marks[1][1]  # 'bird': prior and evidence in the tooltip
    assert "evidence &gt; +0.5" in frag and "evidence &lt; -0.5" in frag
    exp.grounding_thresholds = Thresholds(5.0, -7.0)
    try:
        again = re.findall(r'data-grounding="(\w+)"', exp._repr_html_())
        assert again == [PRIOR] * 3 and "evidence &gt; +5" in exp._repr_html_()
    finally:
        exp.grounding_thresholds = Thresholds()


def test_report_marks_words_and_starts_on_the_strongest_grounded_word(exp):
    rep = Report()
    rep.add(exp)
    page = rep.html()
    got = re.findall(r'<button class="tok" type="button" data-token="(\d)" data-zero="(\d)" data-grounding="(\w+)"', page)
    assert [(int(t), g) for t, _, g in got] == list(enumerate(exp.labels()))
    assert [z for _, z, _ in got] == ["1", "0", "0"]  # 'a' has no region credit
    assert 'data-strongest="1"' in page


def test_report_draws_at_most_max_words_and_lists_the_rest():
    e = _many(300)
    rep = Report()
    rep.add(e)
    page = rep.html()
    buttons = [int(t) for t in re.findall(r'<button class="tok" type="button" data-token="(\d+)"', page)]
    overlays = re.findall(r'<img class="overlay"', page)
    assert len(buttons) == REPORT_MAX_WORDS and len(overlays) <= REPORT_MAX_WORDS
    ev = np.abs(e.evidence)
    live = [t for t in range(300) if t % 3]
    assert set(buttons) == set(sorted(live, key=lambda t: -ev[t])[:REPORT_MAX_WORDS])  # the strongest
    assert f"{300 - REPORT_MAX_WORDS} more words" in page
    with pytest.raises(ValueError, match="max_words must be a positive integer"):
        Report(max_words=0)


def test_notebook_view_of_many_words_shows_the_strongest_and_names_the_rest():
    e = _many(300)
    frag = e._repr_html_()
    cells = [int(t[1:]) for t in re.findall(r'<span class="capshap-token"[^>]*>(w\d+)<br>', frag)]
    ev = np.abs(e.evidence)
    live = [t for t in range(300) if t % 3]
    assert set(cells) == set(sorted(live, key=lambda t: -ev[t])[:REPORT_MAX_WORDS])
    assert f"{300 - REPORT_MAX_WORDS} more words" in frag


def test_png_draws_words_with_credit_and_lists_the_others(exp, tmp_path):
    fig = plot(exp)
    info = fig.capshap_info
    assert info["tokens"] == ["bird", "dog"] and info["panels"] == 3 and info["left_out"] == [0]
    texts = [t.get_text() for t in fig.texts]
    assert any(t.startswith("no credit: a") for t in texts)
    subtitles = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("grounded" in t and "+4" in t for t in subtitles)
    assert any("contradicted" in t and "-6" in t for t in subtitles)
    every = plot(exp, all_words=True)
    assert every.capshap_info["panels"] == 4 and every.capshap_info["left_out"] == []
    save_figure(fig, tmp_path / "k.png")
    from PIL import Image

    with Image.open(tmp_path / "k.png") as im:
        assert im.text["capshap:panels"] == "3"


def test_png_of_thousands_of_tokens_draws_at_most_max_words(tmp_path):
    e = _many(4000, side=4)
    fig = plot(e)
    info = fig.capshap_info
    assert info["panels"] == 1 + MAX_WORDS
    assert len(info["left_out"]) == 4000 - MAX_WORDS
    ev = np.abs(e.evidence)
    live = [t for t in range(4000) if t % 3]
    assert set(info["tokens"]) == {f"w{t}" for t in sorted(live, key=lambda t: -ev[t])[:MAX_WORDS]}
    (rest,) = [t.get_text() for t in fig.texts if "no credit" in t.get_text()]
    assert "beyond the 24 strongest" in rest and "(+" in rest
    assert plot(e, max_words=5).capshap_info["panels"] == 6
    with pytest.raises(ValueError, match="max_words must be a positive integer or None"):
        plot(e, max_words=0)


def test_capshap_show_on_4000_tokens_writes_a_bounded_png(tmp_path, capsys):
    from PIL import Image

    from capshap.cli import main

    e = _many(4000, side=4)
    e.save(tmp_path / "many")
    assert main(["show", str(tmp_path / "many.npz"), "--out", str(tmp_path / "o"), "-q"]) == 0
    with Image.open(tmp_path / "o" / "many.png") as im:
        assert im.text["capshap:panels"] == str(1 + MAX_WORDS)


@pytest.mark.parametrize("vmax_scale", [1e-4, 1e6, 1.0])
def test_colorbar_puts_the_power_of_ten_in_its_label_not_on_it(exp, vmax_scale):
    from dataclasses import replace

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    small = replace(exp, values=(exp.values * vmax_scale).astype(np.float32))
    fig = plot(small)
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    cax = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None][0]
    assert cax.xaxis.get_offset_text().get_text() == ""  # nothing to overlap the label
    label = cax.xaxis.label.get_text()
    vmax = fig.capshap_info["vmax"]
    power = 0 if 1e-2 <= vmax < 1e3 else int(np.floor(np.log10(vmax)))
    sup = str(power).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    assert (f"(×10{sup})" in label) if power else ("×" not in label)
    ticks = [(t.get_loc(), t.label1.get_text()) for t in cax.xaxis.get_major_ticks() if t.label1.get_text()]
    assert ticks
    for loc, txt in ticks:  # tick labels are the values in units of 10**power
        assert float(txt.replace("−", "-")) == pytest.approx(loc / 10.0**power, rel=1e-6, abs=1e-9)
    renderer = fig.canvas.get_renderer()
    lab_box = cax.xaxis.label.get_window_extent(renderer)
    for t in cax.xaxis.get_ticklabels():
        if t.get_text():
            assert not lab_box.overlaps(t.get_window_extent(renderer))


def test_terminal_summary_names_words_by_label(exp, capsys, tmp_path):
    rows = [Row("known.jpg", caption=exp.caption, seconds=1.0, evals=exp.n_evals, grounding=grounding_of(exp)),
            Row("b.jpg", caption="x", error="boom")]
    print_summary(rows, tmp_path, None, 2.0)
    out = capsys.readouterr().out
    assert "  contradicted: dog; prior: a; grounded: bird" in out
    assert "words: 1 grounded, 1 prior, 1 contradicted" in out


def test_terminal_summary_escapes_and_cuts_hostile_words(capsys, tmp_path):
    g = {CONTRADICTED: ["\x1b[2Jx"] * 20, PRIOR: [], GROUNDED: ["ok"]}
    print_summary([Row("a", caption="c", grounding=g)], tmp_path, None, 1.0)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jx" in out and "+12" in out


def test_summary_counts_labels_per_word_and_puts_candidates_first(exp, tmp_path):
    scorer2 = FunctionScorer(lambda b: _f(b)[:, [1, 0]], ["bird", "a"], caption="bird a")
    e2 = explain_image(IMG, scorer2, mask=0, max_evals=32, name="two.jpg")
    acc = Summary()
    acc.add(exp, link="known.png")
    acc.add(e2, link="../escape.png")  # not inside the folder: no link
    s = acc.to_dict()
    by = {w["word"]: w for w in s["words"]}
    assert [w["word"] for w in s["words"]] == ["dog", "bird", "a"]  # contradicted, grounded; 'a' has no credit
    assert by["dog"]["contradicted"] == 1 and by["dog"]["contradicted_in"] == ["known.jpg"]
    assert by["bird"]["grounded"] == 2 and by["bird"]["grounded_in"] == ["known.jpg", "two.jpg"]
    assert by["a"]["prior"] == 2 and by["a"]["credit"] is False
    assert by["a"]["mean_prior"] == pytest.approx(2.0) and by["bird"]["mean_prior"] == pytest.approx(-1.0)
    assert s["image_links"] == {"known.jpg": "./known.png"}
    # thresholds for the whole run
    strict = summarize([exp, e2], thresholds=Thresholds(10.0, -10.0))
    assert all(w["prior"] == w["images"] for w in strict["words"])
    j, h = write_summary(s, tmp_path)
    assert json.loads(j.read_text())["words"][0]["word"] == "dog"
    page = h.read_text()
    assert '<a href="./index.html">' in page and '<a href="./known.png">known.jpg</a>' in page
    assert "two.jpg" in page and "escape" not in page
    assert "mean share inside" not in page  # no regions: those columns are left out
    assert re.search(r"1 word no region changes in any image \(left out of the table\): a</p>", page)


def test_summary_without_grounding_keeps_its_old_columns_and_order(tmp_path):
    from types import SimpleNamespace

    v = np.ones((4, 4, 2))
    e = SimpleNamespace(name="x.jpg", tokens=["b", "a"], values=v, image=np.zeros((4, 4, 3), np.uint8), params={})
    s = summarize([e])
    assert [w["word"] for w in s["words"]] == ["a", "b"] and s["words"][0]["grounded"] == 0
    body = write_summary(s, tmp_path, index=None)[1].read_text().split("<body>", 1)[1]
    assert "grounded" not in body and "index.html" not in body and "<th>images</th>" in body
