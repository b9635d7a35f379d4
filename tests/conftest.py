"""Shared test set-up: quiet TensorFlow, generated data sets in a temporary cache."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
