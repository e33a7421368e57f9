"""Plots from hand-made records: PNG files are produced (magic bytes), empty data is skipped."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import write_record

from recbole_ext.benchmark.collect import collect_entries, load_records
from recbole_ext.benchmark.plots import make_plots, pareto_front
from recbole_ext.benchmark.report import build_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_written(tmp_path: Path) -> None:
    for length, n10 in [(0, 0.020), (2, 0.024), (4, 0.026), (6, 0.025), (8, 0.023)]:
        for seed in (1, 2):
            write_record(tmp_path, "STREAMRec", "scientific", seed,
                         {"ndcg@10": n10 + seed * 1e-4}, run_id=f"s-l{length}-{seed}",
                         config={"reasoning_len": length}, label=f"STREAMRec (l={length})",
                         extra={"decode_ms_per_user": 19.0 + 3 * length})
    write_record(tmp_path, "SASRec", "scientific", 1, {"ndcg@10": 0.02},
                 timings={"test_ms_per_user": 0.4})
    entries = collect_entries(load_records(tmp_path))
    paths = make_plots(entries, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["frontier.png", "reasoning_length.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
    written = build_tables(str(tmp_path))
    assert {p.name for p in written} >= {"frontier.png", "reasoning_length.png"}


def test_no_data_no_plot(tmp_path: Path) -> None:
    write_record(tmp_path, "SASRec", "ml-100k", 1, {"ndcg@10": 0.02})
    entries = collect_entries(load_records(tmp_path))
    assert make_plots(entries, tmp_path / "plots") == []


def test_pareto_front() -> None:
    pts = [(1.0, 0.02), (5.0, 0.019), (10.0, 0.03), (20.0, 0.025), (0.5, 0.01)]
    assert pareto_front(pts) == [(0.5, 0.01), (1.0, 0.02), (10.0, 0.03)]
