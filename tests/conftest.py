"""Shared pytest fixtures: headless Chromium (see tests/browser.py)."""

from browser import chromium, chromium_page  # noqa: F401
