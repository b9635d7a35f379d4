"""TensorFlow's part of the backend set-up (melanoma/util/backend.py is the entry point).

Silences TensorFlow's start-up noise, makes CPU runs repeatable (op determinism, and in
deterministic mode fixed threads and oneDNN settings), and returns those settings for the
results' provenance. Imports TensorFlow only when a function here is called.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager

from melanoma.util.errors import UserError

log = logging.getLogger(__name__)


# Deterministic mode (docs/determinism.md): the CPU-dependent choices that make two machines of
# the same kind and versions train differently, fixed. Environment variables are read when
# TensorFlow is imported and when oneDNN generates its first kernel, so they are set before.
MODE_VARIABLE = "MELANOMA_DETERMINISTIC"
KERNEL_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0",  # the same TF kernels whatever the CPU's default
              "ONEDNN_MAX_CPU_ISA": "AVX2"}  # the same sgemm code on every AVX2-or-newer CPU
THREADS = 2  # intra- and inter-op: a fixed count, not the core count (block sizes depend on it)


def deterministic_requested() -> bool:
    return os.environ.get(MODE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def use_deterministic_mode() -> None:
    """Switch the process into deterministic mode; call before TensorFlow is imported (the CLI's
    ``--deterministic`` and ``MELANOMA_DETERMINISTIC=1`` do). A variable the user set keeps
    its value (and is recorded). Raises UserError when TensorFlow is already imported with
    other kernel settings: the mode could not take effect."""
    if "tensorflow" in sys.modules:
        unset = [k for k in KERNEL_ENV if k not in os.environ]
        if unset:
            raise UserError("deterministic mode must be chosen before TensorFlow is imported "
                            f"({', '.join(unset)} unset): set {MODE_VARIABLE}=1 in the "
                            "environment or call use_deterministic_mode() first")
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)
    os.environ[MODE_VARIABLE] = "1"


def quiet_tensorflow_logs() -> None:
    """Before TensorFlow is imported: hide its C++ log lines (INFO to ERROR: CUDA stubs on a
    CPU machine, oneDNN notices); Python exceptions still surface. Set TF_CPP_MIN_LOG_LEVEL=0
    yourself to see them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # distributed tuning's gRPC notices


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


def configure(deterministic: bool | None = None, gpus: list | None = None) -> dict:
    """Import and configure TensorFlow; returns its determinism and kernel settings for
    provenance (``op_determinism``, ``kernels``). ``melanoma.util.backend.configure`` is the
    entry point on every backend; this is its TensorFlow part.

    ``deterministic``: enable op determinism (default: on CPU yes, on GPU no, where it costs
    speed and turns automatic XLA off; always in deterministic mode, which also fixes the
    thread counts and the oneDNN settings, see ``use_deterministic_mode``). ``gpus``: the
    GPUs found (default: asked of TensorFlow)."""
    mode = deterministic_requested()
    if mode:
        use_deterministic_mode()
    tf = import_tensorflow()
    if mode:
        _fix_threads(tf)
    tf.get_logger().setLevel("ERROR")  # retracing notices for each new model are noise here
    if gpus is None:
        with quiet_stderr():  # "failed call to cuInit" on a machine without a GPU
            gpus = tf.config.list_physical_devices("GPU")
    if deterministic is None:
        deterministic = mode or not gpus
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return {"op_determinism": bool(deterministic), "kernels": kernel_settings(tf, mode)}


def _fix_threads(tf) -> None:
    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) \
            == (THREADS, THREADS):
        return
    try:
        threading.set_intra_op_parallelism_threads(THREADS)
        threading.set_inter_op_parallelism_threads(THREADS)
    except RuntimeError as error:  # TensorFlow's runtime already started in this process
        raise UserError("deterministic mode must be chosen before TensorFlow runs its first op "
                        f"({error})") from None


def kernel_settings(tf, mode: bool) -> dict:
    """What decides which CPU kernels ran (they change the numbers): recorded in results.json."""
    threading = tf.config.threading
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a build without the probe
        onednn = None
    return {"deterministic_mode": mode,
            **{key: os.environ.get(key) for key in KERNEL_ENV},
            "onednn_enabled": onednn,
            "intra_op_threads": threading.get_intra_op_parallelism_threads() or "default",
            "inter_op_threads": threading.get_inter_op_parallelism_threads() or "default"}


def distribution_strategy(gpu_count: int | None = None):
    """MirroredStrategy over every visible GPU when there are several (the config's
    batch_size is then the global batch, split across them), else None."""
    tf = import_tensorflow()
    if gpu_count is None:
        gpu_count = len(tf.config.list_physical_devices("GPU"))
    return tf.distribute.MirroredStrategy() if gpu_count > 1 else None

