"""pytest configuration shared by all tests.

Having this file in tests/ puts tests/ on ``sys.path`` (pytest's default import mode), so
test files in sub-folders import the shared helpers (``tiny_models``, ``tiny_vlms``,
``browser``, ``bad_inputs``) the same way. Headless Chromium fixtures: see tests/browser.py.
"""

from browser import chromium, chromium_page  # noqa: F401
