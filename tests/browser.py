"""Headless Chromium for tests that must check what a browser does with capshap's HTML.

One browser per test session (the ``chromium`` fixture, registered in ``tests/conftest.py``);
each test gets a fresh page from ``chromium_page``. The browser is Debian's ``chromium``
(``apt-get install -y chromium``) driven by Playwright (``pip install playwright``; no
``playwright install`` download is needed, the system browser is used through
``executable_path``). Set ``CAPSHAP_CHROMIUM`` to use another executable.

Where either is missing the tests skip with the reason (shown in pytest's summary with
``-rs`` and as a warning); with ``CAPSHAP_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_executable() -> str | None:
    """Path of the Chromium to use: $CAPSHAP_CHROMIUM, /usr/bin/chromium, or one on PATH."""
    env = os.environ.get("CAPSHAP_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CAPSHAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (CAPSHAP_REQUIRE_BROWSER=1) but {reason}")
    warnings.warn(f"browser tests skipped: {reason}", stacklevel=2)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium (playwright Browser) shared by the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    exe = chromium_executable()
    if exe is None:
        _unavailable("no Chromium executable (apt-get install -y chromium, or set CAPSHAP_CHROMIUM)")
    pw = sync_playwright().start()
    try:
        try:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        except Exception as e:  # a broken install: say why
            _unavailable(f"{exe} did not start: {str(e).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


class Page:
    """A fresh page plus every JavaScript dialog (alert/confirm/prompt) it opened."""

    def __init__(self, page: Any):
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def chromium_page(chromium: Any) -> Iterator[Page]:
    """A new page (own context: no shared cookies or storage) in the session's browser."""
    context = chromium.new_context(java_script_enabled=True)
    context.set_default_timeout(15_000)
    try:
        yield Page(context.new_page())
    finally:
        context.close()


def image_decoded(page: Any, selector: str) -> list[dict[str, Any]]:
    """For every <img> matching ``selector``: whether it finished loading and its decoded
    natural size (0 x 0 for a picture the browser could not decode)."""
    return page.eval_on_selector_all(
        selector,
        "els => els.map(e => ({complete: e.complete, w: e.naturalWidth, h: e.naturalHeight}))",
    )
