"""Running suites with fake cells: resume, kill -9, failure isolation, GPU slots, submitit."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from bench_helpers import fake_command

from recbole_ext.benchmark.collect import iter_record_files, read_record
from recbole_ext.benchmark.launch import run_suite
from recbole_ext.benchmark.suite import load_suite

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def suite_file(tmp_path: Path, models: str, seeds: str = "[1, 2]") -> str:
    path = tmp_path / "mini.yaml"
    path.write_text(f"name: mini\ndatasets: [ml-100k]\nseeds: {seeds}\nmodels:\n{models}"
                    "table: {plots: []}\n")
    return str(path)


def invocations(out: Path) -> Counter:
    log = out / "invocations.log"
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() \
        else Counter()


def records(out: Path) -> dict[str, dict]:
    recs = (read_record(p) for p in iter_record_files(out))
    return {r["run_id"]: r for r in recs if r is not None}


def test_run_then_rerun_skips_finished(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    suite = suite_file(tmp_path, "  - SASRec\n  - NewPlugin\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert run_suite(suite, str(out), command_builder=fake_command) == 0
    ids = {c.id for c in load_suite(suite).cells}
    assert set(records(out)) == ids
    assert set(invocations(out)) == ids
    assert "cell 1/4 start SASRec/ml-100k" in caplog.text
    assert "ETA" in caplog.text and "epoch 0" in caplog.text and "stage pt" in caplog.text
    md = (out / "tables" / "comparison.md").read_text()
    # a model this process's registry does not know needs no code change: it gets a row of its own section
    assert "NewPlugin" in md and "*Other*" in md
    assert (out / "tables" / "comparison.tex").exists()
    assert (out / "tables" / "comparison.csv").exists()
    state = [json.loads(x) for x in (out / "suites/mini/state.jsonl").read_text().splitlines()]
    assert sorted(s["cell"] for s in state) == sorted(ids)
    # Rerun: nothing to do, nothing re-invoked.
    assert run_suite(suite, str(out), command_builder=fake_command) == 0
    assert set(invocations(out).values()) == {1}


def test_failure_isolation(tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "  - model: Broken\n    overrides: {fake_fail: true}\n"
                                 "  - model: Silent\n    overrides: {fake_norecord: true}\n"
                                 "  - SASRec\n", seeds="[1]")
    out = tmp_path / "out"
    assert run_suite(suite, str(out), command_builder=fake_command) == 1
    cells = {c.model: c for c in load_suite(suite).cells}
    assert set(records(out)) == {cells["SASRec"].id}  # the good cell still ran
    failed = json.loads((out / "suites/mini/failed" / f"{cells['Broken'].id}.failed.json")
                        .read_text())
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert "RuntimeError: fake failure for testing" in failed["error"]
    silent = json.loads((out / "suites/mini/failed" / f"{cells['Silent'].id}.failed.json")
                        .read_text())
    assert silent["returncode"] == 0 and "wrote no record" in silent["error"]
    assert "SASRec" in (out / "tables" / "comparison.md").read_text()
    # A rerun retries only the failed cells.
    assert run_suite(suite, str(out), command_builder=fake_command) == 1
    assert invocations(out) == Counter({cells["Broken"].id: 2, cells["Silent"].id: 2,
                                        cells["SASRec"].id: 1})


def test_invalid_suite_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [a]\nmodelz: []\n")
    assert run_suite(str(bad), str(tmp_path / "out"), command_builder=fake_command) == 2


def test_resume_after_kill_9(tmp_path: Path) -> None:
    """kill -9 the suite mid-run; the rerun runs only the cells that have no record."""
    suite = suite_file(tmp_path, "  - model: SASRec\n    overrides: {fake_sleep: 0.6}\n",
                       seeds="[1, 2, 3, 4, 5]")
    out = tmp_path / "out"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            "from bench_helpers import fake_command; "
            "from recbole_ext.benchmark.launch import run_suite; "
            f"sys.exit(run_suite({suite!r}, {str(out)!r}, command_builder=fake_command))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(records(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the suite finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = set(records(out))
    assert 2 <= len(before) < 5
    started = set(invocations(out))
    time.sleep(1.5)  # the cell in flight died with the suite: it writes no record later
    if sys.platform.startswith("linux"):
        assert set(records(out)) == before
    for path in (out / "runs").rglob("*.json"):  # no half-written records
        assert read_record(path) is not None
    assert run_suite(suite, str(out), command_builder=fake_command) == 0
    ids = {c.id for c in load_suite(suite).cells}
    assert set(records(out)) == ids
    calls = invocations(out)
    assert all(calls[i] == 1 for i in before)  # finished cells were not rerun
    assert all(calls[i] == (2 if i in started - before else 1) for i in ids)  # only missing


def test_sigterm_kills_running_cells(tmp_path: Path) -> None:
    """SIGTERM (e.g. a Slurm time limit) stops the suite and the cell it is running."""
    suite = suite_file(tmp_path, "  - model: SASRec\n    overrides: {fake_sleep: 4}\n",
                       seeds="[1, 2]")
    out = tmp_path / "out"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            "from bench_helpers import fake_command; "
            "from recbole_ext.benchmark.launch import run_suite; "
            f"sys.exit(run_suite({suite!r}, {str(out)!r}, command_builder=fake_command))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not invocations(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(4.5)  # the killed cell would have written its record by now
    assert records(out) == {}
    assert len(invocations(out)) == 1  # the queued cell never started


def test_gpu_slots_run_concurrently(tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "  - model: SASRec\n    overrides: {fake_sleep: 1.5}\n",
                       seeds="[1, 2, 3, 4]")
    out = tmp_path / "out"
    t0 = time.monotonic()
    assert run_suite(suite, str(out), gpus=["0", "1"], command_builder=fake_command) == 0
    lines = [ln.split() for ln in (out / "invocations.log").read_text().splitlines()]
    assert {ln[1] for ln in lines} == {"0", "1"}  # CUDA_VISIBLE_DEVICES per slot
    starts = sorted(float(ln[2]) for ln in lines)
    # Two slots: the first two cells start together; the 3rd only after one of them ended
    # (each sleeps 1.5 s after logging its start).
    assert starts[1] - starts[0] < 1.0 and starts[2] - starts[0] >= 1.5
    assert len(records(out)) == 4
    assert time.monotonic() - t0 < 60


def test_submitit_local_launcher(tmp_path: Path) -> None:
    pytest.importorskip("submitit", reason="submitit not installed (pip install submitit==1.5.4)")
    suite = suite_file(tmp_path, "  - SASRec\n", seeds="[1, 2]")
    out = tmp_path / "out"
    assert run_suite(suite, str(out), launcher="submitit-local",
                     command_builder=fake_command) == 0
    assert set(records(out)) == {c.id for c in load_suite(suite).cells}
    assert (out / "suites/mini/submitit").is_dir()


def test_unknown_launcher(tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "  - SASRec\n", seeds="[1]")
    assert run_suite(suite, str(tmp_path / "o"), launcher="ray",
                     command_builder=fake_command) == 2
