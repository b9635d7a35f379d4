"""The README's Python API section, run as written (in a temporary folder)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def readme_api_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_api_block(), "README.md (Python API)", "exec"), scope)
    result = scope["result"]
    assert isinstance(result.rows, pd.DataFrame) and list(result.rows["variant"]) == [
        "efficient_net_b0_samplewise"]
    assert 0.0 <= result.rows["auc"].iloc[0] <= 1.0
    provenance = result.results["provenance"]
    assert provenance["overrides"] == ["defaults.epochs=1", "defaults.image_size=32",
                                       "data.limit=8"]
    assert provenance["data"]["limit"] == 8
    assert (tmp_path / "reports" / "api-demo" / "index.html").is_file()
    assert len(pd.read_csv(tmp_path / "reports" / "api-demo" / "predictions.csv")) == 16
