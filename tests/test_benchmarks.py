"""Every script in benchmarks/ runs at a tiny size and exits 0, so the benchmarks cannot rot.

Each row of :data:`ROWS` is one script's tiny command line (a few evaluations, one small
image). A script in benchmarks/ without a row fails :func:`test_every_script_has_a_row`;
modules that are not scripts are listed in :data:`HELPERS`. The scripts run as
subprocesses, two at a time (the rows are started together when the first one is
needed), each in its own process group that is killed after :data:`TIMEOUT` seconds,
offline: Hugging Face offline flags, and a proxy on a closed local port for anything that
is not 127.0.0.1, so a script that reaches for the network fails instead of hanging.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TIMEOUT = 300  # seconds per script; the rows take 1-20 s each on a quiet 2-core machine
PARALLEL = 2

#: script -> its tiny command line (arguments after the script's path)
ROWS: dict[str, list[str]] = {
    "adaptive.py": ["--tiny"],
    "bad_inputs.py": [],
    "bad_runs.py": ["-k", "tree hexagons"],
    "crop_inpaint.py": ["--photos", "1", "--max-side", "64", "--coalitions", "10", "--margins", "0", "8"],
    "engine.py": ["--sizes", "32x32", "--evals", "20", "--masks", "blur(3,3)"],
    "openai_server.py": ["--images", "1", "--evals", "8", "--batch", "8"],
    "overlap.py": ["--photos", "1", "--max-side", "64", "--max-evals", "8", "--batch-size", "8"],
    "planted_object.py": ["--fills", "grey", "--max-evals", "20"],
    # 240 px: above the captioner's 224, so "auto" renders smaller than "full"
    "render_size.py": ["--photos", "1", "--max-side", "240", "--max-evals", "8", "--batch-size", "8", "--steps", "3",
                       "--random-orders", "1", "--mask", "blur(5,5)"],
    "throughput.py": ["--images", "2", "--max-evals", "8", "--max-side", "64", "--runners", "serial,in_flight",
                      "--captioners", "builtin,azure", "--latency", "0"],
    "trees.py": ["--axis-sizes", "32x32,32x32c", "--segment-size", "64x48", "--segments", "8", "--repeats", "1"],
    "vlm_families.py": ["--families", "blip,llava", "--evals", "8", "--batch", "4", "--size", "32"],
    "vs_shap.py": ["--images", "examples/2.jpg", "--max-side", "48", "--max-evals", "8", "--batch-size", "8",
                   "--lm", "tiny"],
}

#: modules in benchmarks/ that are imported by the scripts, not run
HELPERS = {
    "photos.py": "the eight sample photos",
    "sized_models.py": "random models at BLIP-base and 2B sizes",
}

#: scripts that land from other branches at the same time: once one is in benchmarks/,
#: its row moves into ROWS (check the command line) and out of here
PENDING: dict[str, list[str]] = {}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    # offline: anything but the local test servers goes to a closed port and fails at once
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[k] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _run(script: str) -> tuple[int | str, str, str]:
    """(exit code or "timeout", stdout, stderr) of one row, its process group killed on timeout."""
    cmd = [sys.executable, str(BENCH / script), *ROWS[script]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return "timeout", out, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def launched(request) -> dict[str, Future]:
    """The selected rows, started together on :data:`PARALLEL` workers."""
    me = sys.modules[__name__]
    wanted = [item.callspec.params["script"] for item in request.session.items
              if getattr(item, "module", None) is me and "script" in getattr(getattr(item, "callspec", None),
                                                                             "params", {})]
    pool = ThreadPoolExecutor(max_workers=PARALLEL)
    futures = {s: pool.submit(_run, s) for s in dict.fromkeys(wanted)}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_every_script_has_a_row():
    present = {p.name for p in BENCH.glob("*.py")}
    missing = sorted(present - set(ROWS) - set(HELPERS) - set(PENDING))
    assert not missing, f"benchmarks without a row in tests/test_benchmarks.py ROWS: {missing}"
    stale = sorted((set(ROWS) | set(HELPERS)) - present)
    assert not stale, f"rows for scripts that are not in benchmarks/: {stale}"
    assert not set(ROWS) & set(HELPERS)


def test_pending_rows_have_not_landed():
    landed = sorted(s for s in PENDING if (BENCH / s).exists())
    assert not landed, f"{landed} landed: move their rows from PENDING into ROWS and check the command lines"


def test_helpers_are_not_scripts():
    for name in HELPERS:
        assert "__main__" not in (BENCH / name).read_text(encoding="utf-8"), f"{name} runs as a script: give it a row"


@pytest.mark.parametrize("script", sorted(ROWS))
def test_benchmark_runs_at_tiny_size(script, launched):
    code, out, err = launched[script].result(timeout=TIMEOUT + 60)
    tail = (err.strip() or out.strip())[-2000:]
    assert code == 0, f"{script} {shlex.join(ROWS[script])}: exit {code}\n{tail}"
    assert out.strip(), f"{script} printed nothing"
    assert "Traceback (most recent call last)" not in err, f"{script}: a traceback\n{tail}"


def test_gpu_suite_names_real_scripts_and_flags():
    """benchmarks/gpu_suite.sh (run on a GPU machine) is valid bash, and every script and
    option it passes exists (read from the script's --help)."""
    suite = BENCH / "gpu_suite.sh"
    subprocess.run(["bash", "-n", str(suite)], check=True, timeout=30)
    calls = re.findall(r"^bench \S+ benchmarks/(\S+\.py)(.*)$", suite.read_text(encoding="utf-8"), re.M)
    assert {s for s, _ in calls} == {"vs_shap.py", "throughput.py", "vlm_families.py"}
    helps: dict[str, str] = {}
    for script, rest in calls:
        if script not in helps:
            res = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=ROOT, env=_env(),
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr[-1000:]
            helps[script] = res.stdout
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest):
            assert flag in helps[script], f"gpu_suite.sh passes {flag} to {script}, which does not take it"
