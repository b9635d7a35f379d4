"""nvidia-smi's GPU utilization, sampled in a background process while a measurement runs.

Shared by gpu_run.py and gpu_keras_jax.py, which run as scripts from this folder
(``python benchmarks/gpu_run.py``), so they import it as ``gpu_sampler``.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import threading


class GpuSampler:
    """utilization.gpu every ``interval_ms`` from construction to stop(); on a machine
    without nvidia-smi it samples nothing and stop() says so."""

    def __init__(self, interval_ms: int = 200):
        self.values: list[int] = []
        smi = shutil.which("nvidia-smi")
        self.proc = None if smi is None else subprocess.Popen(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-lms", str(interval_ms)], stdout=subprocess.PIPE, text=True)
        if self.proc:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.values.append(int(line.strip()))

    def stop(self) -> dict:
        """``mean_util_pct`` and ``median_util_pct`` (None without samples), ``samples``."""
        if self.proc is None:
            return {"mean_util_pct": None, "samples": 0, "note": "nvidia-smi not found"}
        self.proc.terminate()
        self.proc.wait(5)
        vals = self.values
        return {"mean_util_pct": round(statistics.fmean(vals), 1) if vals else None,
                "median_util_pct": statistics.median(vals) if vals else None,
                "samples": len(vals)}
