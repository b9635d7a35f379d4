"""The one Keras-backend set-up every command that trains or predicts goes through.

    KERAS_BACKEND=jax melanoma-bench run          # tensorflow (the default), jax or torch

Logs one line naming the backend and the device, makes CPU runs repeatable where the
backend allows it, and returns what it found for the results' provenance (backend and its
version, CPU, GPUs, determinism settings). TensorFlow specifics (op determinism, oneDNN,
thread pools, MirroredStrategy) live in :mod:`melanoma.util.tfsetup` and are imported only
when Keras runs on TensorFlow: the library imports and runs without TensorFlow installed.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os

from melanoma.util import provenance, tfsetup

log = logging.getLogger(__name__)

BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
JAX_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def name() -> str:
    """The Keras backend of this process: ``tensorflow``, ``jax`` or ``torch`` (importing
    Keras fixes it from ``KERAS_BACKEND``)."""
    import keras

    return keras.backend.backend()


def quiet_import() -> None:
    """Import the backend, TensorFlow's C++ start-up lines (absl, oneDNN) kept off the
    terminal."""
    if is_tensorflow():
        tfsetup.import_tensorflow()


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def version() -> str:
    """The backend package's version (``jax`` 0.10.2, ``tensorflow`` 2.21.0, ...)."""
    return getattr(importlib.import_module(BACKEND_PACKAGES.get(name(), name())),
                   "__version__", "unknown")


def use_deterministic_mode() -> None:
    """Deterministic mode for whichever backend will load (before it loads): TensorFlow's
    kernel settings (:func:`tfsetup.use_deterministic_mode`) and, for JAX on a GPU, XLA's
    deterministic GPU reductions. Does not import a backend."""
    tfsetup.use_deterministic_mode()
    flags = os.environ.get("XLA_FLAGS", "")
    if JAX_DETERMINISTIC_FLAG.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {JAX_DETERMINISTIC_FLAG}".strip()


def devices() -> dict[str, object]:
    """CPU, core count and the GPUs the backend sees, with the backend and its version."""
    backend = name()
    with tfsetup.quiet_stderr():  # "failed call to cuInit" on a machine without a GPU
        gpus = _gpus(backend)
    return {"backend": backend, "backend_version": version(), "cpu": provenance.cpu_name(),
            "cpu_count": os.cpu_count(), "gpus": gpus}


def _gpus(backend: str) -> list[str]:
    if backend == "tensorflow":
        tf = tfsetup.import_tensorflow()
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def configure(deterministic: bool | None = None) -> dict:
    """Set up the backend; returns the hardware block of the provenance.

    ``deterministic``: repeatable kernels (default: on a CPU yes, on a GPU no, where it costs
    speed; always in deterministic mode, ``MELANOMA_DETERMINISTIC=1``). TensorFlow: op
    determinism (and, in the mode, fixed threads and oneDNN settings). JAX: XLA on a CPU
    repeats itself; on a GPU the mode sets ``--xla_gpu_deterministic_ops``. PyTorch:
    ``torch.use_deterministic_algorithms`` and, in the mode, fixed thread counts."""
    mode = tfsetup.deterministic_requested()
    if mode:  # the CLI sets it before the backend starts; here for the Python API
        use_deterministic_mode()
    hardware = devices()
    log.info("device: %s", describe(hardware))
    if is_tensorflow():
        return {**hardware, **tfsetup.configure(deterministic, hardware["gpus"])}
    if deterministic is None:
        deterministic = mode or not hardware["gpus"]
    hardware["op_determinism"] = bool(deterministic)
    hardware["kernels"] = _kernel_settings(hardware["backend"], bool(deterministic), mode)
    return hardware


def _kernel_settings(backend: str, deterministic: bool, mode: bool) -> dict:
    """What decides which kernels ran, for results.json (the TensorFlow version is
    :func:`tfsetup.kernel_settings`)."""
    settings = {"deterministic_mode": mode}
    if backend == "jax":
        settings["XLA_FLAGS"] = os.environ.get("XLA_FLAGS")
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        if mode:
            torch.set_num_threads(tfsetup.THREADS)
        settings["intra_op_threads"] = torch.get_num_threads()
    return settings


def describe(info: dict) -> str:
    """One line for the start of a run: which backend trains on which device."""
    return f"Keras on {info.get('backend', name())}; {provenance.describe_device(info)}"


def gpu_count() -> int:
    with tfsetup.quiet_stderr():
        return len(_gpus(name()))


def distribution(count: int | None = None):
    """Data parallelism over every visible GPU when there are several (the config's
    batch_size is then the global batch, split across them), else None. The object has a
    ``scope()``: TensorFlow's MirroredStrategy, or Keras' ``DataParallel`` on JAX. PyTorch:
    None (Keras 3 has no multi-GPU data parallelism for it; one GPU is used)."""
    count = gpu_count() if count is None else count
    if count < 2:
        return None
    backend = name()
    if backend == "tensorflow":
        return tfsetup.distribution_strategy(count)
    if backend == "jax":
        return data_parallel()
    log.warning("%d GPUs visible but Keras on %s trains on one: data parallelism needs the "
                "jax or tensorflow backend", count, backend)
    return None


def data_parallel(device_type: str | None = None):
    """Keras' ``DataParallel`` over every device of ``device_type`` (default: the backend's
    accelerators, else its CPU devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
    makes N of them, for tests)."""
    import keras

    found = keras.distribution.list_devices(device_type)
    return keras.distribution.DataParallel(devices=found)


def tuner_strategy(strategy):
    """What keras-tuner's ``distribution_strategy`` takes: a TensorFlow strategy as is;
    Keras' ``DataParallel`` (JAX) is not one, so it is set for the whole process instead
    and the tuner gets None. Logs the split."""
    if strategy is None:
        return None
    log.info("data parallel over %d devices (batch_size is the global batch)", replicas(strategy))
    if hasattr(strategy, "extended"):  # a tf.distribute.Strategy
        return strategy
    import keras

    keras.distribution.set_distribution(strategy)
    return None


def scope(strategy):
    """``strategy.scope()``, or a no-op context without one."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replicas(strategy) -> int:
    """How many devices ``strategy`` splits each batch across."""
    if strategy is None:
        return 1
    if hasattr(strategy, "num_replicas_in_sync"):
        return int(strategy.num_replicas_in_sync)
    return int(strategy.device_mesh.shape[0])
