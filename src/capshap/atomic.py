"""Atomic file writes: a unique temporary file in the target's folder, then a rename.

Two writers of one name never share a temporary file, a reader never sees half a file,
and a failed or interrupted write leaves no temporary file behind. The result gets the
usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "file_mode"]


def file_mode() -> int:
    """0o666 minus the process umask (what ``open()`` would give a new file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any], *, fsync: bool = False,
                 prefix: str = ".tmp-") -> Path:
    """Write ``path`` by calling ``write(f)`` on a binary file opened on a unique
    temporary name (``prefix`` + random, created with O_EXCL) in the same folder, then
    renaming it over ``path`` (the rename replaces a symbolic link there, never follows it).

    The temporary file is removed if ``write`` or the rename fails (any exception,
    KeyboardInterrupt included, which is then raised again). Returns ``path``.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=p.suffix, dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False,
                      prefix: str = ".tmp-") -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8; returns ``path``."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), fsync=fsync, prefix=prefix)
