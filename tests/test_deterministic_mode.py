"""Deterministic mode (docs/determinism.md): `--deterministic` / MELANOMA_DETERMINISTIC=1 fix
oneDNN's settings and the thread counts before TensorFlow loads, record them in results.json,
and refuse, with one line, when TensorFlow was already loaded with other settings. Each check
runs in a fresh interpreter: the settings only act at TensorFlow's import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODE_KEYS = ("MELANOMA_DETERMINISTIC", "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")

PROBE = """
import json, melanoma
from melanoma.util import tfsetup
hardware = tfsetup.configure()
print(json.dumps({"kernels": hardware["kernels"], "op": hardware["op_determinism"]}))
"""


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in MODE_KEYS}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=300)


def test_the_mode_fixes_kernels_and_threads_before_tensorflow_loads():
    on = _python(PROBE, MELANOMA_DETERMINISTIC="1")
    assert on.returncode == 0, on.stderr[-2000:]
    found = json.loads(on.stdout.splitlines()[-1])
    kernels = found["kernels"]
    assert kernels["deterministic_mode"] is True and found["op"] is True
    assert kernels["TF_ENABLE_ONEDNN_OPTS"] == "0" and kernels["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert kernels["intra_op_threads"] == 2 and kernels["inter_op_threads"] == 2
    assert kernels["onednn_enabled"] in (False, None)  # None: a build without the probe

    off = json.loads(_python(PROBE).stdout.splitlines()[-1])["kernels"]
    assert off["deterministic_mode"] is False and off["TF_ENABLE_ONEDNN_OPTS"] is None
    assert off["intra_op_threads"] == "default"


def test_a_variable_the_user_set_is_kept_and_recorded():
    found = _python(PROBE, MELANOMA_DETERMINISTIC="1", ONEDNN_MAX_CPU_ISA="AVX512_CORE")
    kernels = json.loads(found.stdout.splitlines()[-1])["kernels"]
    assert kernels["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE" and kernels["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_too_late_is_one_clear_error_not_a_silent_no_op():
    late = _python("import tensorflow\nfrom melanoma.util import tfsetup\n"
                   "tfsetup.use_deterministic_mode()")
    assert late.returncode != 0
    assert "UserError: deterministic mode must be chosen before TensorFlow is imported" \
        in late.stderr


def _cli_run(tmp_path: Path, tag: str, cores: set[int] | None = None) -> Path:
    out = tmp_path / f"out-{tag}"
    args = ["--deterministic", "run", "--config", str(tmp_path / "c.toml"), "--out", str(out),
            "--models-dir", str(tmp_path / f"models-{tag}")]
    pin = f"import os; os.sched_setaffinity(0, {sorted(cores)!r}); " if cores else ""
    done = _python(pin + "import sys; from melanoma.cli.main import main; "
                   f"sys.exit(main({args!r}))", MELANOMA_DATA_CACHE=str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_deterministic_runs_are_bitwise_equal_on_one_machine_whatever_its_core_count(
        tmp_path, four_job_config):
    # The one guarantee the mode makes (same machine, versions, config and seed), so the
    # comparison is exact; across machines it promises nothing (docs/determinism.md).
    (tmp_path / "c.toml").write_text(four_job_config.replace("seeds = [5, 6]", "seeds = [5]"))
    first, second = _cli_run(tmp_path, "a"), _cli_run(tmp_path, "b")
    assert (first / "predictions.csv").read_bytes() == (second / "predictions.csv").read_bytes()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # one core visible: without the mode TF would use 1 thread (other sums)
        one_core = _cli_run(tmp_path, "one-core", {cores[0]})
        assert (one_core / "predictions.csv").read_bytes() == \
            (first / "predictions.csv").read_bytes()
    kernels = json.loads((first / "results.json").read_text())["provenance"]["hardware"]["kernels"]
    assert kernels["deterministic_mode"] is True and kernels["intra_op_threads"] == 2
