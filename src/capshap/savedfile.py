"""Read saved explanations (``NAME.npz`` + ``NAME.json``) defensively.

Saved files come from elsewhere (a colleague's run folder, a download) and are read by
``capshap show`` and ``capshap evaluate``. This module checks them before anything is built
from them, so that a damaged or hostile file gives a clear :class:`ValueError` naming the
file and the field, never a ``KeyError``, a silently inconsistent drawing, an unbounded
allocation or code execution:

* both files must be regular files of bounded size (no FIFOs or devices: they could block);
* the JSON must be an object with the fields of the format, each of the right type;
* the npz members' shapes and dtypes are read from their ``.npy`` headers and checked
  against each other and the JSON (tokens against value columns, the tree against the
  image, coalitions against scores) and against a byte budget *before* any array data is
  read, so a 1 KB file claiming a 100000 x 100000 tree allocates nothing;
* only real numbers are accepted (no complex, text or object arrays; ``allow_pickle`` is
  never on), and scores and credit must be finite.

:func:`read` returns the checked JSON object and arrays; ``Explanation.load`` builds the
explanation from them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read", "read_regular", "read_json", "file_sha256", "check_settings_types", "DEFAULT_MAX_BYTES",
           "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]

#: Largest total size, in bytes, of the arrays of one saved explanation (their .npy
#: headers are checked before reading). A 500x500 image explained for 30 tokens in
#: channel mode takes 90 MB.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Largest JSON file read, in bytes.
MAX_JSON_BYTES = 64 * 1024**2
#: Deepest nesting of lists and objects accepted in a JSON file read here.
MAX_JSON_DEPTH = 64
#: Largest .npy header read, in bytes (numpy's own default limit).
_MAX_HEADER = 10_000

_REQUIRED_ARRAYS = (
    "values", "base_values", "outputs", "image", "nodes", "node_values",
    "coalition_lengths", "coalition_nodes", "scores",
)
_TREE_ARRAYS = ("tree_linkage", "tree_leaf_index", "tree_rects")


def _bad(path: Path, field: str, msg: str) -> ValueError:
    return ValueError(f"{path}: field '{field}': {msg}")


def _regular(path: Path, limit: int, what: str) -> int:
    try:
        st = os.stat(path)
    except OSError as exc:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: no such file; an explanation is saved as NAME.npz + NAME.json") from None
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file; an explanation's {what} must be a plain file")
    if st.st_size > limit:
        raise ValueError(f"{path}: the {what} is {st.st_size:,} bytes, more than the limit of {limit:,}; not read")
    return st.st_size


# ------------------------------------------------------------------------------ JSON


def read_regular(path: str | os.PathLike[str], limit: int, what: str = "file", *, follow: bool = True) -> bytes:
    """The bytes of ``path``, read only if it is a regular file of at most ``limit`` bytes.

    The file is opened non-blocking (a FIFO or device never blocks: it is refused after
    ``fstat``) and, with ``follow=False``, without following a symbolic link. Raises
    FileNotFoundError when it is missing, ValueError (naming the file) for anything else.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise ValueError(f"{path}: is a symbolic link, which is never followed here; the {what} must be a "
                             "plain file") from None
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file; the {what} must be a plain file")
        if st.st_size > limit:
            raise ValueError(f"{path}: the {what} is {st.st_size:,} bytes, more than the limit of {limit:,}; not read")
        chunks, n = [], 0
        while n <= limit:
            try:
                b = os.read(fd, min(1 << 20, limit + 1 - n))
            except BlockingIOError:  # pragma: no cover - regular files do not block
                break
            except OSError as exc:
                raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > limit:
            raise ValueError(f"{path}: the {what} grew past the limit of {limit:,} bytes while read; not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (linear time)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group(0) in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def read_json(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES, what: str = "JSON file", *,
              follow: bool = True, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``path``: a regular file (:func:`read_regular`) of UTF-8 text
    nested at most ``max_depth`` deep. Raises FileNotFoundError, or ValueError naming the
    file (never RecursionError, whatever the nesting)."""
    raw = read_regular(path, limit, what, follow=follow)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if _too_deep(text, max_depth):
        raise ValueError(f"{path}: JSON nested more than {max_depth} levels deep; not read")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # huge integers
        raise ValueError(f"{path}: not usable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MB pieces)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _read_json(js: Path) -> dict[str, Any]:
    if not os.path.lexists(js):
        raise FileNotFoundError(f"{js}: no such file; an explanation is saved as NAME.npz + NAME.json")
    meta = read_json(js, MAX_JSON_BYTES, "JSON file")
    if not isinstance(meta, dict):
        raise ValueError(f"{js}: not a capshap explanation (the JSON holds a {type(meta).__name__}, not an object)")
    if meta.get("format") != "capshap.explanation":
        raise ValueError(f"{js}: not a capshap explanation (format={str(meta.get('format'))[:80]!r})")
    return meta


def _check_pair(npz: Path, js: Path, meta: dict[str, Any]) -> None:
    """A pair written by a run folder names its run and its .npz's SHA-256: the two files
    must belong together (files of two runs side by side are not one explanation)."""
    pair = meta.get("pair")
    if pair is None:
        return
    if not isinstance(pair, dict) or not isinstance(pair.get("run"), str) or not isinstance(pair.get("npz_sha256"), str):
        raise _bad(js, "pair", "must be an object with text fields 'run' and 'npz_sha256'")
    if file_sha256(npz) != pair["npz_sha256"]:
        raise _bad(js, "pair.npz_sha256", f"does not match {npz.name}: the two files are not one explanation "
                                          f"(written by different runs, or one was changed)")


def _check_meta(js: Path, meta: dict[str, Any], version: int) -> None:
    v = meta.get("version", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _bad(js, "version", f"must be a positive integer, got {str(v)[:80]!r}")
    if v > version:
        raise _bad(js, "version", f"format version {v} is newer than this capshap reads ({version}); upgrade capshap")
    for key in ("caption", "tokens"):
        if key not in meta:
            raise _bad(js, key, "missing; the file is damaged or was not written by capshap")
    if not isinstance(meta["caption"], str):
        raise _bad(js, "caption", f"must be text, got {type(meta['caption']).__name__}")
    _list_of_str(js, "tokens", meta["tokens"])
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise _bad(js, "name", f"must be text, got {type(meta['name']).__name__}")
    for key in ("params", "settings", "timings", "info"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _bad(js, key, f"must be an object (a dict), got {type(meta[key]).__name__}")
    if meta.get("captions") is not None:
        _list_of_str(js, "captions", meta["captions"])
    tree = meta.get("tree")
    if tree is None:
        return
    if not isinstance(tree, dict):
        raise _bad(js, "tree", f"must be an object or null, got {type(tree).__name__}")
    if not isinstance(tree.get("kind"), str):
        raise _bad(js, "tree.kind", f"must be text, got {type(tree.get('kind')).__name__}")
    if tree.get("params") is not None and not isinstance(tree["params"], dict):
        raise _bad(js, "tree.params", f"must be an object, got {type(tree['params']).__name__}")
    if tree.get("rebuild") is not None:
        if tree["rebuild"] != "axis":
            raise _bad(js, "tree.rebuild", f"unknown value {str(tree['rebuild'])[:40]!r}; only 'axis' is known")
        shape = tree.get("shape")
        ok = isinstance(shape, list) and len(shape) in (2, 3) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
        )
        if not ok or (len(shape) == 3 and shape[2] != 3):
            raise _bad(js, "tree.shape", f"must be [height, width] or [height, width, 3] in pixels, got {str(shape)[:80]}")


def _list_of_str(js: Path, key: str, value: Any) -> None:
    if not isinstance(value, list):
        raise _bad(js, key, f"must be a list of text, got {type(value).__name__}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise _bad(js, f"{key}[{i}]", f"must be text, got {type(v).__name__}")


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "str": (str,), "bool": (bool,), "float": (int, float), "None": (type(None),),
    "dict": (dict,), "list": (list,), "Mapping": (Mapping,),
}


def check_settings_types(settings: Any) -> None:
    """Check each field of a loaded :class:`~capshap.settings.Settings` against its type
    annotation (``int | None``, ``dict[str, Any]`` ...); raise ValueError naming the first
    field that does not fit. Only types are checked: a captioner or tree this process
    does not know is not an error here (``show`` needs neither)."""
    from dataclasses import fields

    for f in fields(settings):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        allowed: tuple[type, ...] = ()
        for part in ann.split("|"):
            base = part.strip().split("[", 1)[0]
            if base not in _TYPES:
                allowed = ()
                break
            allowed += _TYPES[base]
        if not allowed:
            continue
        v = getattr(settings, f.name)
        if isinstance(v, bool) and bool not in allowed:
            ok = False
        else:
            ok = isinstance(v, allowed)
        if not ok:
            raise ValueError(f"{f.name}={str(v)[:80]!r} must be {ann}")


# ------------------------------------------------------------------------------- npz


def _headers(npz: Path, zf: zipfile.ZipFile) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """member name (without .npy) -> (shape, dtype), from the .npy headers only."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[: -len(".npy")]
        try:
            with zf.open(info) as f:
                major, minor = np.lib.format.read_magic(f)
                if (major, minor) == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
                elif (major, minor) == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
                else:
                    raise ValueError(f"unsupported .npy format version {major}.{minor}")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
            raise _bad(npz, key, f"unreadable array header ({str(exc)[:200]})") from None
        if dtype.hasobject:
            raise _bad(npz, key, "holds Python objects (pickled data), which are never loaded; the file is not from capshap")
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise _bad(npz, key, f"dtype {dtype} is not a real number type (complex, text and records are not accepted)")
        out[key] = (tuple(int(s) for s in shape), dtype)
    return out


def _check_shapes(npz: Path, js: Path, meta: dict[str, Any], h: dict[str, tuple[tuple[int, ...], np.dtype]],
                  max_bytes: int) -> None:
    """Relations between the members' shapes and the JSON, before any data is read."""
    for key in _REQUIRED_ARRAYS:
        if key not in h:
            raise _bad(npz, key, "missing array; the file is damaged or was not written by capshap")
    total = 0
    for key, (shape, dtype) in h.items():
        n = math.prod(shape) * dtype.itemsize
        total += n
        if total > max_bytes:
            raise _bad(npz, key, f"its header claims shape {shape} ({n:,} bytes); the arrays would exceed the "
                                 f"limit of {max_bytes:,} bytes, so nothing is read")

    def shape(key: str) -> tuple[int, ...]:
        return h[key][0]

    def kind(key: str, kinds: str, what: str) -> None:
        if h[key][1].kind not in kinds:
            raise _bad(npz, key, f"must hold {what}, got dtype {h[key][1]}")

    T = len(meta["tokens"])
    img = shape("image")
    if len(img) != 3 or img[2] != 3 or img[0] < 1 or img[1] < 1:
        raise _bad(npz, "image", f"must be (height, width, 3), got shape {img}")
    kind("image", "u", "uint8 pixels")
    if h["image"][1].itemsize != 1:
        raise _bad(npz, "image", f"must hold uint8 pixels, got dtype {h['image'][1]}")
    H, W = img[:2]
    vals = shape("values")
    kind("values", "f", "floating-point credit")
    if vals not in ((H, W, T), (H, W, 3, T)):
        raise _bad(npz, "values", f"shape {vals} does not match the image ({H}x{W}) and the {T} tokens of "
                                  f"{js.name}: expected {(H, W, T)} or {(H, W, 3, T)}")
    for key in ("base_values", "outputs"):
        kind(key, "fiu", "numbers")
        if shape(key) != (T,):
            raise _bad(npz, key, f"shape {shape(key)} does not match the {T} tokens (expected ({T},))")
    for key in ("nodes", "coalition_lengths", "coalition_nodes"):
        kind(key, "iu", "integers")
        if len(shape(key)) != 1:
            raise _bad(npz, key, f"must be one-dimensional, got shape {shape(key)}")
    kind("node_values", "fiu", "numbers")
    K = shape("nodes")[0]
    if shape("node_values") != (K, T) and not (K == 0 and math.prod(shape("node_values")) == 0):
        raise _bad(npz, "node_values", f"shape {shape('node_values')} does not match {K} nodes x {T} tokens")
    E = shape("coalition_lengths")[0]
    kind("scores", "fiu", "numbers")
    sc = shape("scores")
    if sc != (E, T) and not (E == 0 and math.prod(sc) == 0):
        raise _bad(npz, "scores", f"shape {sc} does not match {E} evaluated coalitions x {T} tokens")
    caps = meta.get("captions")
    if caps is not None and len(caps) != E:
        raise _bad(js, "captions", f"holds {len(caps)} captions for {E} evaluated coalitions")
    tree = meta.get("tree")
    if tree is None:
        return
    grid = vals[:-1]
    if tree.get("rebuild") == "axis" and tuple(tree["shape"]) != grid:
        raise _bad(js, "tree.shape", f"{tree['shape']} does not match the values' grid {list(grid)} in {npz.name}")
    if "tree_linkage" in h:
        for key in ("tree_linkage", "tree_leaf_index"):
            if key not in h:
                raise _bad(npz, key, "missing array of the stored region tree")
        kind("tree_leaf_index", "iu", "integers")
        kind("tree_linkage", "fiu", "numbers")
        if shape("tree_leaf_index") != grid:
            raise _bad(npz, "tree_leaf_index", f"shape {shape('tree_leaf_index')} does not match the values' grid {grid}")
        lk = shape("tree_linkage")
        M = lk[0] + 1 if len(lk) == 2 else 0
        if len(lk) != 2 or lk[1] != 4 or M > math.prod(grid):
            raise _bad(npz, "tree_linkage", f"shape {lk} is not (leaves - 1, 4) for at most {math.prod(grid)} leaves")
        if "tree_rects" in h:
            kind("tree_rects", "iu", "integers")
            r = shape("tree_rects")
            if len(r) != 2 or r[0] != 2 * M - 1 or r[1] not in (4, 6):
                raise _bad(npz, "tree_rects", f"shape {r} is not ({2 * M - 1}, 4 or 6)")


def _read_arrays(npz: Path, zf: zipfile.ZipFile, keys: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for key in keys:
        try:
            with zf.open(key + ".npy") as f:
                out[key] = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise _bad(npz, key, f"unreadable array data ({str(exc)[:200]})") from None
    return out


def _check_values(npz: Path, js: Path, meta: dict[str, Any], a: dict[str, np.ndarray]) -> None:
    """Checks that need the data: finiteness, coalition bookkeeping, node ids."""
    for key in ("values", "base_values", "outputs", "node_values", "scores"):
        bad = ~np.isfinite(a[key])
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise _bad(npz, key, f"holds {int(bad.sum())} NaN or infinite value(s), first at index {where}; "
                                 "saved explanations only hold finite numbers")
    lengths = a["coalition_lengths"]
    if (lengths < 0).any():
        raise _bad(npz, "coalition_lengths", "holds negative lengths")
    if int(lengths.sum()) != a["coalition_nodes"].shape[0]:
        raise _bad(npz, "coalition_lengths", f"add up to {int(lengths.sum())} but 'coalition_nodes' holds "
                                             f"{a['coalition_nodes'].shape[0]} node ids")
    n_nodes = None
    tree = meta.get("tree")
    if tree is not None and "tree_linkage" in a:
        n_nodes = 2 * (a["tree_linkage"].shape[0] + 1) - 1
    elif tree is not None and tree.get("rebuild") == "axis":
        n_nodes = 2 * math.prod(tree["shape"]) - 1
    for key in ("nodes", "coalition_nodes"):
        ids = a[key]
        if ids.size and (ids.min() < 0 or (n_nodes is not None and ids.max() >= n_nodes)):
            top = f"0..{n_nodes - 1}" if n_nodes is not None else "non-negative"
            raise _bad(npz, key, f"holds node ids outside the tree ({top})")


def read(npz: Path, js: Path, version: int, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a saved explanation.

    Parameters
    ----------
    npz, js : Path
        The two files of one explanation.
    version : int
        The newest format version the caller understands.
    max_bytes : int
        Largest total size of the arrays, from their headers, before anything is read.

    Returns
    -------
    (meta, arrays)
        The JSON object (fields type-checked) and the arrays by name, consistent with each
        other: values (H, W, T) or (H, W, 3, T) with T = len(meta["tokens"]), image
        (H, W, 3) uint8, base_values and outputs (T,), node_values (K, T), scores (E, T).

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        Anything else: ``"FILE: field 'X': what is wrong"``.
    """
    for p in (npz, js):
        if not os.path.lexists(p):
            raise FileNotFoundError(f"{p}: no such file; an explanation is saved as NAME.npz + NAME.json")
    meta = _read_json(js)
    _check_meta(js, meta, version)
    _regular(npz, max_bytes, "array file")
    _check_pair(npz, js, meta)
    try:
        with zipfile.ZipFile(npz) as zf:
            h = _headers(npz, zf)
            _check_shapes(npz, js, meta, h, max_bytes)
            keys = [k for k in h if k in _REQUIRED_ARRAYS or k in _TREE_ARRAYS]
            arrays = _read_arrays(npz, zf, keys)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{npz}: not a valid .npz file, damaged or truncated ({exc})") from None
    _check_values(npz, js, meta, arrays)
    return meta, arrays
