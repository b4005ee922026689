"""Bad inputs and faults through the whole command, as a user (or an attacker) meets them:
one table row per case with what happened (exit code, clear message or correct result,
traceback, data lost, payload raw, unbounded).

    python benchmarks/bad_runs.py            # the table (a few minutes on 2 cores)
    python benchmarks/bad_runs.py -v         # also each case's message
    python benchmarks/bad_runs.py -k ray     # only the cases whose category or name holds "ray"

Each case runs ``capshap`` in subprocesses (each bounded to 60 s) on files made here,
next to two good images, and checks: the exit code; that stderr has no Python traceback;
that the good images' outputs exist and load, and that no input or user file (in the run
folder or outside it) changed (nothing lost); that no raw control character, script or key
reached the terminal, a page or any file (keys: also Ray's whole temp folder). Categories:
files, names, output, options, captions, keys (the inputs); runfolder, manifest, lock,
pairs, show/evaluate (the run folder owns its names and trusts nothing it finds); ray;
servers (a local OpenAI-compatible server on 127.0.0.1 that misbehaves). The complement
of benchmarks/bad_inputs.py, which feeds the loader and Explanation.load directly.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAST = ["--max-evals", "8", "--batch-size", "8", "--mask", "0"]

# a captioner registered from Python whose caption is hostile (a remote service could send it)
HOSTILE = r'''
import sys
import capshap
from capshap.cli import main
text = sys.argv[1]
capshap.CAPTIONERS.register("evil", lambda arg, options, context: capshap.FunctionCaptioner(lambda im: text),
                            help="evil, a hostile caption")
sys.exit(main(sys.argv[2:]))
'''


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"


LIMIT_S = 60  # every case must finish within this on a 2-core machine


def run(args: list[str], cwd: Path, timeout: float = LIMIT_S, script: str | None = None, extra=(),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", script, *extra, *args] if script else [sys.executable, "-m", "capshap.cli", *args]
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **(env or {}))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


def good_pair(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "2.jpg", folder / "bird.jpg")
    shutil.copy(EXAMPLES / "3.jpg", folder / "horses.jpg")


def outputs_ok(out: Path, stems: list[str]) -> bool:
    from capshap.explanation import Explanation

    try:
        return all(Explanation.load(out / s).values.size > 0 and (out / f"{s}.png").exists() for s in stems)
    except Exception:
        return False


def cases(tmp: Path):
    """(category, name, prepare(tmp) -> (args, cwd, expected stems, kwargs))."""

    def make(name, files=None, extra=(), stems=("bird", "horses"), out=None, script=None, script_args=()):
        def prep():
            src = tmp / name / "in"
            good_pair(src)
            for fname, content in (files or {}).items():
                p = src / fname
                p.parent.mkdir(parents=True, exist_ok=True)
                if callable(content):
                    content(p)
                else:
                    p.write_bytes(content)
            o = out(tmp / name) if out else tmp / name / "out"
            return [
                "explain", str(src), "--out", str(o), *FAST, *extra], tmp / name, list(stems), o, src, script, script_args
        return prep

    def fifo(p):
        os.mkfifo(p)

    def devzero(p):
        p.symlink_to("/dev/zero")

    def loop(p):
        p.mkdir()
        (p / "up").symlink_to("..")

    def bomb(p):
        from PIL import Image

        Image.new("1", (13000, 13000)).save(p)

    yield "files", "corrupt jpeg", make("corrupt", {"broken.jpg": b"\xff\xd8\xff\xe0 not really" * 10})
    yield "files", "text named .jpg", make("text", {"notes.jpg": b"hello"})
    yield "files", "empty file", make("empty", {"zero.png": b""})
    yield "files", "FIFO named .jpg", make("fifo", {"pipe.jpg": fifo})
    yield "files", "link to /dev/zero", make("devzero", {"zero.jpg": devzero})
    yield "files", "symlink loop folder", make("loop", {"sub": loop}, extra=("-r",))
    yield "files", "13000x13000 PNG (657 KB)", make("bomb", {"bomb.png": bomb})
    yield "files", "1x1 image", make("tiny", {"dot.png": lambda p: __import__("PIL.Image").Image.new("RGB", (1, 1)).save(p)})
    yield "names", "dotted names cat.v1/cat.v2", make(
        "dotted", {"cat.v1.jpg": (EXAMPLES / "1.jpg").read_bytes(), "cat.v2.jpg": (EXAMPLES / "4.jpg").read_bytes()},
        stems=("bird", "horses", "cat.v1", "cat.v2"))
    yield "names", "252-character name", make("long", {("x" * 248) + ".jpg": (EXAMPLES / "1.jpg").read_bytes()})
    yield "names", "name with escape codes", make("escname", {"\x1b]0;pwned\x07\x1b[2J.jpg": (EXAMPLES / "1.jpg").read_bytes()})
    yield "names", "javascript: name", make("jsname", {"javascript:alert(1).jpg": (EXAMPLES / "1.jpg").read_bytes()})
    yield "output", "--out is the input folder", make("samedir", out=lambda d: d / "in")
    yield "output", "--out inside a file", make("outfile", out=lambda d: (d.mkdir(parents=True, exist_ok=True),
                                                                          (d / "f").write_text("x"), d / "f" / "o")[2])
    yield "options", "--max-evals 1", make("evals1", extra=("--max-evals", "1"))
    yield "options", "--mask gauss(3)", make("gauss", extra=("--mask", "gauss(3)"))
    yield "options", "--tree hexagons", make("hex", extra=("--tree", "hexagons"))
    yield "options", "--captioner nope", make("nope", extra=("--captioner", "nope"))
    yield "options", "--captioner-opt for the wrong kind", make("opt", extra=("--captioner-opt", "timeout=3"))
    yield "options", "--device cuda without a GPU", make("cuda", extra=("--device", "cuda", "--captioner", "hf:x"))
    yield "captions", "mathtext caption $\\undefinedcmd{x}$", make(
        "math", extra=("--captioner", "evil", "--scorer", "presence"), script=HOSTILE, script_args=("$\\undefinedcmd{x}$",))
    yield "captions", "terminal escapes in caption", make(
        "esc", extra=("--captioner", "evil", "--scorer", "presence"), script=HOSTILE,
        script_args=("a \x1b]0;pwned\x07\x1b[2J cat",))
    yield "captions", "<script> caption", make(
        "script", extra=("--captioner", "evil", "--scorer", "presence"), script=HOSTILE,
        script_args=("<script>alert(1)</script> a cat",))
    yield "keys", "Azure key with a newline", make("key", extra=("--captioner", "azure"))


# ------------------------------------------------------------------ generic cases (run folder, Ray, servers)

KEY = "sk-bench-DO-NOT-LEAK-7f3a9c21b4"
SMALL = [*FAST, "--max-side", "96"]  # the run folder's cases: small images, so each case stays short
EVAL = ["--steps", "4", "--random-orders", "1", "-q"]
RAY_TEMP: list[Path] = []  # Ray's temp folders of this run (removed at the end)
WRAP = r'''
import os, sys, errno
from capshap.cli import main
mode = sys.argv[1]
if mode == "enospc-lock":  # the disk fills up exactly when the lock is written
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    os.pwrite = full
elif mode.startswith("ray:"):  # a local Ray bound to 127.0.0.1 with its own temp folder
    import ray
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir=mode[4:], logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
code = main(sys.argv[2:])
if mode.startswith("ray:"):
    import ray
    ray.shutdown()
sys.exit(code)
'''


@dataclass
class Step:
    """One command (or, as ``call``, one change to the files between commands)."""

    argv: list[str] = field(default_factory=list)
    script: str | None = None
    extra: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    call: Callable[[], None] | None = None


@dataclass
class Case:
    category: str
    name: str
    steps: list[Step]
    expect: set[int]  # exit codes of the last command that count as a clear, correct answer
    protect: list[Path] = field(default_factory=list)  # files that must stay byte for byte
    check: Callable[[], str | None] | None = None  # a wrong or lost result, in words (None: fine)
    secrets: list[str] = field(default_factory=list)  # must reach no output, file or log
    scan: list[Path] = field(default_factory=list)  # folders grepped for the secrets
    html: Path | None = None


def key_forms(k: str) -> list[str]:
    return [k, k.upper(), k.lower(), k[::-1], k[:-1], k[1:], k[:6] + k[7:]]


class Server:
    """A misbehaving OpenAI-compatible server on 127.0.0.1 (bounded: stopped after its case)."""

    def __init__(self, mode: str):
        self.mode = mode
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._answer()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(n, 50_000_000))
                self._answer()

            def _answer(self):
                if outer.mode == "echo-key":
                    auth = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    msg = " | ".join(key_forms(auth))
                    self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {msg}"}}).encode())
                elif outer.mode == "garbage":
                    self._send(200, b"\x1b]0;pwned\x07 {not json")
                elif outer.mode == "hangup":
                    self.close_connection = True
                    self.connection.shutdown(2)
                else:  # a 100k-character caption
                    cap = ("word " * 20_000).strip()
                    self._send(200, json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                             "message": {"role": "assistant", "content": cap}}]}).encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def new_cases(tmp: Path, servers: list[Server]):
    """Cases of the run folder, the manifest, the lock, pairs, show/evaluate, Ray and servers."""

    def folder(name: str) -> tuple[Path, Path, Path]:
        d = tmp / re.sub(r"[^A-Za-z0-9]+", "-", name)[:40]
        src = d / "in"
        good_pair(src)
        return d, src, d / "out"

    def explain(src: Path, out: Path, *more: str) -> Step:
        return Step(["explain", str(src), "--out", str(out), *SMALL, *more])

    def loads(out: Path, stems=("bird", "horses")) -> Callable[[], str | None]:
        return lambda: None if outputs_ok(out, list(stems)) else "lost: the good images' outputs are missing or do not load"

    def manifest(out: Path) -> dict:
        return json.loads((out / "manifest.json").read_text())

    # ---- the run folder owns its names
    d, src, out = folder("foreign")
    out.mkdir()
    user = [out / "s0.png", out / "s1.json", out / "index.html", out / "summary.json", out / ".tmp-a.json"]
    for u in user:
        u.write_bytes(b"the user's own file " + u.name.encode())
    shutil.copy(EXAMPLES / "1.jpg", src / "s0.jpg")
    yield Case("runfolder", "--out holds the user's files, no manifest", [explain(src, out)], {2}, protect=user)

    d, src, out = folder("adopt")
    out.mkdir()
    user = [out / "bird.png", out / "notes.json", out / ".tmp-mine.json", out / ".capshap-tmp-mine"]
    for u in user:
        u.write_bytes(b"the user's own file")
    yield Case("runfolder", "the same with --adopt (names avoided)", [explain(src, out, "--adopt")], {0}, protect=user,
               check=lambda out=out: None if all(Path(out / r["stem"]).with_suffix(".npz").exists()
                                                 for r in manifest(out)["images"].values()) else "outputs missing")

    d, src, out = folder("adopt-index")
    out.mkdir()
    (out / "index.html").write_text("<p>mine</p>")
    yield Case("runfolder", "--adopt with the user's index.html", [explain(src, out, "--adopt")], {2},
               protect=[out / "index.html"])

    d, src, out = folder("metrics-name")
    shutil.copy(EXAMPLES / "1.jpg", src / "metrics.png")
    shutil.copy(EXAMPLES / "4.jpg", src / "summary.jpg")

    def all_load(out=out) -> str | None:
        from capshap.explanation import Explanation

        try:
            for r in manifest(out)["images"].values():
                Explanation.load(out / r["stem"])
        except Exception as e:  # noqa: BLE001
            return f"lost: an explanation no longer loads: {e}"
        return None

    yield Case("runfolder", "inputs named metrics.png, summary.jpg, then evaluate",
               [explain(src, out), Step(["evaluate", str(out), "--trust-run", *EVAL])], {0, 1}, check=all_load)

    d, src, out = folder("grid-names")
    shutil.copy(EXAMPLES / "1.jpg", src / "x.png")
    shutil.copy(EXAMPLES / "4.jpg", src / "x_grid.jpg")

    def unique(out=out) -> str | None:
        files = [f.lower() for r in manifest(out)["images"].values() for f in r["files"]]
        return all_load(out) or (None if len(files) == len(set(files)) else "two images wrote one file")

    yield Case("runfolder", "x.png and x_grid.jpg with --grid 4", [explain(src, out, "--grid", "4")], {0}, check=unique)

    d, src, out = folder("overwrite-summary")
    yield Case("runfolder", "--overwrite of a one-image run drops the old summary",
               [explain(src, out), Step(call=lambda src=src: (src / "horses.jpg").unlink()),
                explain(src, out, "--overwrite", "--max-evals", "12")], {0},
               check=lambda out=out: "the previous run's summary.json is still there"
               if (out / "summary.json").exists() else None)

    # ---- the manifest
    def forged(name: str, edit: Callable[[dict], None], extra_protect=()) -> Case:
        d, src, out = folder("mf-" + name)

        def change(out=out) -> None:
            m = manifest(out)
            edit(m)
            (out / "manifest.json").write_text(json.dumps(m))

        return Case("manifest", name, [explain(src, out), Step(call=change), explain(src, out)], {2},
                    protect=list(extra_protect))

    def first(m: dict) -> dict:
        return next(iter(m["images"].values()))

    yield forged("record files: 5", lambda m: first(m).update(files=5))
    yield forged("record files: [null]", lambda m: first(m).update(files=[None]))
    yield forged('record evaluations: "lots"', lambda m: first(m).update(evaluations="lots"))
    yield forged('record seconds: "abc"', lambda m: first(m).update(seconds="abc"))
    yield forged("record status: 5", lambda m: first(m).update(status=5))
    outside = tmp / "outside"
    outside.mkdir()
    secret_files = [outside / "secret.npz", outside / "secret.json", outside / "secret.png"]
    for f in secret_files:
        f.write_bytes(b"outside the run folder")
    yield forged("stem ../../outside/secret", lambda m: first(m).update(stem="../../outside/secret"), secret_files)
    yield forged("stem /abs/path", lambda m: first(m).update(stem=str(outside / "secret")), secret_files)
    yield forged("stem summary", lambda m: first(m).update(stem="summary"))

    def hostile_manifest(name: str, make: Callable[[Path], None]) -> Case:
        d, src, out = folder("mh-" + name)
        return Case("manifest", name, [explain(src, out), Step(call=lambda out=out: ((out / "manifest.json").unlink(),
                                                                                     make(out / "manifest.json"))),
                                       explain(src, out)], {2})

    yield hostile_manifest("FIFO as manifest.json", lambda p: os.mkfifo(p))
    yield hostile_manifest("manifest nested 200k deep", lambda p: p.write_text("[" * 200_000 + "]" * 200_000))
    yield hostile_manifest("manifest of 200 MB (sparse)", lambda p: open(p, "wb").truncate(200 * 1024**2))
    link_target = tmp / "link-target.json"
    link_target.write_text('{"format": "capshap.run"}')
    yield hostile_manifest("manifest a symlink outside", lambda p: p.symlink_to(link_target))

    # ---- the lock
    d, src, out = folder("lock-link")
    out.mkdir()
    important = d / "important.txt"
    important.write_text("keep me")
    (out / ".capshap.lock").symlink_to(important)
    yield Case("lock", ".capshap.lock a symlink to a user file", [explain(src, out)], {2}, protect=[important])
    d, src, out = folder("lock-fifo")
    out.mkdir()
    os.mkfifo(out / ".capshap.lock")
    yield Case("lock", ".capshap.lock a FIFO", [explain(src, out)], {2})
    d, src, out = folder("lock-enospc")
    yield Case("lock", "full disk (ENOSPC) at the lock", [Step(explain(src, out).argv, WRAP, ("enospc-lock",))], {2})

    # ---- pairs
    d, src, out = folder("pairs")
    other = d / "other"

    def mix(out=out, other=other) -> None:
        shutil.copy(other / "bird.npz", out / "bird.npz")

    def consistent(out=out) -> str | None:
        rec = next(r for r in manifest(out)["images"].values() if r["stem"] == "bird")
        pair = json.loads((out / "bird.json").read_text()).get("pair", {})
        return loads(out)() or (None if pair.get("run") == rec.get("run") else "a pair of two runs was accepted")

    yield Case("pairs", ".npz of another run next to a .json, resumed",
               [explain(src, out), explain(src, other, "--max-evals", "12"), Step(call=mix), explain(src, out)], {0},
               check=consistent)

    # ---- show / evaluate next to the user's files
    d, src, out = folder("show")
    photo_dir = d / "photos"
    photo_dir.mkdir()
    photo = photo_dir / "photo.png"
    shutil.copy(EXAMPLES / "1.jpg", photo)

    def copy_pair(out=out, photo_dir=photo_dir) -> None:
        for sfx in (".npz", ".json"):
            shutil.copy(out / f"bird{sfx}", photo_dir / f"photo{sfx}")

    yield Case("show/evaluate", "show photo.npz next to the user's photo.png",
               [explain(src, out), Step(call=copy_pair), Step(["show", str(photo_dir / "photo.npz"), "-q"])], {1},
               protect=[photo])
    d, src, out = folder("eval-deep")
    yield Case("show/evaluate", "evaluate with a 100k-deep JSON in the folder",
               [explain(src, out), Step(call=lambda out=out: ((out / "deep.json").write_text("[" * 100_000 + "]" * 100_000),
                                                              (out / "deep.npz").write_bytes(b"PK"))),
                Step(["evaluate", str(out), "--trust-run", *EVAL])], {1}, check=loads(out))
    d, src, out = folder("eval-md")
    notes = d / "notes"
    notes.mkdir()
    (notes / "metrics.md").write_text("my own notes\n")
    yield Case("show/evaluate", "evaluate --out onto the user's metrics.md",
               [explain(src, out), Step(["evaluate", str(out), "--trust-run", "--out", str(notes), *EVAL])], {1},
               protect=[notes / "metrics.md"])

    # ---- Ray
    d, src, out = folder("ray-port")
    yield Case("ray", "--ray 127.0.0.1:1", [explain(src, out, "--ray", "127.0.0.1:1")], {2})
    d, src, out = folder("ray-scheme")
    yield Case("ray", "--ray ray://", [explain(src, out, "--ray", "ray://")], {2})
    try:
        import ray  # noqa: F401
        have_ray = True
    except ImportError:
        have_ray = False
    if have_ray:
        rt = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths
        RAY_TEMP.append(rt)
        d, src, out = folder("ray-gpus")
        yield Case("ray", "--gpus-per-worker 1 without a GPU",
                   [Step(explain(src, out, "--ray", "--gpus-per-worker", "1").argv, WRAP, (f"ray:{rt}/a",),
                         {"CUDA_VISIBLE_DEVICES": ""})], {2})
        d, src, out = folder("ray-key")
        yield Case("ray", "--ray with OPENAI_API_KEY set (grep Ray's temp folder)",
                   [Step(explain(src, out, "--ray", "--workers", "1").argv, WRAP, (f"ray:{rt}/b",),
                         {"OPENAI_API_KEY": KEY, "AZURE_VISION_KEY": KEY + "az"})], {0},
                   check=loads(out), secrets=[KEY], scan=[rt / "b", out])

    # ---- servers
    def served(mode: str, name: str, expect: set[int], **kw) -> Case:
        srv = Server(mode)
        servers.append(srv)
        d, src, out = folder("srv-" + mode)
        return Case("servers", name, [Step(["explain", str(src), "--out", str(out), *SMALL, "--captioner", "openai:m",
                                            "--base-url", srv.url, "--scorer", "presence"],
                                           env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ""})], expect, **kw)

    yield served("echo-key", "401 echoing the key altered (case, reversed, cut)", {1, 2}, secrets=key_forms(KEY))
    yield served("garbage", "200 with escape codes and no JSON", {1, 2})
    yield served("hangup", "connection dropped mid-request", {1, 2})
    yield served("long", "a 100k-character caption", {0, 1, 2})


def old_case(category: str, name: str, prep) -> Case:
    """The input cases (make() above) as generic cases."""
    argv, cwd, stems, out, src, script, script_args = prep()
    inputs = [p for p in src.rglob("*") if p.is_file() and not p.is_symlink() and not p.is_fifo()]
    step = Step(argv, script, tuple(script_args))

    def check(out=out, stems=stems) -> str | None:
        return None if outputs_ok(out, ["bird", "horses"]) else "lost: the good images' outputs are missing"

    return Case(category, name, [step], {0, 1, 2}, protect=inputs, check=check, html=out / "index.html",
                secrets=["sk-secret", "Injected"])


def judge(case: Case, verbose: bool) -> tuple:
    before = {p: sha(p) for p in case.protect}
    code: object = None
    err = ""
    unbounded = False
    t0 = time.monotonic()
    for st in case.steps:
        if st.call is not None:
            st.call()
            continue
        t0 = time.monotonic()  # the judged command is the last: earlier ones only prepare the folder
        try:
            res = run(st.argv, ROOT, script=st.script, extra=st.extra, env=st.env)
            code, err = res.returncode, res.stderr + res.stdout
        except subprocess.TimeoutExpired as e:
            code, unbounded = "timeout", True
            err = (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            break
    wall = time.monotonic() - t0
    tb = "Traceback (most recent call last)" in err
    changed = [p for p, h in before.items() if sha(p) != h]
    wrong = None if unbounded or code == 2 and 2 in case.expect else (case.check() if case.check else None)
    if wrong and code == 2:
        wrong = None  # refused: nothing was meant to be written
    raw = any(c in err for c in ("\x1b]0;pwned", "\x07", "\x1b[2J"))
    leaked = [s for s in case.secrets if s in err]
    for folder in case.scan:
        for dirpath, _, names in os.walk(folder):
            for n in names:
                p = Path(dirpath) / n
                if p.is_file() and not p.is_symlink():
                    data = p.read_bytes()
                    leaked += [f"{s} in {p}" for s in case.secrets if s.encode() in data]
    html = case.html.read_text(encoding="utf-8", errors="replace") if case.html and case.html.exists() else ""
    script_raw = "<script>alert(1)" in html or 'href="javascript:' in html or "href='javascript:" in html
    clear = (not tb and not unbounded and code in case.expect and (code == 0 or bool(err.strip())) and not wrong)
    if verbose:
        lines = [ln for ln in err.splitlines() if ln.startswith("capshap")]
        first = next((ln for ln in lines if "error" in ln or "failed" in ln or "skipped" in ln),
                     lines[-1] if lines else (err.strip().splitlines()[-1] if err.strip() else ""))
        print(f"{case.name}: exit {code} in {wall:.0f} s: {first[:200]!r}"
              + (f" WRONG: {wrong}" if wrong else "") + (f" CHANGED: {changed}" if changed else "")
              + (f" LEAKED: {leaked[:3]}" if leaked else ""), file=sys.stderr)
    return (case.category, case.name, code, clear, tb, bool(changed) or bool(wrong and wrong.startswith("lost")),
            raw or bool(leaked) or script_raw, unbounded or wall > LIMIT_S)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", default="", help="only cases whose category or name holds this text")
    args = ap.parse_args()
    rows = []
    os.environ["AZURE_VISION_ENDPOINT"] = "http://127.0.0.1:9"
    os.environ["AZURE_VISION_KEY"] = "sk-secret\nInjected: 1"
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        every = [old_case(*c) for c in cases(tmp)] + list(new_cases(tmp, servers))
        try:
            for case in every:
                if args.k.lower() in f"{case.category} {case.name}".lower():
                    rows.append(judge(case, args.verbose))
        finally:
            for srv in servers:
                srv.close()
            for p in RAY_TEMP:
                shutil.rmtree(p, ignore_errors=True)
    print("| category | case | exit | clear error or correct | traceback | data lost | payload raw | unbounded |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {'yes' if r[3] else 'NO'} | {'YES' if r[4] else 'no'} | "
              f"{'YES' if r[5] else 'no'} | {'YES' if r[6] else 'no'} | {'YES' if r[7] else 'no'} |")
    cats: dict[str, list[int]] = {}
    for r in rows:
        c = cats.setdefault(r[0], [0] * 6)
        c[0] += 1
        for i in range(1, 6):
            c[i] += bool(r[i + 2])
    print("\n| category | cases tried | clear errors | tracebacks | data lost | payload raw | unbounded |")
    print("|---|---|---|---|---|---|---|")
    for k, c in cats.items():
        print(f"| {k} | " + " | ".join(str(x) for x in c) + " |")
    tot = [sum(c[i] for c in cats.values()) for i in range(6)]
    print("| **all** | " + " | ".join(f"**{x}**" for x in tot) + " |")
    bad = [r for r in rows if r[4] or r[5] or r[6] or r[7] or not r[3]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
