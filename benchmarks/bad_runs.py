"""Bad inputs and faults through the whole command, as a user meets them: one table row per
case with what happened (exit code, clear message, traceback, data lost).

    python benchmarks/bad_runs.py            # the table (about a minute)
    python benchmarks/bad_runs.py -v         # also each case's message
    python benchmarks/bad_runs.py --cases "corrupt jpeg"   # only the cases whose name holds a text

Each case runs ``capshap`` in a subprocess (bounded in time) on files made here, next to
two good images, and checks: the exit code; that stderr has no Python traceback; that the
good images' outputs exist and load (nothing lost); that no input file changed; that no
raw control character reached the terminal. The complement of benchmarks/bad_inputs.py,
which feeds the loader and Explanation.load directly.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
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


def run(args: list[str], cwd: Path, timeout: float = 120, script: str | None = None, extra=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", script, *extra, *args] if script else [sys.executable, "-m", "capshap.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--cases", nargs="+", metavar="TEXT", help="only the cases whose name contains one of these")
    args = ap.parse_args()
    rows = []
    os.environ["AZURE_VISION_ENDPOINT"] = "http://127.0.0.1:9"
    os.environ["AZURE_VISION_KEY"] = "sk-secret\nInjected: 1"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for category, name, prep in cases(tmp):
            if args.cases and not any(c in name for c in args.cases):
                continue
            argv, cwd, stems, out, src, script, script_args = prep()
            before = {p: sha(p) for p in src.rglob("*") if p.is_file() and not p.is_symlink() and not p.is_fifo()}
            try:
                res = run(argv, cwd, script=script, extra=script_args)
                code, err = res.returncode, res.stderr + res.stdout
            except subprocess.TimeoutExpired:
                code, err = "timeout", ""
            after = {p: sha(p) for p in before}
            usage = code == 2
            lost = (not usage) and not outputs_ok(out, ["bird", "horses"])
            changed = before != after
            # the payloads themselves (progress bars use their own cursor codes, which are fine)
            raw = any(c in err for c in ("\x1b]0;pwned", "\x07", "\x1b[2J"))
            tb = "Traceback (most recent call last)" in err
            leaked = "sk-secret" in err or "Injected" in err
            html = (out / "index.html").read_text(encoding="utf-8", errors="replace") if (out / "index.html").exists() else ""
            script_ok = ("<script>alert(1)" not in html and 'href="javascript:' not in html
                         and "href='javascript:" not in html)
            clear = code in (1, 2, 0) and not tb and bool(err.strip()) or code == 0
            rows.append((category, name, code, clear and not tb, tb, lost or changed, raw or leaked or not script_ok))
            if args.verbose:
                first = next((ln for ln in err.splitlines() if "capshap" in ln and ("error" in ln or "failed" in ln
                              or "skipped" in ln)), err.strip().splitlines()[-1] if err.strip() else "")
                print(f"{name}: exit {code}: {first[:160]!r}", file=sys.stderr)
    print("| category | case | exit | clear error | traceback | data lost | reached terminal/page raw |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {'yes' if r[3] else 'NO'} | {'YES' if r[4] else 'no'} | "
              f"{'YES' if r[5] else 'no'} | {'YES' if r[6] else 'no'} |")
    cats = {}
    for r in rows:
        c = cats.setdefault(r[0], [0, 0, 0, 0])
        c[0] += 1
        c[1] += bool(r[3])
        c[2] += bool(r[4])
        c[3] += bool(r[5])
    print("\n| category | tried | clear error | traceback | data lost |\n|---|---|---|---|---|")
    for k, (n, clear, tb, lost) in cats.items():
        print(f"| {k} | {n} | {clear} | {tb} | {lost} |")
    bad = [r for r in rows if r[4] or r[5] or r[6] or not r[3]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
