"""Progress reporting for runs: tqdm bars (notebook widgets where available) or nothing.

The library decides whether to show bars with :func:`wants_bars`: always when asked
(``progress=True``), never with ``progress=False``, and by default (``None``) only when a
person is watching: a terminal on stderr or a Jupyter kernel. Bars go to stderr; captions
and names shown in them are escaped (:func:`capshap.text.printable`).
"""

from __future__ import annotations

import sys
from typing import Any

from capshap.text import printable

__all__ = ["wants_bars", "Bars"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def wants_bars(progress: bool | None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else only when interactive."""
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty() or _in_notebook()
    except (AttributeError, ValueError):
        return False


class Bars:
    """One bar for the run (images) and one per image (evaluations).

    ``enabled=False`` (or no tqdm installed) makes every method a no-op, so callers never
    branch on it.
    """

    def __init__(self, n_images: int | None, enabled: bool, notebook: bool | None = None):
        self._tqdm: Any = None
        self.run: Any = None
        self.image: Any = None
        if not enabled:
            return
        try:
            if notebook if notebook is not None else _in_notebook():
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the cli extra
            return
        self._tqdm = tqdm
        if n_images is None or n_images > 1:
            self.run = tqdm(total=n_images, desc="images", unit="img", file=sys.stderr, position=0,
                            leave=True, dynamic_ncols=True)

    @property
    def tqdm(self) -> Any:
        """The tqdm class the bars are drawn with, or None when bars are off (for runners
        that draw bars of their own beside these)."""
        return self._tqdm

    def start_image(self, label: str, total: int) -> None:
        if self._tqdm is None:
            return
        self.close_image()
        self.image = self._tqdm(total=total, desc=printable(label, 40), unit="eval", file=sys.stderr,
                                leave=self.run is None, dynamic_ncols=True, smoothing=0.1,
                                position=1 if self.run is not None else 0)

    def status(self, text: str) -> None:
        if self.image is not None:
            self.image.set_postfix_str(printable(text, 40), refresh=True)

    def advance(self, n: int) -> None:
        if self.image is not None:
            self.image.update(n)

    def close_image(self) -> None:
        if self.image is not None:
            self.image.total = max(self.image.n, 1)
            self.image.refresh()
            self.image.close()
            self.image = None

    def image_done(self) -> None:
        self.close_image()
        if self.run is not None:
            self.run.update(1)

    def write(self, message: str) -> None:
        """Print a line above the bars (stderr)."""
        if self._tqdm is not None:
            self._tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        self.close_image()
        if self.run is not None:
            self.run.close()
            self.run = None
