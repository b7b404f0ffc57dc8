"""Developer scripts (importable from the tests)."""
