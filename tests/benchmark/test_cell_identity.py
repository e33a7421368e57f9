"""A cell's id is the same on every machine, and the committed GPU suite resumes by its documented command."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from recbole_ext.benchmark import launch
from recbole_ext.benchmark.suite import adopt_aliases, cell_id, load_suite

REPO = Path(__file__).resolve().parents[2]
GPU_RESULTS = REPO / "results" / "gpu_scientific2018"


def test_unchanged_for_path_free_cells_hand_computed() -> None:
    # the id scheme every committed suite without path keys was stored under, written out by hand
    canon = '{"dataset":"ml-100k","model":"SASRec","overrides":{"epochs":2},"seed":1}'
    expected = "SASRec-ml-100k-s1-" + hashlib.sha256(canon.encode()).hexdigest()[:12]
    assert cell_id("SASRec", "ml-100k", 1, {"epochs": 2}) == expected
    quickstart = json.loads((REPO / "results/quickstart/suites/quickstart/suite.json").read_text())
    assert all(cell_id(c["model"], c["dataset"], c["seed"], c["overrides"]) == c["id"] for c in quickstart["cells"])


def test_locations_are_not_identity(tmp_path: Path) -> None:
    plain = cell_id("TIGER", "scientific2018", 2020, {"epochs": 300})
    for where in ({"data_path": "/work/main/.gpu/datasets"}, {"data_path": "../shared/datasets"},
                  {"checkpoint_dir": str(tmp_path)}, {"sid_cache_dir": "~/x", "stage_cache_dir": "/y"}):
        assert cell_id("TIGER", "scientific2018", 2020, {"epochs": 300, **where}) == plain
    assert cell_id("TIGER", "scientific2018", 2020, {"epochs": 301}) != plain  # what is trained still counts


def test_files_count_by_content_not_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "ids.index.json").write_text('{"i1": [1, 2]}')
    (tmp_path / "b" / "ids.index.json").write_text('{"i1": [1, 2]}')
    (tmp_path / "b" / "other.index.json").write_text('{"i1": [2, 1]}')
    monkeypatch.chdir(tmp_path / "b")

    def cid(path: str) -> str:
        return cell_id("TIGER", "d", 1, {"sid_tokenizer": "external", "sid_path": path})

    assert cid(str(tmp_path / "a" / "ids.index.json")) == cid("ids.index.json")  # same bytes elsewhere
    assert cid("other.index.json") != cid("ids.index.json")  # other bytes, other cell
    assert cid("missing.json") != cid("ids.index.json")  # not a file: kept as written
    assert cid("missing.json") == cell_id("TIGER", "d", 1, {"sid_tokenizer": "external", "sid_path": "missing.json"})


def test_stored_ids_of_an_older_scheme_become_aliases(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndatasets: [d]\nseeds: [1]\nmodels: [SASRec, GRU4Rec]\n")
    parsed = load_suite(suite, {"data_path": "rel/data"})
    sas, gru = parsed.cells
    stored = [
        {"id": "SASRec-d-s1-old", "model": "SASRec", "dataset": "d", "seed": 1,
         "overrides": {"data_path": "/abs/elsewhere"}, "aliases": ["SASRec-d-s1-older"]},
        {"id": "GRU4Rec-d-s1-other", "model": "GRU4Rec", "dataset": "d", "seed": 1,
         "overrides": {"epochs": 5}},  # another cell: no alias
        {"id": "broken"},
    ]
    assert adopt_aliases(parsed, stored) == 1
    assert sas.aliases == ["SASRec-d-s1-old", "SASRec-d-s1-older"] and gru.aliases == []
    assert parsed.manifest()["cells"][0]["aliases"] == sas.aliases


def test_committed_gpu_suite_resumes_by_its_documented_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The command in benchmarks/gpu_scientific2018.yaml, run on a copy of the committed output, finds
    every cell finished (its records' ids hashed the GPU machine's absolute data_path) and runs none."""
    header = (REPO / "benchmarks" / "gpu_scientific2018.yaml").read_text()
    assert "--suite=gpu_scientific2018 --gpus=0,0,0,0 \\\n#       --data_path=../shared/datasets " \
           "--output_dir=results/gpu_scientific2018" in header
    out = tmp_path / "results" / "gpu_scientific2018"
    shutil.copytree(GPU_RESULTS / "runs", out / "runs")
    shutil.copytree(GPU_RESULTS / "suites", out / "suites")
    started = []

    def must_not_run(cell, output_dir):
        started.append(cell.id)
        return [sys.executable, "-c", "raise SystemExit(9)"]

    monkeypatch.setattr(launch, "default_command", must_not_run)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    from recbole_ext.cli import main

    rc = main(["--suite=gpu_scientific2018", "--gpus=0,0,0,0", "--data_path=../shared/datasets",
               "--output_dir=results/gpu_scientific2018"])
    assert rc == 0 and started == []
    assert "6 cells, 6 finished already (skipped), 0 to run" in caplog.text
    manifest = json.loads((out / "suites/gpu_scientific2018/suite.json").read_text())
    committed = {p.stem for p in (GPU_RESULTS / "runs").rglob("*.json")}
    assert {a for c in manifest["cells"] for a in c["aliases"]} == committed
    table = (out / "tables" / "comparison.md").read_text()
    for label in ("SASRec", "TIGER", "STREAMRec (PT)", "STREAMRec (SFT)", "STREAMRec (RL)"):
        assert f"| {label} " in table  # records labelled through their aliases
