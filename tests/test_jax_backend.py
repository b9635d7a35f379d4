"""The second backend cannot rot: ``melanoma-bench run`` end to end with ``KERAS_BACKEND=jax``
(a subprocess: this process runs Keras on TensorFlow), one tiny variant, one epoch. The
backbone is MobileNet, which JAX compiles in about half B0's time on a CPU; EfficientNet-B0
on JAX (Grad-CAM, .h5 and .keras files, DataParallel) is tests/test_backends.py (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_run_end_to_end_on_jax(tmp_path):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
           "MELANOMA_DATA_CACHE": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "melanoma.cli.main", "run", "--set", "defaults.epochs=1",
         "--limit", "8", "--set", "defaults.image_size=32", "--set", "defaults.backbone=MobileNet", "--variant",
         "efficient_net_b0_samplewise", "--set", "report.gradcam=false",  # Grad-CAM on JAX:
         "--out", str(tmp_path / "out"),                                    # test_backends.py
         "--models-dir", str(tmp_path / "models")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]
    assert info["hardware"]["backend"] == "jax"
    assert info["hardware"]["backend_version"] and "Keras on jax" in done.stderr
    assert (tmp_path / "out" / "index.html").is_file()
    assert (tmp_path / "out" / "roc.png").is_file()
    assert len(list((tmp_path / "models").glob("*.keras"))) == 1
