"""The one TensorFlow set-up every command that trains or predicts goes through.

Silences TensorFlow's start-up noise, makes CPU runs repeatable (op determinism), logs one
line naming the device, and returns what it found for the results' provenance.
"""
from __future__ import annotations

import logging
import os

from melanoma.util import provenance

log = logging.getLogger(__name__)


def quiet_tensorflow_logs() -> None:
    """Before TensorFlow is imported: hide its C++ INFO/WARNING start-up lines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure(deterministic: bool | None = None) -> dict:
    """Import and configure TensorFlow; returns the hardware (CPU, GPUs) for provenance.

    ``deterministic``: enable op determinism (default: on CPU yes, on GPU no, where it costs
    speed and turns automatic XLA off)."""
    quiet_tensorflow_logs()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices for each new model are noise here
    hardware = provenance.devices()
    log.info("device: %s", provenance.describe_device(hardware))
    if deterministic is None:
        deterministic = not hardware["gpus"]
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    hardware["op_determinism"] = bool(deterministic)
    return hardware
