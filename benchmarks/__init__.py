"""Benchmark runner: CLI, configs and regression benchmarks."""
