"""The Python API: the same jobs as ``melanoma-bench``, with explicit inputs and outputs.

    import melanoma
    result = melanoma.run_benchmark("default", overrides=["defaults.epochs=1"], limit=20,
                                    out_dir="reports/smoke", models_dir="models")
    result.rows[["variant", "auc", "auc_ci_low", "auc_ci_high"]]

A config is a path to a TOML/YAML file, the name of a shipped config (``default``,
``paper``, ``bench``, ``tune``, ``isic2017``), a dict in the file's shape, or a
:class:`melanoma.config.RunConfig`. Progress is logged through ``logging`` (logger
``melanoma``); nothing is printed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from melanoma import config as config_mod


@dataclass(frozen=True)
class RunResult:
    """What a run, an evaluation or a rebuilt report produced."""

    out_dir: Path
    rows: pd.DataFrame  # one row per variant on the full test set (every metric and interval)

    @property
    def results(self) -> dict:
        """The saved ``results.json`` (rows, clean rows, specs, provenance)."""
        return json.loads((self.out_dir / "results.json").read_text(encoding="utf-8"))


def load_config(source, overrides=(), *, seed: int | None = None,
                limit: int | None = None) -> config_mod.RunConfig:
    """A validated RunConfig from a path, a shipped config's name, a dict or a RunConfig,
    with ``--set``-style ``overrides`` (``"defaults.epochs=2"``), ``seed`` and ``limit``.
    ``seed`` (``--seed N``) means one seed N: it sets ``seed`` and, in a config that lists
    ``seeds``, replaces that list with ``[N]``."""
    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={int(seed)}")
    if limit is not None:
        extra.append(f"data.limit={int(limit)}")
    if isinstance(source, config_mod.RunConfig):
        if extra:
            from melanoma.util.errors import UserError

            raise UserError("overrides, seed and limit apply to a config file, name or dict; "
                            "use dataclasses.replace on a RunConfig")
        return source
    cfg = _read(source, extra)
    if seed is not None and cfg.seeds is not None and cfg.seeds != (int(seed),):
        cfg = _read(source, [*extra, f"seeds=[{int(seed)}]"])
    return cfg


def _read(source, overrides: list[str]) -> config_mod.RunConfig:
    if isinstance(source, dict):
        return config_mod.from_dict(source, overrides=overrides)
    return config_mod.load(source, overrides=overrides)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def run_benchmark(config="default", *, overrides=(), seed: int | None = None,
                  limit: int | None = None, data_dir=None, out_dir=None, models_dir="models",
                  retrain: bool = False, strict: bool = False,
                  variants: list[str] | None = None,
                  shard: tuple[int, int] | None = None, overwrite: bool = False) -> RunResult:
    """Train or load every variant and write the report (``melanoma-bench run``); with
    ``shard=(I, N)`` only that slice of the jobs is trained (``rows`` is empty while other
    processes still train the rest). ``overwrite``: replace a report of another config,
    data set or limit in ``out_dir`` (else refused)."""
    from melanoma.runs import benchmark

    cfg = config_mod.select_variants(load_config(config, overrides, seed=seed, limit=limit),
                                     variants)
    out = Path(out_dir or Path("reports") / cfg.name)
    rows = benchmark.run_benchmark(cfg, data_dir=Path(data_dir) if data_dir else None,
                                   out_dir=out, models_dir=Path(models_dir), retrain=retrain,
                                   strict=strict, shard=shard, overwrite=overwrite)
    return RunResult(out, _frame(rows))


def rebuild_report(run_dir, out_dir=None) -> RunResult:
    """Rewrite every table, figure and index.html from a run's saved predictions
    (``melanoma-bench report``); needs no model and no TensorFlow."""
    from melanoma.reporting.run_report import rebuild

    out = Path(out_dir or run_dir)
    return RunResult(out, _frame(rebuild(Path(run_dir), out)))


def evaluate_models(model_files, data_dir, out_dir="reports/evaluate", **options) -> RunResult:
    """Evaluate existing model files (``.keras``, tf.keras ``.h5``, SavedModel) on a data
    folder (``melanoma-bench evaluate``); ``options`` as
    :class:`melanoma.runs.model_files.EvalOptions` plus ``names``."""
    from melanoma.runs import model_files as evaluation  # not the argument's name

    rows, failures = evaluation.evaluate_models([Path(m) for m in model_files],
                                                 Path(data_dir), Path(out_dir), **options)
    if failures and not rows:
        from melanoma.util.errors import UserError

        raise UserError("; ".join(line for _, line in failures))
    return RunResult(Path(out_dir), _frame(rows))


def tune_head(config="tune", *, overrides=(), data_dir=None, out_dir=None,
              restart: bool = False) -> dict:
    """Search head units, dropout and learning rate with keras-tuner
    (``melanoma-bench tune``); returns {"rows": trials, "best": the best trial}."""
    from melanoma.tuning.search import run_tuning

    return run_tuning(load_config(config, overrides), data_dir=data_dir, out_dir=out_dir,
                      restart=restart)
