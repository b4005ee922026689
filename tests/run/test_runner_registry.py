"""The runner registry: the README's example runner runs as written, and a registered
runner is one name away from the API and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import capshap
from capshap.cli import main
from capshap.runners import RUNNERS

ROOT = Path(__file__).resolve().parents[2]


def _readme_runner_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if b.startswith("# README: custom runner")]
    assert len(found) == 1, "README.md must hold the custom runner example once"
    return found[0]


@pytest.fixture
def registered():
    """A clean registry around the test (another test may have run the README already)."""

    def clear() -> None:
        if "largest-first" in RUNNERS:
            RUNNERS.unregister("largest-first")

    clear()
    yield
    clear()


def test_the_readme_runner_runs_and_orders_images_largest_first(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = _readme_runner_block()
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    exps = scope["exps"]
    assert [e.name for e in exps] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]  # input order kept
    assert all(e.settings.runner == "largest-first" for e in exps)
    # the runner's own order reaches the outcomes: largest image first
    from capshap.job import Plan, Prepared, inputs_from

    s = capshap.Settings(max_evals=12, runner="largest-first")
    items = list(inputs_from("examples/", s))
    got = [o.name for o in RUNNERS.check("largest-first").factory(Prepared(Plan.of(s)), items)]
    sizes = {it.name: it.array.size for it in items}
    assert got == sorted(sizes, key=lambda n: -sizes[n])
    # and from the command line, by name, recorded in the manifest
    out = tmp_path / "out"
    assert main(["explain", "examples/1.jpg", "--runner", "largest-first", "--max-evals", "12", "--out", str(out),
                 "-q"]) == 0
    assert '"runner": "largest-first"' in (out / "manifest.json").read_text()
