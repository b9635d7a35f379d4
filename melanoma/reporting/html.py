"""``index.html``: one self-contained page (tables, every figure as base64 PNG, the audit
summary, provenance) that opens from disk or can be attached to a paper.

Built by ``report.write_run`` from the same rows saved in results.json. Click a column
header to sort (a few lines of inline JavaScript; the page works without it).
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from melanoma.evaluation import degenerate, metric_table
from melanoma.evaluation.metric_table import is_finite
from melanoma.reporting import compact
from melanoma.reporting.galleries import GALLERY_CSS
from melanoma.util import atomic

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1.5em;color:#222;
 max-width:1400px;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#eef;cursor:pointer}td:first-child,th:first-child{text-align:left}
td.undef{color:#a00}figure{display:inline-block;margin:.4em;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:13px}
pre{background:#f6f6f6;padding:.6em;font-size:11px;overflow:auto;max-height:28em;
 white-space:pre-wrap}
.note{font-size:14px;color:#444;max-width:70em}code{background:#f3f3f3;padding:0 .2em}
.warn{font-size:14px;color:#8b0000;max-width:70em}
.scroll{overflow-x:auto;max-width:100%}
.scroll table{margin:0}.scroll td:first-child,.scroll th:first-child{position:sticky;left:0;
 background:#fff;z-index:1}.scroll th:first-child{background:#eef}
details{margin:.3em 0 1.2em}summary{cursor:pointer;font-size:14px}
table.audit td:first-child{white-space:normal;max-width:32em}
"""

SORT_JS = """
window.onerror=function(m){document.body.setAttribute('data-js-error',String(m));};
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  rows.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,
   c=y.cells[i].dataset.v||y.cells[i].textContent,fa=parseFloat(a),fc=parseFloat(c);
   var r=(isNaN(fa)||isNaN(fc))?a.localeCompare(c):fa-fc;return asc?r:-r;});
  rows.forEach(function(r){b.appendChild(r);});});});});
document.body.setAttribute('data-js','ok');
"""

# (column, header) of the HTML table, metric headers from the metric table; CI columns are
# shown as "value [low, high]".
_KEYS = metric_table.headline_keys()
COLUMNS = (
    ("variant", "variant"), ("test_set", "test set"), ("n_test", "n"),
    ("auc", "AUC [95% CI]"), ("auc_delong_p", "DeLong p vs best"),
    *((k, metric_table.column_label(k)) for k in _KEYS[1:4]), ("threshold", "threshold (val)"),
    *((k, metric_table.column_label(k)) for k in _KEYS[4:]),
)


# with several seeds per variant (after AUC): seeds, seed SD and the comparison with the best
SEED_COLUMNS = (("n_seeds", "seeds"), ("auc_sd", "AUC seed SD"),
                ("auc_diff_vs_best", "AUC - best [95% CI]"),
                ("within_training_noise", "within training noise"))


def _noise(row: dict) -> str:
    if row.get("variant") == row.get("delong_reference"):
        return "<td>best</td>"
    flag = row.get("within_training_noise")
    return f"<td>{'n/a' if flag is None else ('yes' if flag else 'no')}</td>"


def _cell(row: dict, key: str) -> str:
    value, why = row.get(key), str(row.get("degenerate_reason") or "")
    if key == "within_training_noise":
        return _noise(row)
    if key == "auc_diff_vs_best":
        row = {**row, "auc_diff_vs_best_ci_low": row.get("auc_diff_ci_low"),
               "auc_diff_vs_best_ci_high": row.get("auc_diff_ci_high")}
    if isinstance(value, str) or key in ("n_test", "n_seeds"):
        return f"<td>{html.escape(str(value))}</td>"
    if key == "auc" and row.get("degenerate"):
        return f'<td class="undef" data-v="" title="{html.escape(why, quote=True)}">' \
               f'{degenerate.CELL}</td>'
    if key == "auc_delong_p" and row.get("variant") == row.get("delong_reference"):
        return '<td data-v="2">reference (best AUC)</td>'
    if not is_finite(value):
        return '<td class="undef" data-v="" title="undefined: see the undefined column">n/a</td>'
    text = f"{value:.3g}" if key == "auc_delong_p" else f"{value:.4f}"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if is_finite(low) and is_finite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return f'<td data-v="{value!r}">{text}</td>'


def _columns(rows: list[dict]) -> tuple:
    if not any((r.get("n_seeds") or 1) > 1 for r in rows):
        return (*COLUMNS, ("training_variance", "training variance"), ("spec", "preprocessing"))
    # no DeLong: the comparison instead
    return (*COLUMNS[:4], *SEED_COLUMNS, *COLUMNS[5:], ("spec", "preprocessing"))


def _table(head: str, body: str, wrapper: str = "") -> str:
    table = (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
             f"</table>")
    return f'<div class="{wrapper}">{table}</div>' if wrapper else table


def results_table(rows: list[dict]) -> str:
    """Every column as a sortable HTML table (with the reasons for undefined values), in a
    box that scrolls sideways on its own with the variant column frozen."""
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns) + "<th>undefined</th>"
    body = "".join(
        "<tr>" + "".join(_cell(r, k) for k, _ in columns)
        + f"<td style='text-align:left'>{html.escape(str(r.get('undefined') or ''))}</td></tr>"
        for r in rows)
    return _table(head, body, "scroll")


def compact_table(rows: list[dict]) -> str:
    """The short table (``compact.columns``: the terminal's), sortable; an undefined value
    says why in its tooltip."""
    columns = compact.columns(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value, text = row.get(key), html.escape(compact.cell(row, key))
            if text in ("n/a", degenerate.CELL):
                why = html.escape(str(row.get("degenerate_reason") if text != "n/a" else
                                      row.get("undefined") or "undefined"), quote=True)
                cells.append(f'<td class="undef" data-v="" title="{why}">{text}</td>')
            else:
                sort = f' data-v="{value!r}"' if is_finite(value) else ""
                cells.append(f"<td{sort}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return _table(head, "".join(body), "scroll")


def results_section(rows: list[dict]) -> str:
    """The short table, then every column behind a <details> (closed)."""
    lines = "".join(f"<p class='{'warn' if line.startswith('DEGENERATE') else 'note'}'>"
                    f"{html.escape(line)}</p>"
                    for line in compact.footer(rows, False).splitlines())
    return (f"{compact_table(rows)}{lines}<details><summary>Every column ({len(_columns(rows)) + 1}): intervals of "
            f"every metric, DeLong p, metrics at argmax and at the threshold, preprocessing"
            f"</summary>{results_table(rows)}</details>")


def embedded_image(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


AUDIT_ROWS = (  # summary key -> what it counts, in reading order
    ("n_by_split", "images per split"),
    ("n_test", "readable test images"),
    ("test_with_duplicate_in_train", "test images with an exact or near duplicate in train"),
    ("test_with_exact_duplicate_in_train", "... of which exact duplicates"),
    ("test_with_duplicate_in_val", "test images with a duplicate in val"),
    ("test_with_same_lesion_in_train_or_val", "test images of a lesion also in train or val"),
    ("test_fraction_affected", "share of test images affected (any of the above)"),
    ("n_test_clean", "clean test images (the 'clean' rows)"),
    ("pairs_total", "duplicate pairs found, all splits"),
    ("cross_split_pairs", "pairs across two splits"),
    ("label_conflict_pairs", "pairs whose two images have different labels"),
    ("n_unreadable", "unreadable images"),
    ("min_corr", "match threshold (band-pass correlation)"),
    ("include_flips", "flipped and rotated copies searched"),
    ("n_grouped", "images grouped by lesion id"),
)


def audit_value(key: str, value) -> str:
    """A summary value as text: ``train 340, val 60, test 200``, yes/no, a percentage."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {audit_value(k, v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "n/a"
    if key == "test_fraction_affected" and is_finite(value):
        return f"{value:.1%}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def audit_section(summary: dict | None) -> str:
    """One sentence, then the audit's counts as a two-column table of plain words."""
    if not summary:
        return "<p class='note'>No leakage audit in this run (evaluation.audit = false).</p>"
    n, clean = summary.get("n_test"), summary.get("n_test_clean")
    lead = ""
    if isinstance(n, int) and isinstance(clean, int) and n:
        lead = (f"<p class='note'>{n - clean} of {n} test images ({(n - clean) / n:.1%}) have "
                f"a duplicate or the same lesion in train or val; the other {clean} form the "
                f"clean test set.</p>")
    items = "".join(f"<tr><td>{html.escape(label)}</td>"
                    f"<td>{html.escape(audit_value(key, summary[key]))}</td></tr>"
                    for key, label in AUDIT_ROWS if key in summary)
    return f"{lead}<table class='audit'>{items}</table>"


def inline_markdown(text: str) -> str:
    """Escaped text with ``code`` spans as <code> (the notes are shared with results.md)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def published_table(published: list[dict] | None) -> str:
    """Published value, reproduced mean [95% interval], seeds and the verdict."""
    if not published:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(p['variant'])}</td><td>{html.escape(p['metric'])}</td>"
        f"<td>{p['published']:.4f}</td>"
        + _cell({"m": p["reproduced"], "m_ci_low": p["ci_low"], "m_ci_high": p["ci_high"]}, "m")
        + f"<td>{p.get('n_seeds', 1)}</td><td>"
        + ("n/a" if p["inside"] is None else ("inside" if p["inside"] else "OUTSIDE"))
        + "</td></tr>" for p in published)
    return ("<h2>Published vs reproduced</h2><table class='sortable'><thead><tr><th>variant</th>"
            "<th>metric</th><th>published</th><th>reproduced [95% CI]</th><th>seeds</th>"
            f"<th>published value</th></tr></thead><tbody>{body}</tbody></table>")


SUMMARY_FIGURES = ("forest_auc.png", "roc.png", "precision_recall.png", "published.png")


def figures_html(figures: list[tuple[Path, str]]) -> tuple[str, str, str]:
    """(summary figures, per-variant figures in a closed <details>, the audit's figure)."""
    shown = [(Path(p), c) for p, c in figures if Path(p).is_file()]
    summary = "".join(embedded_image(p, c) for p, c in shown if p.name in SUMMARY_FIGURES)
    audit = "".join(embedded_image(p, c) for p, c in shown if p.name == "audit_pairs.png")
    rest = [(p, c) for p, c in shown if p.name not in SUMMARY_FIGURES + ("audit_pairs.png",)]
    folded = (f"<details><summary>Per variant: confusion matrices, reliability diagrams, "
              f"training curves ({len(rest)} figures)</summary>"
              f"{''.join(embedded_image(p, c) for p, c in rest)}</details>") if rest else ""
    return summary, folded, audit


def page(title: str, rows: list[dict], figures: list[tuple[Path, str]], audit: dict | None,
         provenance: dict, notes: list[str], published: list[dict] | None = None,
         galleries: str = "") -> str:
    """The whole page as a string; ``galleries``: an HTML fragment (the error galleries).
    Order: notes, results, summary figures, galleries, per-variant figures, audit,
    provenance."""
    note_html = "".join(f"<p class='note'>{inline_markdown(n)}</p>" for n in notes)
    summary, folded, audit_figure = figures_html(figures)
    prov = html.escape(json.dumps(atomic._nan_to_none(provenance), indent=2, default=str))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}{GALLERY_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{note_html}<h2>Results</h2>{results_section(rows)}"
            f"{published_table(published)}<h2>Figures</h2>{summary}{galleries}"
            f"{'<h2>Per-variant figures</h2>' + folded if folded else ''}"
            f"<h2>Leakage audit</h2>{audit_section(audit)}{audit_figure}"
            f"<h2>Provenance</h2><details><summary>config, versions, data and hardware "
            f"(JSON)</summary><pre>{prov}</pre></details><script>{SORT_JS}</script>"
            f"</body></html>")


def write_index(path: Path, *args, **kwargs) -> Path:
    atomic.write_text(path, page(*args, **kwargs))
    return path
