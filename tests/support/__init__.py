"""Helpers shared by the tests and the benchmarks (never imported by production code)."""
