"""Tables from hand-made records: golden Markdown, LaTeX and CSV; robustness to bad files."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_helpers import write_record

from recbole_ext import registry
from recbole_ext.benchmark.collect import collect_entries, load_records
from recbole_ext.benchmark.tablemodel import latex_escape, to_markdown
from recbole_ext.benchmark.report import build_tables
from recbole_ext.benchmark.tables import TableSpec, comparison_table, efficiency_table

GOLDEN = Path(__file__).with_name("golden")
USERS = [1, 2, 3, 4, 5, 6]


def m(h5: float, h10: float, n5: float, n10: float) -> dict[str, float]:
    return {"hit@5": h5, "hit@10": h10, "ndcg@5": n5, "ndcg@10": n10}


def per_user(n10: list[float]) -> dict:
    return {"test": {"user_ids": USERS, "hit@5": [1.0 if v else 0.0 for v in n10],
                     "hit@10": [1.0 if v else 0.0 for v in n10], "ndcg@5": n10, "ndcg@10": n10}}


def make_records(root: Path) -> None:
    """Two datasets, traditional and generative methods, seeds, stages, efficiency fields."""
    for ds in ("instruments", "scientific"):
        write_record(root, "GRU4Rec", ds, 2020, m(0.0300, 0.0500, 0.0200, 0.0250))
    write_record(root, "SASRec", "instruments", 2020, m(0.0400, 0.0600, 0.0260, 0.0290),
                 per_user=per_user([0.0, 0.2, 0.0, 0.1, 0.3, 0.0]))
    write_record(root, "SASRec", "instruments", 2021, m(0.0420, 0.0640, 0.0280, 0.0310),
                 per_user=per_user([0.1, 0.2, 0.0, 0.1, 0.2, 0.0]))
    write_record(root, "SASRec", "scientific", 2020, m(0.0310, 0.0460, 0.0190, 0.0200),
                 timings={"test_ms_per_user": 0.5})
    write_record(root, "TIGER", "instruments", 2020, m(0.0390, 0.0620, 0.0250, 0.0280),
                 per_user=per_user([0.0, 0.1, 0.0, 0.1, 0.2, 0.0]),
                 extra={"decode_ms_per_user": 19.0, "invalid_rate": 0.01})
    write_record(root, "TIGER", "instruments", 2021, m(0.0370, 0.0600, 0.0240, 0.0278),
                 per_user=per_user([0.0, 0.1, 0.0, 0.1, 0.2, 0.0]),
                 extra={"decode_ms_per_user": 21.0, "invalid_rate": 0.03})
    write_record(root, "TIGER", "scientific", 2020, m(0.0290, 0.0450, 0.0180, 0.0199),
                 extra={"decode_ms_per_user": 18.0})
    rl = m(0.0450, 0.0700, 0.0300, 0.0329)
    write_record(root, "STREAMRec", "instruments", 2020, rl, config={"reasoning_len": 6},
                 extra={"reasoning_len": 6, "decode_ms_per_user": 25.0},
                 stages=[
                     {"name": "pt", "test": m(0.0380, 0.0590, 0.0240, 0.0270)},
                     {"name": "sft", "test": m(0.0410, 0.0650, 0.0280, 0.0307),
                      "extra": {"invalid_rate": 0.02}},
                     {"name": "rl", "test": rl, "extra": {"invalid_rate": 0.005},
                      "per_user": per_user([0.3, 0.4, 0.2, 0.3, 0.5, 0.2])},
                 ])
    write_record(root, "TwiSTAR", "scientific", 2020, m(0.0330, 0.0480, 0.0210, 0.0221),
                 extra={"decode_ms_per_user": 7.5, "mean_reasoning_steps": 0.4,
                        "tool_shares": {"fast10": 0.6, "fast50": 0.25, "slow": 0.15}})
    # Things the loader must skip: a truncated file, a partial record, a failure record,
    # a temporary file of an in-progress atomic write.
    bad = root / "runs" / "scientific" / "SASRec"
    (bad / "truncated.json").write_text('{"model": "SASRec", "test": {')
    (bad / "partial.json").write_text(json.dumps({"model": "SASRec", "dataset": "scientific"}))
    (bad / "x.failed.json").write_text(json.dumps({"status": "failed"}))
    (bad / ".y.json.abc.tmp").write_text("{")


@pytest.fixture
def records_dir(tmp_path: Path) -> Iterator[Path]:
    """The records of :func:`make_records`, with TwiSTAR in the reasoning group (registered here
    until its plugin is; the tables read groups from the registry)."""
    make_records(tmp_path)
    temporary = "TwiSTAR" not in registry.plugin_names()
    if temporary:
        registry.register("TwiSTAR", "recbole_ext.models.twistar:TwiSTAR", group="reasoning")
    try:
        yield tmp_path
    finally:
        if temporary:
            registry.unregister("TwiSTAR")


def check_golden(path: Path, name: str) -> None:
    golden = GOLDEN / name
    text = path.read_text(encoding="utf-8")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), f"{name} differs from the golden file"


def test_golden_tables(records_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        written = build_tables(str(records_dir), plots=False)
    names = sorted(p.name for p in written)
    assert names == ["comparison.csv", "comparison.md", "comparison.tex", "efficiency.csv",
                     "efficiency.md", "efficiency.tex", "significance.csv", "significance.md"]
    for name in names:
        check_golden(records_dir / "tables" / name, name)
    warned = caplog.text
    assert "truncated.json" in warned and "partial.json" in warned
    assert "failed.json" not in warned and ".tmp" not in warned


def test_table_content(records_dir: Path) -> None:
    """The golden files say what was asked: groups, stage rows, styles, Improv., std."""
    build_tables(str(records_dir), plots=False)
    md = (records_dir / "tables" / "comparison.md").read_text()
    lines = md.splitlines()
    rows = [ln.split("|")[1].strip() for ln in lines if ln.startswith("| ")][2:]
    assert rows == ["*Traditional*", "GRU4Rec", "SASRec", "*Generative*", "TIGER", "*Reasoning*",
                    "STREAMRec (PT)", "STREAMRec (SFT)", "STREAMRec (RL)", "TwiSTAR", "Improv."]
    assert "**0.0329**" in md and "<u>0.0307</u>" in md  # instruments N@10: RL best, SFT 2nd
    assert "0.0300 ± 0.0014" in md  # SASRec instruments N@10 over seeds: .029, .031
    assert "+17.92%" in md  # (0.0329 - 0.0279) / 0.0279
    tex = (records_dir / "tables" / "comparison.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\multicolumn{4}{c}{instruments} & \multicolumn{4}{c}{scientific}" in tex
    assert r"\textbf{0.0329}$^{\dagger\ddagger}$" in tex and r"\underline{0.0307}" in tex
    assert r"+17.92\%" in tex
    eff = (records_dir / "tables" / "efficiency.md").read_text()
    assert "Share fast10" in eff and "0.150" in eff


def test_suite_labels_and_restriction(records_dir: Path) -> None:
    """Suite manifests give display labels and restrict a suite's table to its own cells."""
    manifest = {"name": "mini", "table": {"reference": None, "datasets": ["scientific"]},
                "cells": [{"id": "TwiSTAR-scientific-s2020", "label": "TwiSTAR (adaptive)",
                           "group": "Generative", "order": 1},
                          {"id": "GRU4Rec-scientific-s2020", "label": "GRU",
                           "group": "Traditional", "order": 2}]}
    sdir = records_dir / "suites" / "mini"
    sdir.mkdir(parents=True)
    (sdir / "suite.json").write_text(json.dumps(manifest))
    build_tables(str(records_dir), suite="mini", plots=False)
    md = (records_dir / "tables" / "comparison.md").read_text()
    assert "TwiSTAR (adaptive)" in md and "| GRU " in md
    assert "SASRec" not in md and "Improv." not in md and "instruments" not in md


def test_one_model_for_markdown_and_latex(records_dir: Path) -> None:
    entries = collect_entries(load_records(records_dir))
    table = comparison_table(entries, TableSpec(metrics=["ndcg@10"], datasets=["scientific"]))
    assert [g for g, _ in table.groups] == ["scientific", "instruments"]
    md = to_markdown(table)
    assert md.count("**0.") == 2  # one best per column (2 columns)
    assert md.count("<u>0.") == 2
    assert latex_escape("a_b & 5%") == r"a\_b \& 5\%"


def test_no_records_no_tables(tmp_path: Path) -> None:
    assert build_tables(str(tmp_path)) == []


def test_tool_columns_follow_the_records(tmp_path: Path) -> None:
    """Tool share columns come in the order the records store the tools (first seen first), whatever the tools."""
    metrics = m(0.1, 0.2, 0.1, 0.1)
    write_record(tmp_path, "A", "ml-100k", 1, metrics, extra={"tool_shares": {"slow": 0.7, "fast10": 0.3}})
    write_record(tmp_path, "B", "ml-100k", 1, metrics, extra={"tool_shares": {"fast10": 0.4, "cache": 0.6}})
    table = efficiency_table(collect_entries(load_records(tmp_path)))
    share_cols = [c for c in table.groups[0][1] if c.startswith("Share ")]
    assert share_cols == ["Share slow", "Share fast10", "Share cache"]
    b_row = next(r for r in table.sections[0].rows if r.label == "B")
    columns = table.groups[0][1]
    assert b_row.cells[columns.index("Share slow")].value is None
    assert b_row.cells[columns.index("Share cache")].value == 0.6


def test_cli_tables_of_one_suite_use_its_table_options(tmp_path, capsys):
    """``--tables --suite=NAME``: that suite's cells under its title; a suite that never ran there is one line."""
    from recbole_ext import cli

    write_record(tmp_path, "TIGER", "d", 1, m(0.1, 0.2, 0.05, 0.08), run_id="cell-a")
    write_record(tmp_path, "SASRec", "d", 1, m(0.1, 0.2, 0.05, 0.09), run_id="other")  # not a cell of the suite
    manifest = {"name": "mine", "table": {"title": "My suite", "plots": []},
                "cells": [{"id": "cell-a", "label": "TIGER", "group": "Generative"}]}
    (tmp_path / "suites" / "mine").mkdir(parents=True)
    (tmp_path / "suites" / "mine" / "suite.json").write_text(json.dumps(manifest))
    assert cli.main(["--tables", "--suite=mine", f"--output_dir={tmp_path}"]) == 0
    table = (tmp_path / "tables" / "comparison.md").read_text()
    assert table.startswith("**My suite**") and "| TIGER" in table and "SASRec" not in table
    assert cli.main(["--tables", "--suite=quickstart", f"--output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: no suite 'quickstart' ran into {tmp_path} (suites there: mine); "
                                               "leave out --suite to tabulate every record")
