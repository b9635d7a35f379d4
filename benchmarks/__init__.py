"""Benchmark suites, run from a checkout (not installed).

    python -m benchmarks.perf
    python -m benchmarks.measure_evaluation
"""
