"""Data: finding, decoding, importing and preparing images."""
