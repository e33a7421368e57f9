"""SIGKILL in mid-training, for real: ``run_benchmark.py`` training GRU4Rec on a tiny dataset.

A killed run leaves no record and no partial file, and the same command then finishes; a suite
killed while its second cell trains keeps the first cell's record, loses only the second (whose
process dies with the suite), and its rerun runs only that one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbole_ext.benchmark.collect import read_record

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["--epochs=60", "--stopping_step=1000", "--embedding_size=8", "--hidden_size=8", "--train_batch_size=64"]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _start(args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")


def _wait_for(proc, text, timeout=300):
    """Read the process's output until a line holds ``text``; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
    pytest.fail(f"the process ended (rc {proc.wait()}) before {text!r}:\n{''.join(lines[-30:])}")


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def _processes_mentioning(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_sigkilled_run_leaves_nothing_and_its_rerun_finishes(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "out"
    args = ["--model=GRU4Rec", f"--dataset={name}", f"--data_path={data_path}", *TRAIN, f"--output_dir={out}",
            "--run_id=k1", "--no_tables"]
    proc = _start(args, tmp_path)
    _wait_for(proc, "epoch 2 training")
    _kill(proc)
    assert _files(out / "runs") == []  # no record, no temporary record file
    assert not [p for p in _files(out) if p.endswith(".tmp")]
    assert not (out / "tables").exists()

    rerun = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _files(out / "runs") == [f"{name}/GRU4Rec/k1.json"]
    record = read_record(out / "runs" / name / "GRU4Rec" / "k1.json")
    assert record["timings"]["epochs"] == 60


def test_suite_killed_mid_cell_loses_only_that_cell(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    suite = tmp_path / "two.yaml"
    suite.write_text(f"name: two\ndatasets: [{name}]\nseeds: [1]\n"
                     "overrides: {embedding_size: 8, hidden_size: 8, train_batch_size: 64, stopping_step: 1000}\n"
                     "models:\n  - {model: GRU4Rec, overrides: {epochs: 1}}\n  - {model: GRU4Rec, overrides: {epochs: 60}}\n"
                     "table: {plots: []}\n")
    out = tmp_path / "out"
    args = [f"--suite={suite}", f"--output_dir={out}", f"--data_path={data_path}"]
    proc = _start(args, tmp_path)
    _wait_for(proc, "cell 1/2 GRU4Rec/tiny seed 1 done")
    _wait_for(proc, "cell 2/2 GRU4Rec/tiny: epoch 2")  # the second cell is training
    _kill(proc)
    cells = json.loads((out / "suites/two/suite.json").read_text())["cells"]
    first, second = (c["id"] for c in cells)
    deadline = time.monotonic() + 30
    while _processes_mentioning(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(second) == []  # the cell died with the suite
    assert _files(out / "runs") == [f"{name}/GRU4Rec/{first}.json"]
    assert read_record(out / "runs" / name / "GRU4Rec" / f"{first}.json")["timings"]["epochs"] == 1
    assert not [p for p in _files(out) if p.endswith(".tmp")]
    state = [json.loads(line) for line in (out / "suites/two/state.jsonl").read_text().splitlines()]
    assert [(s["cell"], s["status"]) for s in state] == [(first, "ok")]

    rerun = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 cells, 1 finished already (skipped), 1 to run" in rerun.stderr
    assert _files(out / "runs") == sorted(f"{name}/GRU4Rec/{c}.json" for c in (first, second))
    assert read_record(out / "runs" / name / "GRU4Rec" / f"{first}.json")["timings"]["epochs"] == 1  # not rerun
