"""Fixtures of the index tests (defined in tests/index_support.py, importable under a unique name)."""

from index_support import built, exact, store, vectors  # noqa: F401
