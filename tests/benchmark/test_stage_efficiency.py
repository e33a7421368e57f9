"""The efficiency table's per-stage columns: each stage row shows its own seconds per training epoch
and the free steps that stage decoded, never the whole run's average."""

from __future__ import annotations

import csv
from pathlib import Path

from bench_helpers import write_record

from recbole_ext.benchmark.report import build_tables

M = {"hit@5": 0.1, "hit@10": 0.2, "ndcg@5": 0.05, "ndcg@10": 0.07}


def cells(root: Path) -> dict[tuple[str, str], str]:
    with open(root / "tables" / "efficiency.csv", newline="") as f:
        return {(r["row"], r["column"]): r["value"] for r in csv.DictReader(f)}


def test_stage_rows_have_their_own_seconds_per_epoch_and_steps(tmp_path: Path) -> None:
    stages = [{"name": "pt", "test": M, "extra": {"s_per_epoch": 16.2, "decode_free_steps": 8, "epochs": 36}},
              {"name": "sft", "test": M, "extra": {"s_per_epoch": 20.7, "decode_free_steps": 4, "epochs": 15}},
              {"name": "rl", "test": M, "extra": {"s_per_epoch": 42.1, "decode_free_steps": 4, "epochs": 4}}]
    write_record(tmp_path, "STREAMRec", "d", 1, M, stages=stages, extra={"reasoning_len": 4},
                 timings={"s_per_epoch": 16.667, "epochs": 55})
    write_record(tmp_path, "TIGER", "d", 1, M, extra={"decode_free_steps": 0}, timings={"s_per_epoch": 9.2})
    build_tables(str(tmp_path), plots=False)
    got = cells(tmp_path)
    assert [float(got[(f"STREAMRec ({s})", "Train s/epoch")]) for s in ("PT", "SFT", "RL")] == [16.2, 20.7, 42.1]
    assert [float(got[(f"STREAMRec ({s})", "Reasoning steps")]) for s in ("PT", "SFT", "RL")] == [8.0, 4.0, 4.0]
    assert float(got[("TIGER", "Train s/epoch")]) == 9.2 and got[("TIGER", "Reasoning steps")] == ""


def test_a_stage_without_its_own_time_shows_none(tmp_path: Path) -> None:
    """Records made before stages kept their own time: no number rather than the run's average."""
    write_record(tmp_path, "STREAMRec", "d", 1, M, stages=[{"name": "pt", "test": M, "extra": {"epochs": 3}}],
                 extra={"reasoning_len": 2}, timings={"s_per_epoch": 16.667})
    write_record(tmp_path, "TIGER", "d", 1, M, timings={"s_per_epoch": 9.2})
    build_tables(str(tmp_path), plots=False)
    got = cells(tmp_path)
    assert got[("STREAMRec (PT)", "Train s/epoch")] == "" and float(got[("STREAMRec (PT)", "Reasoning steps")]) == 2.0
