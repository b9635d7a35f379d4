"""The one TensorFlow set-up every command that trains or predicts goes through.

Silences TensorFlow's start-up noise, makes CPU runs repeatable (op determinism), logs one
line naming the device, and returns what it found for the results' provenance.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager

from melanoma.util import provenance

log = logging.getLogger(__name__)


def quiet_tensorflow_logs() -> None:
    """Before TensorFlow is imported: hide its C++ log lines (INFO to ERROR: CUDA stubs on a
    CPU machine, oneDNN notices); Python exceptions still surface. Set TF_CPP_MIN_LOG_LEVEL=0
    yourself to see them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def quiet_stderr():
    """Keep C-level writes to stderr (fd 2) off the terminal inside the block; show them if
    the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """``import tensorflow`` with its C++ start-up lines (absl's pre-init notice, oneDNN)
    kept off the terminal."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    quiet_tensorflow_logs()
    with quiet_stderr():
        import tensorflow as tf
    return tf


def configure(deterministic: bool | None = None) -> dict:
    """Import and configure TensorFlow; returns the hardware (CPU, GPUs) for provenance.

    ``deterministic``: enable op determinism (default: on CPU yes, on GPU no, where it costs
    speed and turns automatic XLA off)."""
    tf = import_tensorflow()
    tf.get_logger().setLevel("ERROR")  # retracing notices for each new model are noise here
    with quiet_stderr():  # "failed call to cuInit" on a machine without a GPU
        hardware = provenance.devices()
    log.info("device: %s", provenance.describe_device(hardware))
    if deterministic is None:
        deterministic = not hardware["gpus"]
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    hardware["op_determinism"] = bool(deterministic)
    return hardware


def distribution_strategy(gpu_count: int | None = None):
    """MirroredStrategy over every visible GPU when there are several (the config's
    batch_size is then the global batch, split across them), else None."""
    tf = import_tensorflow()
    if gpu_count is None:
        gpu_count = len(tf.config.list_physical_devices("GPU"))
    return tf.distribute.MirroredStrategy() if gpu_count > 1 else None
