"""Progress reporting for runs: tqdm bars (notebook widgets where available) or nothing.

The library decides whether to show bars with :func:`wants_bars`: always when asked
(``progress=True``), never with ``progress=False``, and by default (``None``) only when a
person is watching: a terminal on stderr or a Jupyter kernel. Bars go to stderr; captions
and names shown in them are escaped (:func:`capshap.text.printable`).

In a notebook, bars are tqdm's widgets when ipywidgets is installed. Without it tqdm would
warn (``TqdmWarning: IProgress not found``) and write every refresh to stderr, which a
notebook shows as a wall of pink text; instead all bars are drawn as one line of text that
is updated in place (:class:`LineBars`), and an executed notebook keeps only its last state.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from capshap.text import printable

__all__ = ["wants_bars", "Bars", "LineBars", "has_widgets"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def has_widgets() -> bool:
    """Whether ipywidgets (what tqdm's notebook bars are drawn with) can be imported."""
    try:
        return importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):
        return False


def _display_line() -> Callable[[str], None]:
    """A function that shows a line of text in the notebook cell, replacing the last one."""
    from IPython.display import display

    handle = display({"text/plain": ""}, raw=True, display_id=True)

    def show(text: str) -> None:
        if handle is not None:
            handle.update({"text/plain": text}, raw=True)

    return show


class _Counter:
    """The part of a tqdm bar that capshap uses, drawn by a :class:`LineBars`."""

    def __init__(self, line: "LineBars", total: int | None = None, desc: str = "", unit: str = "it", **_: Any):
        self._line, self.total, self.desc, self.unit = line, total, desc, unit
        self.n = 0
        self.postfix = ""
        line._open(self)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._line.draw()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)
        if refresh:
            self._line.draw()

    def refresh(self) -> None:
        self._line.draw()

    def close(self) -> None:
        self._line._close(self)

    def text(self) -> str:
        total = "?" if self.total is None else str(self.total)
        part = f"{self.desc}: {self.n}/{total} {self.unit}"
        return f"{part} ({self.postfix})" if self.postfix else part


class LineBars:
    """tqdm-like bars drawn together as one line of text that updates in place.

    Calling it as ``LineBars()(total=..., desc=..., unit=...)`` opens a counter (what
    :class:`Bars` and the in-flight runner call tqdm for); every change redraws the line
    from the open counters, e.g. ``"images: 1/4 img · [2/4] 2.jpg: 150/300 eval (a photo
    of a bulbul)"``.

    Parameters
    ----------
    show : called with the line's new text; default: a notebook display updated in place.
    """

    def __init__(self, show: Callable[[str], None] | None = None):
        self._show = show
        self._open_counters: list[_Counter] = []
        self.line = ""  # the text drawn last

    def __call__(self, *args: Any, **kwargs: Any) -> _Counter:
        return _Counter(self, *args, **kwargs)

    def _open(self, c: _Counter) -> None:
        self._open_counters.append(c)
        self.draw()

    def _close(self, c: _Counter) -> None:
        if c in self._open_counters:
            self.draw()  # its final state stays visible until the next change
            self._open_counters.remove(c)

    def draw(self) -> None:
        text = " · ".join(c.text() for c in self._open_counters)
        if not text or text == self.line:
            return
        self.line = text
        if self._show is None:
            self._show = _display_line()
        self._show(text)

    def write(self, message: str, file: Any = None) -> None:
        print(message, file=file or sys.stderr)


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
        tqdm: Any
        try:
            if notebook if notebook is not None else _in_notebook():
                if has_widgets():
                    from tqdm.auto import tqdm
                else:  # tqdm would warn and write every refresh to the cell's stderr
                    tqdm = LineBars()
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

    def start_image(self, label: str, total: int | None) -> None:
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

    def progress(self, done: int, total: int) -> None:
        """The image bar stands at ``done`` of ``total`` (a total known only once work starts)."""
        if self.image is not None:
            if self.image.total != total:
                self.image.total = total
            self.image.update(done - self.image.n)

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
