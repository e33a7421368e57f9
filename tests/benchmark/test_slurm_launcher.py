"""The Slurm launcher (``--launcher=slurm``) through a stand-in submitit module (fake_submitit.py):
the suite's ``slurm`` section reaches the executor, each cell is one picklable job writing its
record, a cancelled job becomes a failure record, and a rerun submits only the unfinished cells."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path

import fake_submitit
import pytest
from bench_helpers import fake_command

from recbole_ext.benchmark.collect import iter_record_files, read_record
from recbole_ext.benchmark.launch import run_suite
from recbole_ext.benchmark.suite import load_suite


@pytest.fixture
def submitit(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", fake_submitit)
    monkeypatch.setattr(fake_submitit, "EXECUTORS", [])
    monkeypatch.setattr(fake_submitit, "FAIL_JOBS", set())
    monkeypatch.setattr(fake_submitit, "_ids", itertools.count(1))
    return fake_submitit


def write_suite(tmp_path: Path) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text("name: cluster\ndatasets: [ml-100k]\nseeds: [1, 2, 3]\nmodels: [SASRec]\n"
                    "slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 90}\ntable: {plots: []}\n")
    return str(path)


def run_ids(out: Path) -> set[str]:
    return {r["run_id"] for r in (read_record(p) for p in iter_record_files(out)) if r is not None}


def test_slurm_launcher_submits_one_job_per_cell(submitit, tmp_path, caplog):
    suite = write_suite(tmp_path)
    out = tmp_path / "out"
    cells = load_suite(suite).cells
    submitit.FAIL_JOBS.add(2)  # the second job is cancelled by the cluster
    with caplog.at_level(logging.INFO):
        assert run_suite(suite, str(out), gpus=["0"], launcher="slurm", command_builder=fake_command) == 1
    (executor,) = submitit.EXECUTORS
    assert executor.cluster == "slurm" and executor.folder == out / "suites" / "cluster" / "submitit"
    assert executor.parameters == {"partition": "gpu", "gpus_per_node": 1, "timeout_min": 90,
                                   "name": "recbole-ext-cluster"}
    assert "--gpus is ignored by launcher slurm" in caplog.text
    assert "submitted SASRec/ml-100k seed 2 as job 1002" in caplog.text
    assert run_ids(out) == {cells[0].id, cells[2].id}
    failed = json.loads((out / "suites/cluster/failed" / f"{cells[1].id}.failed.json").read_text())
    assert failed["returncode"] is None and "CANCELLED" in failed["error"]

    # the rerun submits only the cancelled cell
    assert run_suite(suite, str(out), launcher="slurm", command_builder=fake_command) == 0
    assert len(submitit.EXECUTORS[1].jobs) == 1
    assert run_ids(out) == {c.id for c in cells}
    assert not (out / "suites/cluster/failed" / f"{cells[1].id}.failed.json").exists()
    invocations = (out / "invocations.log").read_text().split()
    assert invocations.count(cells[0].id) == 1 and invocations.count(cells[1].id) == 1


def test_without_submitit_the_launcher_says_what_to_install(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert run_suite(write_suite(tmp_path), str(tmp_path / "out"), launcher="slurm",
                     command_builder=fake_command) == 2
    assert "pip install submitit==1.5.4" in caplog.text
