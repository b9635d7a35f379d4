"""melanoma-bench: a benchmark and evaluation harness for benign/malignant melanoma
classification (Keras 3, EfficientNet).

The Python API (the same jobs as the ``melanoma-bench`` command line)::

    import melanoma
    result = melanoma.run_benchmark("default", overrides=["defaults.epochs=1"], limit=20)
    result.rows[["variant", "auc", "auc_ci_low", "auc_ci_high"]]
    melanoma.rebuild_report(result.out_dir)

Subpackages: ``config`` (configs, --set overrides), ``data`` (find, decode, split,
preprocess, augment), ``models`` (backbones, factory, training, storage, safe loading),
``evaluation`` (metrics, rows with intervals, model files, audit), ``reporting`` (tables,
figures, HTML; never imports TensorFlow or JAX), ``tuning`` (keras-tuner), ``runs`` (the benchmark
run), ``util`` (atomic writes, locks, names, logging, provenance), ``cli`` (the console
script).

Every Keras backend: ``KERAS_BACKEND=jax`` (or ``torch``) before the first import of Keras;
TensorFlow is the default and is not needed otherwise (melanoma.util.backend).
"""
from melanoma.util import backend as _backend
from melanoma.util import tfsetup as _tfsetup

if _tfsetup.deterministic_requested():  # MELANOMA_DETERMINISTIC=1: before the backend loads
    _backend.use_deterministic_mode()

# after the deterministic-mode switch:
from melanoma.api import RunResult, evaluate_models, load_config, rebuild_report, run_benchmark, tune_head  # noqa: E402,E501

__all__ = ["RunResult", "evaluate_models", "load_config", "rebuild_report", "run_benchmark",
           "tune_head"]
