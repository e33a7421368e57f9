"""The report step: tables and plots of an output directory, built from its stored records only.

:func:`build_tables` reads ``DIR/runs`` (and the suite manifests under ``DIR/suites`` for labels,
groups and table options), then writes the tables (``tables.py``) under ``DIR/tables`` and the
plots (``plots.py``) under ``DIR/plots``. It is the one module that drives both: neither of them
imports the other.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from recbole_ext.benchmark.collect import CellInfo, collect_entries, load_records
from recbole_ext.benchmark.plots import make_plots
from recbole_ext.benchmark.reasoning_cost import write_reasoning_cost
from recbole_ext.benchmark.selection import select_on_validation, write_selection
from recbole_ext.benchmark.stats import compare_all
from recbole_ext.benchmark.tables import (
    TableSpec,
    comparison_table,
    efficiency_table,
    significance_table,
    write_table,
)

logger = logging.getLogger(__name__)


def load_cell_infos(output_dir: str | os.PathLike[str], suite: str | None = None
                    ) -> tuple[dict[str, CellInfo], dict[str, Any] | None]:
    """Run id -> display info from the suite manifests under ``DIR/suites``.

    Returns the infos and, when ``suite`` is given, that suite's ``table`` section.
    """
    infos: dict[str, CellInfo] = {}
    table_cfg = None
    root = Path(output_dir) / "suites"
    paths = [root / suite / "suite.json"] if suite else sorted(root.glob("*/suite.json"))
    for path in paths:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("cannot read suite manifest %s: %s", path, exc)
            continue
        if suite:
            table_cfg = manifest.get("table")
        for c in manifest.get("cells", []):
            info = CellInfo(c["label"], c["group"], c.get("order", 0), manifest.get("name", ""), c.get("select", ""))
            for run_id in [c["id"], *c.get("aliases", [])]:  # aliases: ids of an older scheme
                infos[run_id] = info
    return infos, table_cfg


def build_tables(output_dir: str, suite: str | None = None, plots: bool = True) -> list[Path]:
    """(Re)build tables (and plots) from the records under ``output_dir``; no training.

    With ``suite`` (a suite name that ran into ``output_dir``) only that suite's cells are
    tabulated, with its ``table`` options and labels; otherwise every record is, labelled by
    any suite manifests found. Writes ``DIR/tables/{comparison,efficiency}.{md,tex,csv}``,
    ``DIR/tables/significance.{md,csv}``, ``DIR/tables/reasoning_cost.md`` (where a record holds
    decoding variants, depths or routing) and ``DIR/plots/*.png``; returns the paths written.
    """
    out = Path(output_dir)
    infos, table_cfg = load_cell_infos(out, suite)
    spec = TableSpec.from_dict(table_cfg)
    entries = collect_entries(load_records(out), infos, only_cells=bool(suite))
    if not entries:
        logger.warning("no finished run records under %s; no tables written", out / "runs")
        return []
    tdir = out / "tables"
    entries, choices = select_on_validation(entries)
    written: list[Path] = []
    if choices:
        written += write_selection(choices, tdir / "selection.md")
    comparisons = compare_all(entries, spec.reference, spec.metrics)
    written += write_table(comparison_table(entries, spec, comparisons), tdir / "comparison")
    sig = significance_table(comparisons)
    if sig is not None:
        written += write_table(sig, tdir / "significance", ("md", "csv"))
    eff = efficiency_table(entries, spec) if spec.efficiency else None
    if eff is not None:
        written += write_table(eff, tdir / "efficiency")
    cost = write_reasoning_cost(entries, spec.reference or "TIGER", tdir / "reasoning_cost.md")
    written += [cost] if cost else []
    if plots and spec.plots:
        written += make_plots(entries, out / "plots", spec.plots)
    for p in written:
        logger.info("wrote %s", p)
    return written
