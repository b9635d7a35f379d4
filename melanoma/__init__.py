"""Melanoma benchmark library: data, preprocessing, models, metrics, reports."""
