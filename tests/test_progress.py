"""Progress in a notebook without ipywidgets: one line updated in place, no TqdmWarning."""

import warnings

import pytest

import capshap.progress as progress
from capshap.progress import Bars, LineBars


def test_line_bars_draw_one_line_from_the_open_counters():
    shown = []
    line = LineBars(show=shown.append)
    run = line(total=2, desc="images", unit="img")
    img = line(total=300, desc="[1/2] 1.jpg", unit="eval")
    img.set_postfix_str("a photo of a jean")
    img.update(50)
    assert shown[-1] == "images: 0/2 img · [1/2] 1.jpg: 50/300 eval (a photo of a jean)"
    img.close()
    run.update(1)
    assert shown[-1] == "images: 1/2 img"
    n = len(shown)
    run.refresh()  # nothing changed: nothing is redrawn
    assert len(shown) == n


def test_notebook_without_widgets_falls_back_to_one_updating_line(monkeypatch):
    shown = []
    monkeypatch.setattr(progress, "has_widgets", lambda: False)
    monkeypatch.setattr(progress, "_display_line", lambda: shown.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TqdmWarning would fail the test
        bars = Bars(2, enabled=True, notebook=True)
        assert isinstance(bars._tqdm, LineBars)
        bars.start_image("[1/2] 1.jpg", 300)
        bars.status("captioning")
        bars.advance(100)
        assert shown[-1] == "images: 0/2 img · [1/2] 1.jpg: 100/300 eval (captioning)"
        bars.image_done()
        bars.close()
    assert shown[-1] == "images: 1/2 img"
    assert all("\n" not in s and "\r" not in s for s in shown)


def test_notebook_with_widgets_keeps_tqdm(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress, "has_widgets", lambda: True)
    bars = Bars(None, enabled=False, notebook=True)
    assert bars._tqdm is None  # disabled: nothing at all
    bars = Bars(1, enabled=True, notebook=True)
    try:
        assert not isinstance(bars._tqdm, LineBars)
    finally:
        bars.close()


def test_the_default_display_replaces_its_line(monkeypatch):
    """The default show() updates one notebook display by its id (IPython's display_id)."""
    display_mod = pytest.importorskip("IPython.display")
    calls = []

    class Handle:
        def update(self, obj, **kw):
            calls.append(("update", obj, kw))

    def fake_display(obj, **kw):
        calls.append(("display", obj, kw))
        return Handle()

    monkeypatch.setattr(display_mod, "display", fake_display)
    line = LineBars()
    c = line(total=3, desc="images", unit="img")
    c.update(1)
    assert [k for k, *_ in calls] == ["display", "update", "update"]
    assert calls[0][2]["display_id"] is True
    assert calls[-1][1] == {"text/plain": "images: 1/3 img"} and calls[-1][2] == {"raw": True}
