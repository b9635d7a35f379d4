"""Evaluation: metrics, intervals, comparisons, seed variance and the regression gate."""
