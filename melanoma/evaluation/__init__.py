"""Evaluation: metrics, scoring rows, model files, leakage audit and duplicate detection."""
