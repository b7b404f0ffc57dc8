"""Benchmarks: scripts that print figures; nothing here asserts timings."""
