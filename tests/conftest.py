"""pytest configuration shared by all tests.

Having this file in tests/ puts tests/ on ``sys.path`` (pytest's default import mode), so
test files in sub-folders such as tests/captioners/hf/ import the shared helpers
(``tiny_models``, ``tiny_vlms``) the same way the flat tests do.
"""
