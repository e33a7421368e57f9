"""The reasoning-cost printout reads the claims' ratios off hand-made records exactly
(:mod:`recbole_ext.benchmark.reasoning_cost`)."""

from __future__ import annotations

import json

from recbole_ext.benchmark.collect import collect_entries
from recbole_ext.benchmark.reasoning_cost import depth_lines, main, routing_lines, row_lines, variant_lines


def _test(ndcg: float, hit: float) -> dict:
    return {"hit@5": hit / 2, "hit@10": hit, "ndcg@5": ndcg / 2, "ndcg@10": ndcg}


def _lasar_stage(name: str, ndcg: float, ms: float, depth: list[int]) -> dict:
    users = sum(depth)
    mean = sum(k * c for k, c in enumerate(depth)) / users
    return {"name": name, "valid": {}, "test": _test(ndcg, 2 * ndcg),
            "extra": {"decode_ms_per_user": ms, "depth_histogram": depth, "mean_depth": mean,
                      "mean_reasoning_steps": mean,
                      "test_variants": {"explicit": {"test": _test(ndcg - 0.001, 0.02),
                                                     "extra": {"decode_ms_per_user": 20 * ms}},
                                        "none": {"test": _test(ndcg - 0.002, 0.02),
                                                 "extra": {"decode_ms_per_user": ms / 1.25}}}}}


ROUTED = {"tool_shares": {"fast": 0.75, "rank": 0.1, "slow": 0.15},
          "fixed_strategies": {
              "fast": {"ndcg@10": 0.05, "latency_ms_mean": 0.5, "latency_ms_p95": 0.6},
              "rank": {"ndcg@10": 0.055, "latency_ms_mean": 0.6, "latency_ms_p95": 0.7},
              "slow": {"ndcg@10": 0.061, "latency_ms_mean": 6.0, "latency_ms_p95": 9.0}},
          "routed": {"ndcg@10": 0.06, "latency_ms_mean": 1.5, "latency_ms_p95": 7.5}}

RECORDS = [
    {"run_id": "t", "model": "TIGER", "dataset": "sci", "seed": 1, "created": "1",
     "test": _test(0.04, 0.07), "extra": {"decode_ms_per_user": 0.5}},
    {"run_id": "l", "model": "LASAR", "dataset": "sci", "seed": 1, "created": "1",
     "stages": [_lasar_stage("reason", 0.045, 1.0, [0, 2, 6, 2]),   # mean depth 2.0
                _lasar_stage("rl", 0.050, 0.8, [2, 6, 2, 0])]},      # mean depth 1.0
    {"run_id": "w", "model": "TwiSTAR", "dataset": "sci", "seed": 1, "created": "1",
     # as the model writes it: the record-level extra is the final stage's, which every stage row inherits
     "extra": {"route_mode": "route", **ROUTED},
     "stages": [{"name": "fast", "valid": {}, "test": _test(0.05, 0.09),
                 "extra": {"decode_ms_per_user": 0.5, "route_mode": "fast", "tool_shares": {"fast": 1.0}}},
                {"name": "planner_rl", "valid": {}, "test": _test(0.06, 0.1),
                 "extra": {"decode_ms_per_user": 1.5, "route_mode": "route", **ROUTED}}]},
]


def test_rows_divide_by_the_reference_and_show_depth():
    lines = row_lines(collect_entries(RECORDS), "TIGER")
    row = {line[len("sci") + 14:].split(" N@10")[0].strip(): line for line in lines}  # label -> line
    assert len(row) == len(lines) == 9 and all(line.startswith("sci ") for line in lines)
    assert "ms/user 0.500  xTIGER 1.00x" in row["TIGER"]
    assert "N@10 0.0450  R@10 0.0900  ms/user 1.000  xTIGER 2.00x  steps 2.00 depth histogram 0/2/6/2" \
        in row["LASAR (REASON)"]
    assert "ms/user 20.000  xTIGER 40.00x" in row["LASAR (REASON) [explicit]"]
    assert "ms/user 1.500  xTIGER 3.00x  steps -" in row["TwiSTAR (PLANNER_RL)"]


def test_a_stage_without_latent_decoding_shows_no_histogram():
    ground = {"run_id": "g", "model": "LASAR", "dataset": "sci", "seed": 1, "created": "1",
              "stages": [{"name": "ground", "valid": {}, "test": _test(0.04, 0.08),
                          "extra": {"decode_ms_per_user": 0.9, "depth_histogram": [0, 0, 0], "mean_depth": 0.0}}]}
    (line,) = row_lines(collect_entries([ground]), "TIGER")
    assert line.endswith("xTIGER -  steps -") and "histogram" not in line


def test_variants_are_compared_with_their_own_stage():
    lines = variant_lines(collect_entries(RECORDS))
    assert ("sci              LASAR (RL): explicit decoding 16.000 ms/user vs its own 0.800: explicit/own 20.00x, "
            "own/explicit 0.05x; N@10 0.0490 vs 0.0500") in lines
    assert any("LASAR (REASON): none decoding 0.800 ms/user vs its own 1.000: none/own 0.80x, own/none 1.25x"
               in line for line in lines)
    assert len(lines) == 4


def test_depth_of_a_stage_against_the_previous_one():
    (line,) = depth_lines(collect_entries(RECORDS))
    assert line.endswith("LASAR (RL) vs LASAR (REASON): mean depth 1.000 vs 2.000 (0.50x); N@10 0.0500 vs 0.0450")


def test_routing_beside_the_fixed_strategies():
    (line,) = routing_lines(collect_entries(RECORDS))  # the planner's row only, not the fast tool's
    assert line.startswith("sci              TwiSTAR (PLANNER_RL): ")
    assert "fast N@10 0.0500 0.500 ms (p95 0.600)" in line and "slow N@10 0.0610 6.000 ms (p95 9.000)" in line
    assert "routed N@10 0.0600 1.500 ms (p95 7.500)" in line
    assert line.endswith("routed/always-slow latency 0.25x; shares fast 0.750, rank 0.100, slow 0.150")


def test_main_prints_header_and_sections_and_refuses_an_empty_folder(tmp_path, capsys):
    for rec in RECORDS:
        path = tmp_path / "runs" / rec["dataset"] / rec["model"] / f"{rec['run_id']}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
    assert main([f"--output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# command: python -m recbole_ext.benchmark.reasoning_cost --output_dir=")
    for title in ("## Rows", "## Decoding variants", "## Adaptive depth", "## Routing"):
        assert title in out
    assert main([f"--output_dir={tmp_path / 'nothing'}"]) == 2
    assert "no run records" in capsys.readouterr().err


def test_the_tables_folder_gets_the_printout_only_where_a_claim_is_recorded(tmp_path):
    from recbole_ext.benchmark.reasoning_cost import report, write_reasoning_cost

    entries = collect_entries(RECORDS)
    path = write_reasoning_cost(entries, "TIGER", tmp_path / "tables" / "reasoning_cost.md")
    assert path is not None and report(entries, "TIGER") in path.read_text()
    assert write_reasoning_cost(collect_entries(RECORDS[:1]), "TIGER", tmp_path / "none.md") is None
    assert not (tmp_path / "none.md").exists()
