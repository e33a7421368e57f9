"""Choosing on validation: a sweep collapses into one row, the candidate with the best mean valid score."""

from __future__ import annotations

import json
from pathlib import Path

from bench_helpers import write_record

from recbole_ext.benchmark.collect import CellInfo, collect_entries, load_records
from recbole_ext.benchmark.selection import select_on_validation

SUITE = """
name: grid
datasets: [ds]
seeds: [1, 2]
models:
  - model: SASRec
    label: "SASRec (lr={learning_rate})"
    select: "SASRec"
    sweep: {learning_rate: [0.001, 0.003]}
  - GRU4Rec
"""




def test_the_best_mean_valid_candidate_becomes_the_row_test_plays_no_part(tmp_path: Path):
    from recbole_ext.benchmark.suite import load_suite

    path = tmp_path / "grid.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    assert {c.select for c in suite.cells if c.model == "SASRec"} == {"SASRec"}
    assert {c.select for c in suite.cells if c.model == "GRU4Rec"} == {""}
    # lr 0.001: valid 0.05 and 0.07 (mean 0.06), test 0.30 | lr 0.003: valid 0.065 twice, test 0.01
    scores = {(0.001, 1): (0.05, 0.30), (0.001, 2): (0.07, 0.30), (0.003, 1): (0.065, 0.01), (0.003, 2): (0.065, 0.01)}
    infos = {}
    for c in suite.cells:
        valid, test = scores.get((c.overrides.get("learning_rate"), c.seed), (0.02, 0.02))
        write_record(tmp_path, c.model, c.dataset, c.seed, {"ndcg@10": test, "hit@10": test}, run_id=c.id,
                     valid={"ndcg@10": valid, "hit@10": valid})
        infos[c.id] = CellInfo(c.label, c.group, c.order, "grid", c.select)
    entries, choices = select_on_validation(collect_entries(load_records(tmp_path), infos))
    sasrec = [e for e in entries if e.model == "SASRec"]
    assert {e.label for e in sasrec} == {"SASRec"} and len(sasrec) == 2  # one row, its two seeds
    assert {e.test["ndcg@10"] for e in sasrec} == {0.01}  # the lr=0.003 cells: better on validation
    (choice,) = choices
    assert (choice.row, choice.dataset, choice.chosen) == ("SASRec", "ds", "SASRec (lr=0.003)")
    assert [(lab, round(s, 4), n) for lab, s, n in choice.scores] == [("SASRec (lr=0.001)", 0.06, 2),
                                                                      ("SASRec (lr=0.003)", 0.065, 2)]
    assert [e.label for e in entries if e.model == "GRU4Rec"] == ["GRU4Rec", "GRU4Rec"]  # untouched


def test_stage_rows_are_chosen_per_stage_and_the_report_lists_choices(tmp_path: Path):
    from recbole_ext.benchmark.report import build_tables

    stages = lambda v: [{"name": "pt", "valid": {"ndcg@10": v}, "test": {"ndcg@10": 0.1}},  # noqa: E731
                        {"name": "sft", "valid": {"ndcg@10": 1 - v}, "test": {"ndcg@10": 0.2}}]
    cells = []
    for i, (lr, v) in enumerate([(0.001, 0.3), (0.003, 0.4)]):
        run_id = f"S-ds-s1-{i}"
        write_record(tmp_path, "STREAMRec", "ds", 1, {"ndcg@10": 0.1}, run_id=run_id, stages=stages(v))
        cells.append({"id": run_id, "model": "STREAMRec", "dataset": "ds", "seed": 1, "overrides": {},
                      "label": f"STREAMRec {{stage}} (lr={lr})", "group": "Reasoning", "order": i + 1,
                      "select": "STREAMRec {stage}"})
    manifest = tmp_path / "suites" / "g" / "suite.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": "g", "table": {"reference": None}, "cells": cells}))
    written = build_tables(str(tmp_path), suite="g", plots=False)
    text = (tmp_path / "tables" / "selection.md").read_text()
    assert tmp_path / "tables" / "selection.md" in written
    # PT: lr 0.003 wins (0.4 > 0.3); SFT: lr 0.001 wins (0.7 > 0.6)
    assert "| STREAMRec PT | ds | STREAMRec PT (lr=0.003) |" in text
    assert "| STREAMRec SFT | ds | STREAMRec SFT (lr=0.001) |" in text
    table = (tmp_path / "tables" / "comparison.md").read_text()
    assert "| STREAMRec PT " in table and "| STREAMRec SFT " in table and "lr=" not in table
