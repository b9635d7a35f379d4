"""Reports as pure functions of saved predictions: metrics rows, tables, plots, index.html.

``write_run`` writes results.json/csv/md, predictions.csv (test), val_predictions.csv,
clean_test.csv, the figures and index.html; with several training seeds per variant the
rows give means over seeds, seed SDs and combined intervals (``seeds``). Every metric is recomputed from the saved
predictions, so ``rebuild(run_dir)`` (``melanoma-bench report RUN_DIR``) rewrites every
table, figure and the page without a model or TensorFlow.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.evaluation.metric_table import is_finite
from melanoma.evaluation.rows import EvalSettings
from melanoma.reporting import compact, extras, ownership, same_model, seeds
from melanoma.reporting import figures as plots
from melanoma.reporting import folds as cv_table
from melanoma.reporting import html as html_report
from melanoma.reporting.gallery_section import gallery_section
from melanoma.reporting.saved import (
    PREDICTION_COLUMNS,
    load_run,
    read_predictions,
)
from melanoma.util import atomic, locks
from melanoma.util.names import csv_safe, markdown_cell


def rows_from_predictions(predictions: pd.DataFrame, specs: dict[str, dict],
                          val_predictions: pd.DataFrame | None = None,
                          settings: EvalSettings | None = None,
                          clean_files: set[str] | None = None) -> list[dict]:
    """Results rows (full test set, then the clean subset when ``clean_files`` is given), in
    the order variants first appear in ``predictions``; each row carries its variant's spec."""
    settings = settings or EvalSettings()
    rows, _ = seeds.variant_rows(seeds.with_seed(predictions, settings.seed),
                                 seeds.with_seed(val_predictions, settings.seed), settings,
                                 clean_files)
    _add_specs(rows, specs)
    return rows


def _add_specs(rows: list[dict], specs: dict[str, dict]) -> None:
    for row in rows:  # the published numbers get their own table
        row.update({k: v for k, v in specs.get(row["variant"], {}).items() if k != "published"})


def write_predictions(path: Path, predictions: pd.DataFrame, seed: int = 0) -> None:
    """predictions.csv: variant,seed,file,label,prob_malignant (full float precision); rows
    without a seed get ``seed`` (the run's)."""
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        csv_safe(seeds.with_seed(predictions, seed).loc[:, list(PREDICTION_COLUMNS)]).to_csv(
            handle, index=False, float_format="%.9g")


def write_clean_list(path: Path, test_files, clean_files: set[str]) -> None:
    """clean_test.csv: file,clean (1 = no near-duplicate in train/val) for every test file."""
    files = list(dict.fromkeys(test_files))
    frame = pd.DataFrame({"file": files, "clean": [int(f in clean_files) for f in files]})
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        csv_safe(frame).to_csv(handle, index=False)


def stamp(provenance: dict, n_test: int | None = None) -> str:
    """What the report is of, in one line: date, data set (name, counts, fingerprint),
    config (and its overrides) and commit."""
    data, config = provenance.get("data") or {}, provenance.get("config") or {}
    found = {"train": data.get("n_train"), "val": data.get("n_val"),
             "test": n_test if n_test is not None else data.get("n_test")}
    counts = ", ".join(f"{k} {n}" for k, n in found.items() if n is not None)
    root = Path(str(data.get("root") or "?")).name
    limit = (config.get("data") or {}).get("limit") if isinstance(config.get("data"), dict) \
        else None
    if limit:
        counts += f"; at most {limit} per class and split"
    git = provenance.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:12]
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    overrides = provenance.get("overrides") or config.get("overrides") or []
    given = f" with {', '.join(f'`{o}`' for o in overrides)}" if overrides else ""
    return (f"Date {provenance.get('date', 'unknown')}. Data: `{root}` "
            f"({counts or 'counts not recorded'}; fingerprint "
            f"{data.get('fingerprint') or 'not recorded'}). Config: "
            f"`{config.get('name', '?')}`{given}. Commit {commit}.")


def _introduction(provenance: dict, settings: EvalSettings, rows: list[dict],
                  extra: str = "") -> list[str]:
    """The paragraphs above the tables (results.md and index.html): the stamp, then how to
    read the table."""
    thr = (f"{settings.threshold:g}, the threshold given (every variant)"
           if settings.threshold is not None else f"the threshold chosen by "
           f"{settings.threshold_rule()} (per variant), applied unchanged to test")
    multi = compact.multi_seed(rows)
    clean = ("`clean`: test images with no duplicate (and no image of the same lesion) in "
             "train or val. " if any(r.get("test_set") == "clean" for r in rows) else "")
    full = [r for r in rows if r.get("test_set", "full") == "full"]
    return [stamp(provenance, full[0].get("n_test") if full else None),
            f"Test split. `@argmax`: malignant iff p >= 0.5. `@thr`: malignant iff p >= "
            f"{thr}. AUC is the exact ROC AUC of the malignant column. Intervals: stratified "
            f"bootstrap, {settings.bootstrap_resamples} resamples, seed {settings.seed}, 95% "
            f"percentile. {'' if multi else _DELONG_NOTE}{clean}"
            f"{_class_ratio(provenance).strip()} "
            f"{_SEEDS_NOTE if multi else ''}{extra}".strip()]


def _table_header(provenance: dict, settings: EvalSettings, rows: list[dict],
                  extra: str = "", more: tuple[str, ...] = ()) -> str:
    return (f"# Results: {provenance.get('config', {}).get('name', '')}\n\n"
            + "".join(p + "\n\n" for p in [*_introduction(provenance, settings, rows, extra),
                                               *more]))


_DELONG_NOTE = ("DeLong p: paired test of the row's AUC against the best AUC on the same "
                "test set. ")


CLEAN_IS_FULL = (" Leakage audit: no test image has a duplicate or the same lesion in train "
                 "or val, so the clean test set is the full test set (no separate clean "
                 "rows).")
_SEEDS_NOTE = ("Seeds: with several training seeds a row gives each metric's mean over the "
               "seeds, the seed-to-seed SD and an interval covering both training variance and "
               "test sampling (two-level bootstrap of seeds and test images); `within training "
               "noise`: the interval of the AUC difference to the best mean AUC (paired over "
               "seeds and images) covers 0; thresholded columns are means of the per-seed "
               "values. With one seed, training variance is not measured.")


def _class_ratio(provenance: dict) -> str:
    """' Training images: 1483 benign, 344 malignant (4.31:1).' when the run recorded it."""
    counts = (provenance.get("data") or {}).get("n_train_by_class")
    if not counts or not counts.get("malignant"):
        return ""
    ratio = counts["benign"] / counts["malignant"]
    return (f" Training images: {counts['benign']} benign, {counts['malignant']} malignant "
            f"({ratio:.2f}:1).")


def write_tables(out_dir: Path, rows: list[dict], provenance: dict,
                 settings: EvalSettings | None = None, extra: dict | None = None,
                 note: str = "", more_notes: tuple[str, ...] = ()) -> None:
    """results.json ({"rows", "clean_rows", "evaluation", ..., "provenance"}), results.csv
    (every row, ``test_set`` says which) and results.md (``more_notes``: paragraphs after
    its introduction, as on the page)."""
    settings = settings or EvalSettings()
    full = [r for r in rows if r.get("test_set", "full") == "full"]
    clean = [r for r in rows if r.get("test_set") == "clean"]
    atomic.write_json(out_dir / "results.json", {
        "rows": full, "clean_rows": clean, "evaluation": asdict(settings), **(extra or {}),
        "provenance": provenance})
    with atomic.atomic_open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as h:
        csv_safe(pd.DataFrame(rows)).to_csv(h, index=False, float_format="%.6g")
    published = (extra or {}).get("published")
    md = [{k: markdown_cell(v) for k, v in row.items()} for row in rows]  # names stay cells
    atomic.write_text(out_dir / "results.md", _table_header(provenance, settings, md, note, more_notes)
                      + compact.text_table(md) + "\n\n" + compact.footer(md, terminal=False)
                      + "\n\n## Every column\n\n" + compact.markdown_table(md) + "\n" + (
                          "\n## Published vs reproduced\n\n" + seeds.markdown_published(
                              published) + "\n" if published else ""))


def _curves(predictions: pd.DataFrame) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
    """{variant: [(seed, labels, probabilities), ...]} in order of appearance."""
    out: dict[str, list] = {}
    for (name, seed), g in predictions.groupby(["variant", "seed"], sort=False):
        out.setdefault(name, []).append((int(seed), g["label"].to_numpy(),
                                         g["prob_malignant"].to_numpy()))
    return out


def write_figures(out_dir: Path, predictions: pd.DataFrame, histories: dict[str, dict],
                  rows: list[dict] | None = None, seed_rows: list[dict] | None = None,
                  model_keys: dict | None = None) -> list[tuple[Path, str]]:
    """(path, caption) of: per variant a confusion matrix at argmax and at the threshold and
    a reliability diagram (pooled over seeds); ROC (one thin curve per seed and their mean)
    with AUC intervals, precision-recall, forest plot; training curves. Variants with
    identical predictions (one model under two names) are one curve in ROC and
    precision-recall, labelled with every name; degenerate models are not drawn there."""
    predictions = seeds.with_seed(predictions, 0)
    if rows is None:
        rows = rows_from_predictions(predictions, {})
    full = {r["variant"]: r for r in rows if r.get("test_set", "full") == "full"}
    thresholds = {(r["variant"], r["seed"]): r.get("threshold") for r in seed_rows or ()
                  if r.get("test_set", "full") == "full"}
    curves, written = _curves(predictions), []
    if curves:
        groups = same_model.same_models(predictions)
        hidden = {n for names in groups.values() for n in names[1:]}
        labelled = {name: {**row, "variant": same_model.group_label(
            groups[name], model_keys).replace(" = ", "\n= ")} if name in groups else row
            for name, row in full.items()}
        pairs = {name: [(y, p) for _, y, p in runs] for name, runs in curves.items()
                 if name not in hidden and not full.get(name, {}).get("degenerate")}
        written.append((plots.forest_plot(rows, out_dir / "forest_auc.png"),
                        "AUC with 95% intervals" + (", full and clean test sets" if any(
                            r.get("test_set") == "clean" for r in rows) else "")))
        written.append((plots.roc_with_intervals(pairs, labelled, out_dir / "roc.png"),
                        "ROC curves (legend: AUC [95% CI]; with several seeds one thin curve "
                        "per seed and their vertical mean)"))
        written.append((plots.precision_recall(pairs, labelled,
                                               out_dir / "precision_recall.png"),
                        "Precision-recall curves"))
    for name, runs in curves.items():
        written += _variant_figures(out_dir, name, runs, full[name], thresholds)
    for name, history in histories.items():
        if history:
            file = plots.slug(name.replace(" seed ", "_seed"))  # "v seed 3" -> training_v_seed3
            written.append((plots.training_curves(
                history, name, out_dir / f"training_{file}.png"),
                f"{name}: training curves"))
    return written


def _variant_figures(out_dir: Path, name: str, runs: list, row: dict,
                     thresholds: dict) -> list[tuple[Path, str]]:
    """Confusion matrices and the reliability diagram of one variant, over its seeds pooled."""
    slug, written = plots.slug(name), []
    y, p = np.concatenate([r[1] for r in runs]), np.concatenate([r[2] for r in runs])
    n = len(runs[0][1])
    what = f"n={n}" if len(runs) == 1 else f"n={n} x {len(runs)} seeds, pooled"
    written.append((plots.confusion_matrix(
        y, p, f"{name} (test, {what}) @argmax", out_dir / f"confusion_{slug}.png"),
        f"{name}: confusion matrix at argmax (p >= 0.5)"))
    if len(runs) == 1:
        t = row.get("threshold")
        if is_finite(t):
            written.append((plots.confusion_matrix(
                y, p, f"{name} (test) @threshold {t:.3f} (val)",
                out_dir / f"confusion_{slug}_threshold.png", threshold=t),
                f"{name}: confusion matrix at the validation-chosen threshold {t:.4f}"))
    else:
        ts = [thresholds.get((name, seed)) for seed, _, _ in runs]
        if all(is_finite(t) for t in ts):  # each seed's own threshold, counts pooled
            hits = np.concatenate([(r[2] >= t).astype(float) for r, t in zip(runs, ts)])
            written.append((plots.confusion_matrix(
                y, hits, f"{name} (test, {what}) @each seed's threshold (val)",
                out_dir / f"confusion_{slug}_threshold.png"),
                f"{name}: confusion matrix at each seed's validation-chosen threshold "
                f"(mean {np.mean(ts):.4f}), pooled over {len(runs)} seeds"))
    written.append((plots.reliability_diagram(
        y, p, f"{name} (test, {what})", out_dir / f"reliability_{slug}.png"),
        f"{name}: reliability diagram"))
    return written


def write_run(out_dir: Path, predictions: pd.DataFrame, specs: dict[str, dict],
              histories: dict[str, dict], provenance: dict,
              val_predictions: pd.DataFrame | None = None, settings: EvalSettings | None = None,
              clean_files: set[str] | None = None, audit_summary: dict | None = None,
              options: extras.ReportOptions | None = None) -> list[dict]:
    """Everything a run writes; returns the full-test rows. Saved inputs first, then figures,
    tables last, so the presence of results.json means the report is complete."""
    out_dir = atomic.make_folder(out_dir)
    seed = provenance.get("seed", 0)  # for rows that come without a seed column
    write_predictions(out_dir / "predictions.csv", predictions, seed)
    if val_predictions is not None:
        write_predictions(out_dir / "val_predictions.csv", val_predictions, seed)
    if clean_files is not None:
        write_clean_list(out_dir / "clean_test.csv", predictions["file"], clean_files)
    atomic.write_json(out_dir / "histories.json", histories)
    # Evaluate what was saved (9 significant digits), so `report` rebuilds identical tables.
    predictions = read_predictions(out_dir / "predictions.csv")
    if val_predictions is not None:
        val_predictions = read_predictions(out_dir / "val_predictions.csv")
    return write_report(out_dir, predictions, specs, histories, provenance, val_predictions,
                        settings or EvalSettings(seed=provenance.get("seed", 0)), clean_files,
                        audit_summary, options)


def write_report(out_dir: Path, predictions, specs, histories, provenance, val_predictions,
                 settings: EvalSettings, clean_files, audit_summary,
                 options: extras.ReportOptions | None = None) -> list[dict]:
    """Rows (per variant and ensemble, and per variant and seed), figures, error galleries,
    tables and index.html from predictions (shared by run and rebuild)."""
    options = options or extras.ReportOptions()
    seed = provenance.get("seed", settings.seed)
    predictions, val_predictions, specs = extras.add_ensembles(
        seeds.with_seed(predictions, seed), seeds.with_seed(val_predictions, seed), specs,
        provenance, options)
    clean_note = ""
    if clean_files is not None and set(predictions["file"]) <= set(clean_files):
        clean_files, clean_note = None, CLEAN_IS_FULL  # the clean rows would repeat the full
    rows, per_seed = seeds.variant_rows(predictions, val_predictions, settings, clean_files)
    _add_specs(rows, specs)
    published = seeds.published_rows(rows, specs)
    model_keys = provenance.get("model_keys")
    figures = write_figures(out_dir, predictions, histories, rows, per_seed, model_keys)
    if published:
        figures.append((plots.published_vs_reproduced(published, out_dir / "published.png"),
                        "Published values (x) against the reproduced mean and 95% interval"))
    if (out_dir / "audit_pairs.png").is_file():
        figures.append((out_dir / "audit_pairs.png", "Leakage audit: closest duplicate pairs"))
    _, gallery_html = gallery_section(out_dir, predictions, per_seed, provenance,
                                      extras.gallery_settings(provenance, options), specs)
    title = f"melanoma-bench: {provenance.get('config', {}).get('name', out_dir.name)}"
    same = same_model.notes(same_model.same_models(predictions), model_keys)
    notes = [*_introduction(provenance, settings, rows, clean_note), *same]
    cv = cv_table.summarise(out_dir)  # with cv_val_predictions.csv: the cross-validation table
    html_report.write_index(out_dir / "index.html", title, rows, figures, audit_summary,
                            provenance, notes, published, gallery_html + cv_table.html_section(cv))
    write_tables(out_dir, rows, provenance, settings,
                 {"specs": specs, "audit": audit_summary, "seed_rows": per_seed,
                  **({"published": published} if published else {})}, clean_note, tuple(same))
    cv_table.add_to_report(out_dir, cv)
    return [r for r in rows if r["test_set"] == "full"]


def rebuild(run_dir: Path, out_dir: Path | None = None,
            options: extras.ReportOptions | None = None, overwrite: bool = False) -> list[dict]:
    """Rewrite every table, figure and index.html of ``run_dir`` from its saved files
    (predictions.csv, val_predictions.csv, clean_test.csv, histories.json, results.json,
    audit_summary.json) into ``out_dir`` (default: in place). No model, no TensorFlow.
    Every saved file is checked first (reporting.saved): a damaged one changes nothing.
    Holds ``out_dir``'s lock, as ``run`` does. ``options``: images and saved models for the
    error galleries and Grad-CAM, and more ensembles (``ReportOptions``). An ``out_dir``
    holding another experiment's report is refused unless ``overwrite``."""
    run_dir = Path(run_dir)
    out_dir = atomic.check_room(Path(out_dir or run_dir), "--out folder")
    locks.check_free(run_dir)  # a run still writing there: its files are not final yet
    with locks.hold(out_dir):  # nobody else writes where this writes
        atomic.sweep_stale(out_dir)
        saved = load_run(run_dir)
        if not os.path.samefile(out_dir, run_dir):  # `X --out X/../X` is in place too
            ownership.check_owner(out_dir, ownership.saved_identity(saved.provenance),
                                  overwrite)
            for name in ("predictions.csv", "val_predictions.csv", "clean_test.csv",
                         "histories.json", "audit_summary.json", "audit_pairs.csv",
                         "audit_pairs.png", cv_table.FILE):
                if (run_dir / name).is_file():
                    shutil.copyfile(run_dir / name, out_dir / name)
        return write_report(out_dir, saved.predictions, saved.specs, saved.histories,
                            saved.provenance, saved.val_predictions, saved.settings,
                            saved.clean_files, saved.audit_summary, options)
