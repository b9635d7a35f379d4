"""Data: finding, decoding, caching and streaming the images."""
