"""The short results table: one line per (variant, test set) that fits a terminal.

    print(text_table(rows))               # what run, evaluate and report print
    print(text_table(rows, wide=True))    # every column (markdown_table)

Columns: variant, test set (only when there are clean rows), n, AUC [95% CI], sensitivity
and specificity at the validation threshold (at argmax when no row has one), ECE; with
several training seeds also the seed count, the AUC seed SD and whether the row is within
training noise of the best. The metric columns and their labels come from
``metric_table.compact_keys``; the HTML page's first table uses the same columns and cells.
"""
from __future__ import annotations

from tabulate import tabulate

from melanoma.evaluation import degenerate, metric_table
from melanoma.evaluation.metric_table import is_finite, number_text, with_ci_text
from melanoma.reporting import seeds
from melanoma.reporting.seeds import auc_text, noise_text

SEED_COLUMNS = (("n_seeds", "seeds"), ("auc_sd", "AUC seed SD"),
                ("within_training_noise", "within noise"))


def multi_seed(rows: list[dict]) -> bool:
    return any((r.get("n_seeds") or 1) > 1 for r in rows)


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(row key, header) of the short table for these rows."""
    at_threshold = any(is_finite(r.get("threshold")) for r in rows)
    keys = metric_table.compact_keys(at_threshold)
    out = [("variant", "variant")]
    if any(r.get("test_set", "full") != "full" for r in rows):
        out.append(("test_set", "test set"))
    out.append(("n_test", "n"))
    auc_header = "AUC mean [95% CI]" if multi_seed(rows) else "AUC [95% CI]"
    out.append((keys[0], auc_header))
    if multi_seed(rows):
        out += SEED_COLUMNS
    out += [(k, metric_table.column_label(k)) for k in keys[1:]]
    return out


def cell(row: dict, key: str) -> str:
    """The text of one cell: AUC with its interval (3 decimals), other metrics bare."""
    value = row.get(key)
    if key in ("variant", "test_set"):
        return str(value if value is not None else "full")
    if key in ("n_test", "n_seeds"):
        return "n/a" if value is None else str(value)
    if key == "within_training_noise":
        return noise_text(row)
    if row.get("degenerate"):
        return degenerate.CELL if key == "auc" else "-"  # no number of it is a finding
    text = number_text(value, 3)
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if key == "auc" and is_finite(value) and is_finite(low) and is_finite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def text_table(rows: list[dict], wide: bool = False) -> str:
    """The short table in GitHub markdown (``wide``: every column, as results.md's second
    table)."""
    if wide:
        return markdown_table(rows)
    cols = columns(rows)
    return tabulate([[cell(r, k) for k, _ in cols] for r in rows],
                    headers=[h for _, h in cols], tablefmt="github", disable_numparse=True)


def degenerate_lines(rows: list[dict]) -> list[str]:
    """One line per degenerate variant (full test set): why its AUC is not a result."""
    return [f"DEGENERATE {r['variant']}: {r.get('degenerate_reason')}; not a result, left "
            f"out of every comparison"
            for r in rows if r.get("degenerate") and r.get("test_set", "full") == "full"]


def footer(rows: list[dict], terminal: bool = True) -> str:
    """Two short lines under the short table: what the columns are (and, in a terminal,
    how to see the rest)."""
    at = "the validation threshold" if any(is_finite(r.get("threshold")) for r in rows) \
        else "argmax (no validation threshold)"
    seeds = "" if multi_seed(rows) else "Training variance: not measured (one seed). "
    more = "--wide: every column (also in results.md and index.html)." if terminal else ""
    text = (f"sens/spec: at {at}. ECE: expected calibration error (10 bins).\n"
            f"{seeds}{more}").rstrip()
    return "\n".join([text, *degenerate_lines(rows)])


def markdown_table(rows: list[dict]) -> str:
    """The headline table: AUC with its 95% CI and DeLong p vs the best, metrics at argmax and
    at the validation-chosen threshold, each row's preprocessing and whether training variance
    was measured; over several seeds, ``seeds.markdown_seed_table``. The wide table
    (``--wide``); the short one is ``text_table``."""
    if any((r.get("n_seeds") or 1) > 1 for r in rows):
        return seeds.markdown_seed_table(rows)
    headers = ["variant", "test set", "n", "AUC [95% CI]", "DeLong p vs best",
               "accuracy @argmax [95% CI]", "sens @argmax", "spec @argmax", "threshold (val)",
               "sens @thr", "spec @thr", "preprocessing", "training variance"]
    table = []
    for row in rows:
        p = row.get("auc_delong_p")
        p_text = "best" if row.get("variant") == row.get("delong_reference") else (
            f"{p:.3g}" if is_finite(p) else "n/a")
        table.append([row.get("variant"), row.get("test_set", "full"), row.get("n_test"),
                      auc_text(row), p_text, with_ci_text(row, "accuracy"),
                      with_ci_text(row, "sensitivity"), with_ci_text(row, "specificity"),
                      number_text(row.get("threshold")), with_ci_text(row, "thr_sensitivity"),
                      with_ci_text(row, "thr_specificity"), row.get("spec", ""),
                      row.get("training_variance", seeds.NOT_MEASURED)])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
