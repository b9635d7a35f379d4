"""Benchmark suites, run from a checkout (not installed).

    python -m benchmarks.perf
"""
