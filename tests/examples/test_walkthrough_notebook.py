"""examples/walkthrough.ipynb runs top to bottom, and its HTML shows the inline explanation.

The notebook is stored with its outputs made at the SHAP notebook's settings (the examples at
full size, 300 evaluations). The tests execute it with nbclient in a fresh kernel that imports
this checkout's capshap, with its fast parameter (``CAPSHAP_WALKTHROUGH_FAST=1``: 16
evaluations on 112-px images); its rich outputs are then put on one page and opened in
headless Chromium, which must decode the explanation's inline pictures, the plots and the
report's frame.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient and ipykernel (pip install nbclient ipykernel)")
pytest.importorskip("ipykernel", reason="needs ipykernel to run the notebook (pip install ipykernel)")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        # the kernel imports this checkout's capshap and draws without a display
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        mp.setenv("CAPSHAP_WALKTHROUGH_FAST", "1")  # seconds, not minutes
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    return nb


def _outputs(nb, source_start: str) -> list:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert len(cells) == 1, source_start
    return cells[0].outputs


def _rich(outputs, mime: str) -> list:
    return [o["data"][mime] for o in outputs if "data" in o and mime in o["data"]]


def _stderr(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")


def test_committed_notebook_shows_outputs_made_at_the_real_settings():
    """What a reader sees first: every cell's output, at 300 evaluations on the 224-px examples."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code[:-1] if not c.source.startswith("(fixed,)"))
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # in order, top to bottom
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "IProgress" not in _stderr(nb) and "TqdmWarning" not in _stderr(nb)
    printed = "".join(o.get("text", "") for o in _outputs(nb, "captioner = capshap.BuiltinCaptioner()"))
    assert "resized" not in printed and printed.count("original 224x224") == 4
    frag = _rich(_outputs(nb, "exp = exps[1]"), "text/html")[0]
    assert "explained at 224x224 px" in frag and "300 evaluations" in frag
    from PIL import Image

    photo = re.search(r'class="capshap-photo"[^>]*src="data:image/png;base64,([^"]+)"', frag).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(photo))).size == (224, 224)


def test_executed_notebook_has_no_progress_warnings(executed):
    # no ipywidgets in the test kernel: progress is one updated line, not tqdm's warning wall
    assert "IProgress" not in _stderr(executed) and "TqdmWarning" not in _stderr(executed)


def test_walkthrough_runs_and_shows_every_step(executed):
    from PIL import Image

    nb = executed
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in _outputs(nb, "captioner = capshap.BuiltinCaptioner()"))
    for name in ("1.jpg", "2.jpg", "3.jpg", "4.jpg"):
        assert re.search(rf"{re.escape(name)}: original 224x224: 'a photo of an? [^']+'", printed), printed
    assert printed.count("resized  112x112: 'a photo of") == 4
    frag = _rich(_outputs(nb, "exp = exps[1]"), "text/html")
    assert len(frag) == 1 and 'class="capshap-explanation"' in frag[0]
    masks = "".join(o.get("text", "") for o in _outputs(nb, "by_mask = "))
    assert [m for m in ("inpaint_telea", "inpaint_ns", "blur(128,128)") if f"{m}: a " in masks] == [
        "inpaint_telea", "inpaint_ns", "blur(128,128)"]
    for start in ("exp.plot()", "exp.show()", "by_mask = ", "capshap.plot_grid(", "try:"):
        pngs = _rich(_outputs(nb, start), "image/png")
        assert len(pngs) == 1, start
        w, h = Image.open(io.BytesIO(base64.b64decode(pngs[0]))).size
        assert w > 100 and h > 100, start
    assert "fixed" in _outputs(nb, "(fixed,) = ")[0].get("text", "") or _rich(_outputs(nb, "(fixed,) = "), "text/html")
    report = _rich(_outputs(nb, "capshap.report("), "text/html")
    assert len(report) == 1 and report[0].startswith("<iframe")


def _page(nb) -> str:
    """The executed notebook's outputs as one HTML page, as a notebook front end shows them."""
    parts = ['<!doctype html><html><head><meta charset="utf-8"><title>walkthrough</title></head><body>']
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        parts.append(f'<section class="cell" id="cell-{k}"><pre>{html.escape(cell.source)}</pre>')
        for o in cell.outputs:
            data = o.get("data", {})
            if "text/html" in data:
                parts.append(f'<div class="out html">{data["text/html"]}</div>')
            elif "image/png" in data:
                parts.append(f'<div class="out png"><img src="data:image/png;base64,{data["image/png"].strip()}"></div>')
            elif o.output_type == "stream":
                parts.append(f'<pre class="out stream">{html.escape(o.text)}</pre>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def test_executed_notebook_displays_in_chromium(executed, chromium_page, tmp_path):
    page_file = tmp_path / "walkthrough.html"
    page_file.write_text(_page(executed), encoding="utf-8")
    page = chromium_page.page
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    # the explanation's inline photo and heatmap decode to real pictures (twice: exp and fixed)
    imgs = page.eval_on_selector_all(
        ".capshap-explanation img", "els => els.map(e => [e.className, e.complete, e.naturalWidth, e.naturalHeight])")
    assert [c for c, *_ in imgs] == ["capshap-photo", "capshap-heatmap"] * 2
    assert all(done and w == 112 and h == 112 for _, done, w, h in imgs), imgs
    assert page.inner_text(".capshap-caption") == executed_caption(executed)
    # every plot decodes
    sizes = page.eval_on_selector_all(".out.png img", "els => els.map(e => e.naturalWidth * e.naturalHeight)")
    assert len(sizes) == 5 and min(sizes) > 0
    # the report renders inside its sandboxed frame, one item per image, its pictures decoded
    frame = page.frame_locator("iframe.capshap-report")
    frame.locator(".item").first.wait_for()
    assert frame.locator(".item").count() == 4
    photos = frame.locator(".photo").evaluate_all("els => els.map(e => e.naturalWidth)")
    assert photos == [112] * 4
    assert chromium_page.dialogs == [] and chromium_page.errors == []


def executed_caption(nb) -> str:
    frag = _rich(_outputs(nb, "exp = exps[1]"), "text/html")[0]
    return html.unescape(re.search(r'<q class="capshap-caption">(.*?)</q>', frag).group(1))
