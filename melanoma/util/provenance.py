"""Where a result came from: config, seed, versions, git commit, date, hardware."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "keras", "keras-tuner",
            "numpy", "scikit-learn", "pandas", "matplotlib", "pillow")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(path: Path | None = None) -> dict[str, object]:
    """HEAD commit of the project checkout and whether it had local changes."""
    where = Path(path or Path(__file__).resolve().parent.parent)

    def git(*args):
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def cpu_name() -> str:
    """The CPU model as the kernel reports it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(info: dict) -> str:
    """One line for the start of a run: which device trains."""
    if info["gpus"]:
        return f"GPU: {', '.join(info['gpus'])}"
    return f"CPU: {info['cpu']} ({info['cpu_count']} cores); no GPU visible"


def collect(config: dict, seed: int, hardware: dict, extra: dict | None = None) -> dict:
    """The provenance block stored in every results.json; ``hardware`` is what
    ``melanoma.util.backend.configure`` returned (it names the Keras backend and version)."""
    return {
        "config": config,
        "seed": seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "versions": {"python": platform.python_version(), **package_versions()},
        "platform": platform.platform(),
        "hardware": hardware,
        **(extra or {}),
    }
