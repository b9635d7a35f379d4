"""The perf suite's bookkeeping (no timing here: `melanoma-bench perf` measures)."""
from __future__ import annotations

import json

from benchmarks import perf


def test_alternate_interleaves_the_two_sides():
    calls = []
    rates = perf.alternate({"a": lambda: calls.append("a") or 1.0,
                            "b": lambda: calls.append("b") or 2.0}, rounds=3)
    assert calls == ["a", "b"] * 3
    assert rates == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_report_states_targets_and_which_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(perf.provenance, "devices",
                        lambda: {"cpu": "test cpu", "cpu_count": 2, "gpus": []})
    figures = [perf.Figure("P1", "pipeline", 5.0, "x", ">= 4", True),
               perf.Figure("P2", "feed", 0.9, "x", ">= 0.95", False),
               perf.Figure("P4", "main job", None, "min", "<= 5 min", None, {"reason": "skip"})]
    perf.write_report(tmp_path, figures, {"load_average_before": (1.0, 1.0, 1.0),
                                          "load_average_after": (2.0, 2.0, 2.0)})
    md = (tmp_path / "perf.md").read_text()
    assert "| P1 " in md and ">= 4" in md and "holds" in md and "MISSED" in md
    assert "skipped" in md and "Targets held: P1; missed: P2." in md
    assert "test cpu (2 cores)" in md
    saved = json.loads((tmp_path / "perf.json").read_text())
    assert [f["verdict"] for f in saved["figures"]] == ["holds", "MISSED", "skipped"]
    assert saved["provenance"]["git"]["commit"]
