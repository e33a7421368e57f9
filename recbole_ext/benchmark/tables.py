"""Paper-style tables built from stored run records only.

- :func:`comparison_table`: the layout of the paper's Table 2 — one section per method group
  (the registry's groups: Traditional, Generative, Reasoning), datasets as column groups,
  R@5 R@10 N@5 N@10 (``recbole_ext.metrics``), mean ± std over seeds, best **bold**, second
  underlined per column (compared at the displayed precision, ties share the style), markers
  for significant improvements (paired t-test per user, see ``stats.py``) and an "Improv." row
  relative to the reference method (``TableSpec.reference``).
- :func:`efficiency_table`: time per user, reasoning steps, invalid rate, tool shares.
- :func:`significance_table`: every paired test with its p-values.
- :func:`write_table`: one table as Markdown, LaTeX and CSV.

``report.build_tables`` writes all of them, and the plots, for an output directory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from recbole_ext.atomic import atomic_write_text
from recbole_ext.benchmark.collect import GROUP_ORDER, Entry
from recbole_ext.benchmark.measures import ms_per_user, number, reasoning_steps, train_s_per_epoch
from recbole_ext.benchmark.stats import Comparison, Summary, compare_all, mean_std, summarize
from recbole_ext.benchmark.tablemodel import BEST, SECOND, Cell, Row, Section, Table, to_csv, to_latex, to_markdown
from recbole_ext.metrics import METRIC_KEYS, METRIC_LABELS, PRIMARY_METRIC

logger = logging.getLogger(__name__)

MARK_REFERENCE, MARK_BASELINE = "†", "‡"


@dataclass
class TableSpec:
    """How to tabulate a suite (the ``table:`` section of a suite YAML)."""

    #: Metrics (RecBole keys) shown as columns, in order.
    metrics: list[str] = field(default_factory=lambda: list(METRIC_KEYS))
    #: Reference method (a row label) of the "Improv." row and of the † significance marker;
    #: ``None``: neither. The default is the paper's reference; a suite's ``table.reference`` replaces it.
    reference: str | None = "TIGER"
    #: Whose improvement the "Improv." row shows: "best" (best non-reference row) or a label.
    improv_of: str = "best"
    #: Dataset column order (default: the suite's datasets, else alphabetical).
    datasets: list[str] = field(default_factory=list)
    #: Significance level of the markers.
    alpha: float = 0.05
    #: Decimal digits.
    digits: int = 4
    #: Title of the comparison table.
    title: str = "Overall performance (test)"
    #: Write the efficiency table.
    efficiency: bool = True
    #: Plots to draw: any of "reasoning_length", "frontier".
    plots: list[str] = field(default_factory=lambda: ["reasoning_length", "frontier"])

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TableSpec:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown table keys {unknown}; known: {cls.keys()}")
        return cls(**data)


def _sorted_labels(entries: Sequence[Entry]) -> list[tuple[str, list[str]]]:
    """``[(group, [labels...])]`` in display order."""
    first: dict[str, Entry] = {}
    for e in entries:
        if e.label not in first or e.order < first[e.label].order:
            first[e.label] = e
    groups: dict[str, list[str]] = {}
    for label, e in sorted(first.items(), key=lambda kv: (kv[1].order, kv[0])):
        groups.setdefault(e.group, []).append(label)

    def gkey(g: str) -> tuple[int, str]:
        return (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)

    return [(g, groups[g]) for g in sorted(groups, key=gkey)]


def _datasets(entries: Sequence[Entry], spec: TableSpec) -> list[str]:
    present = {e.dataset for e in entries}
    ordered = [d for d in spec.datasets if d in present]
    return ordered + sorted(present - set(ordered))


def _style_columns(rows: list[Row], digits: int) -> None:
    """Bold the best and underline the second-best value of every column."""
    if not rows:
        return
    for j in range(len(rows[0].cells)):
        vals = sorted({round(r.cells[j].value, digits) for r in rows
                       if r.cells[j].value is not None and math.isfinite(r.cells[j].value)},
                      reverse=True)
        for r in rows:
            c = r.cells[j]
            if c.value is None or not math.isfinite(c.value):
                continue
            v = round(c.value, digits)
            if vals and v == vals[0]:
                c.style = BEST
            elif len(vals) > 1 and v == vals[1]:
                c.style = SECOND


def _sig_marks(comparisons: Sequence[Comparison], alpha: float
               ) -> dict[tuple[str, str, str], str]:
    """``(label, dataset, metric) -> markers`` for significant *improvements*."""
    marks: dict[tuple[str, str, str], str] = {}
    for c in comparisons:
        r = c.result
        if not (r.p_ttest < alpha and r.mean_diff > 0):
            continue
        mark = MARK_REFERENCE if c.kind == "reference" else MARK_BASELINE
        key = (c.label, c.dataset, c.metric)
        if mark not in marks.get(key, ""):
            marks[key] = "".join(sorted(marks.get(key, "") + mark))
    return marks


def comparison_table(entries: Sequence[Entry], spec: TableSpec | None = None,
                     comparisons: Sequence[Comparison] | None = None) -> Table:
    """The paper's Table 2 layout from entries (one per record/stage and seed)."""
    spec = spec or TableSpec()
    summary = summarize(entries, spec.metrics)
    datasets = _datasets(entries, spec)
    if comparisons is None:
        comparisons = compare_all(entries, spec.reference, spec.metrics)
    marks = _sig_marks(comparisons, spec.alpha)
    cols = [METRIC_LABELS.get(m, m) for m in spec.metrics]
    sections: list[Section] = []
    all_rows: list[Row] = []
    for group, labels in _sorted_labels(entries):
        sec = Section(group)
        for label in labels:
            cells = []
            for ds in datasets:
                for m in spec.metrics:
                    s = summary.get((label, ds), {}).get(m)
                    if s is None or s.n == 0:
                        cells.append(Cell())
                    else:
                        cells.append(Cell(s.mean, s.std, s.n, marks=marks.get((label, ds, m), "")))
            sec.rows.append(Row(label, cells))
        all_rows += sec.rows
        sections.append(sec)
    _style_columns(all_rows, spec.digits)
    footer = []
    improv = _improv_row(summary, datasets, spec)
    if improv is not None:
        footer.append(improv)
    notes = _comparison_notes(entries, spec, comparisons)
    return Table(spec.title, "Method", [(ds, list(cols)) for ds in datasets], sections,
                 notes=notes, digits=spec.digits, footer=footer)


def _improv_row(summary: Mapping[tuple[str, str], Mapping[str, Summary]],
                datasets: Sequence[str], spec: TableSpec) -> Row | None:
    ref = spec.reference
    if not ref or not any((ref, ds) in summary for ds in datasets):
        return None
    cells = []
    for ds in datasets:
        for m in spec.metrics:
            base = summary.get((ref, ds), {}).get(m)
            if spec.improv_of == "best":
                cands = [s[m].mean for (lab, d), s in summary.items()
                         if d == ds and lab != ref and m in s and s[m].n]
                target = max(cands) if cands else None
            else:
                t = summary.get((spec.improv_of, ds), {}).get(m)
                target = t.mean if t is not None and t.n else None
            if base is None or not base.n or target is None or base.mean == 0:
                cells.append(Cell(text="–"))
                continue
            pct = (target - base.mean) / base.mean * 100.0
            cells.append(Cell(value=pct, text=f"{pct:+.2f}%"))
    return Row("Improv.", cells)


def _comparison_notes(entries: Sequence[Entry], spec: TableSpec,
                      comparisons: Sequence[Comparison]) -> list[str]:
    seeds = sorted({e.seed for e in entries if e.seed is not None})
    notes = [f"Test metrics (seeds {seeds}); mean ± sample std where a method ran with "
             "several seeds. Bold: best; underlined: second best (per column)."]
    if spec.reference and any(e.label == spec.reference for e in entries):
        what = "the best other method" if spec.improv_of == "best" else spec.improv_of
        notes.append(f"Improv.: relative improvement of {what} over {spec.reference}.")
    if _sig_marks(comparisons, spec.alpha):
        notes.append(f"{MARK_REFERENCE}/{MARK_BASELINE}: significant improvement over "
                     f"{spec.reference} / the best traditional baseline (two-sided paired "
                     f"t-test over users, seeds averaged per user, p < {spec.alpha}).")
    return notes + semantic_id_notes(entries)


def semantic_id_notes(entries: Sequence[Entry]) -> list[str]:
    """One note per dataset whose generative rows used more than one semantic-ID table (the
    records' ``extra.sid.table_sha256``): the rows outside the most common table are named."""
    tables: dict[str, dict[str, set[str]]] = {}  # dataset -> digest -> labels
    for e in entries:
        sid = e.extra.get("sid")
        digest = sid.get("table_sha256") if isinstance(sid, Mapping) else None
        if digest:
            tables.setdefault(e.dataset, {}).setdefault(str(digest), set()).add(e.label)
    notes = []
    for ds, by_digest in sorted(tables.items()):
        if len(by_digest) < 2:
            continue
        common = max(by_digest, key=lambda d: (len(by_digest[d]), d))
        others = "; ".join(f"{', '.join(sorted(labels))} ({d[:8]})" for d, labels in sorted(by_digest.items())
                           if d != common)
        notes.append(f"Semantic IDs on {ds}: {others} used another ID table than "
                     f"{', '.join(sorted(by_digest[common]))} ({common[:8]}); their rows are not comparable as equals.")
    return notes


# ----------------------------------------------------------------------------- efficiency


def efficiency_table(entries: Sequence[Entry], spec: TableSpec | None = None) -> Table | None:
    """Accuracy and cost per method and dataset (sections = datasets)."""
    spec = spec or TableSpec()
    tool_cols: dict[str, None] = {}  # tools in the order the records store them (first seen first)
    for e in entries:
        if isinstance(e.extra.get("tool_shares"), Mapping):
            tool_cols.update(dict.fromkeys(e.extra["tool_shares"]))
    # (column, value getter, decimals)
    getters: list[tuple[str, Any, int | None]] = [
        (METRIC_LABELS[PRIMARY_METRIC], lambda e: e.test.get(PRIMARY_METRIC), None),
        ("ms/user", ms_per_user, 2),
        ("Reasoning steps", reasoning_steps, 2),
        ("Invalid rate", lambda e: number(e.extra.get("invalid_rate")), None),
    ]
    for t in tool_cols:
        getters.append((f"Share {t}", lambda e, t=t: number((e.extra.get("tool_shares") or {})
                                                            .get(t)), 3))
    getters.append(("Train s/epoch", train_s_per_epoch, 1))
    # Keep only columns with at least one value.
    getters = [g for g in getters if any(g[1](e) is not None for e in entries)]
    if not entries or not getters:
        return None
    order = [lab for _, labels in _sorted_labels(entries) for lab in labels]
    sections = []
    for ds in _datasets(entries, spec):
        sec = Section(ds)
        for label in order:
            group = [e for e in entries if e.label == label and e.dataset == ds]
            if not group:
                continue
            cells = []
            for _, g, digits in getters:
                s = mean_std(v for v in (g(e) for e in group) if v is not None)
                cells.append(Cell(s.mean, s.std, s.n, digits=digits) if s.n else Cell())
            sec.rows.append(Row(label, cells))
        sections.append(sec)
    return Table("Efficiency (test)", "Method", [("", [g[0] for g in getters])], sections,
                 notes=["ms/user: decoding time per test user reported by the model, else "
                        "test time / test users. Mean ± sample std over seeds."],
                 digits=spec.digits)


def significance_table(comparisons: Sequence[Comparison]) -> Table | None:
    """All paired tests (sections = datasets)."""
    if not comparisons:
        return None
    cols = ["Metric", "vs", "Users", "Mean diff", "t", "p (t-test)", "W", "p (Wilcoxon)"]
    sections: dict[str, Section] = {}
    for c in comparisons:
        r = c.result
        against = c.against + (" (best baseline)" if c.kind == "best_baseline" else "")
        cells = [Cell(text=METRIC_LABELS.get(c.metric, c.metric)), Cell(text=against),
                 Cell(text=str(r.n_users)), Cell(r.mean_diff), Cell(text=f"{r.t_stat:.3f}"),
                 Cell(text=f"{r.p_ttest:.3g}"), Cell(text=f"{r.w_stat:.1f}"),
                 Cell(text=f"{r.p_wilcoxon:.3g}")]
        sections.setdefault(c.dataset, Section(c.dataset)).rows.append(Row(c.label, cells))
    return Table("Paired significance tests per user (two-sided)", "Method",
                 [("", cols)], list(sections.values()),
                 notes=["Seeds are averaged per user first; users aligned by id."])


# ----------------------------------------------------------------------------- files


def write_table(table: Table, stem: Path, formats: Sequence[str] = ("md", "tex", "csv")
                ) -> list[Path]:
    """Render ``table`` to ``<stem>.md``, ``.tex`` and ``.csv``."""
    render = {"md": to_markdown, "tex": to_latex, "csv": to_csv}
    return [atomic_write_text(stem.with_suffix(f".{fmt}"), render[fmt](table)) for fmt in formats]
