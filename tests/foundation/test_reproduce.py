"""``python -m recbole_ext.reproduce RECORD``: the command behind a record, and a rerun that gives its numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from recbole_ext.reproduce import command_for, pinned_keys

ROOT = Path(__file__).resolve().parents[2]
GPU_TIGER = ROOT / "results/gpu_scientific2018/runs/scientific2018/TIGER/TIGER-scientific2018-s2020-ed3e5979bb37.json"


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_pinned_keys_hand_cases():
    record = {"config": {"epochs": 300, "eval_batch_size": 1024, "learning_rate": 0.001, "device": "cuda",
                         "data_path": "/x", "topk": [5, 10], "MODEL_TYPE": "SEQUENTIAL", "old_key": 1}}
    defaults = {"epochs": 300, "eval_batch_size": 4096, "learning_rate": 0.002, "device": "cpu", "data_path": "y",
                "topk": [10], "warmup_steps": 1000, "added_as_none": None, "MODEL_TYPE": "x"}
    assert pinned_keys(record, defaults) == {"eval_batch_size": 1024, "learning_rate": 0.001, "warmup_steps": None}


def test_an_older_record_is_rebuilt_from_its_config():
    record = json.loads(GPU_TIGER.read_text())
    assert "provenance" not in record
    command, cwd, notes = command_for(record)
    assert cwd is None and command[:5] == ["python", "run_benchmark.py", "--model=TIGER", "--dataset=scientific2018",
                                           "--seed=2020"]
    # the suite's override, and the schedule keys added after the run (it trained without them)
    assert {"--eval_batch_size=1024", "--lr_decay=None", "--warmup_steps=None"} <= set(command)
    assert "--epochs=300" not in command  # equal to today's default
    assert command[-1] == "--run_id=TIGER-scientific2018-s2020-ed3e5979bb37"
    assert "code: git checkout ec63a33b001e0c47ae4ab3cb1e11af35ba6ba76d" in notes
    assert any("uncommitted changes" in n for n in notes) and any("--data_path=FOLDER" in n for n in notes)
    command, _, _ = command_for(record, output_dir="elsewhere")
    assert command[-1] == "--output_dir=elsewhere" and not any(a.startswith("--run_id=") for a in command)


def test_rerun_from_the_record_reproduces_its_numbers(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "out"
    args = ["--model=GRU4Rec", f"--dataset={name}", f"--data_path={data_path}", "--epochs=2", "--embedding_size=8",
            "--hidden_size=8", "--train_batch_size=64", f"--output_dir={out}", "--run_id=first", "--no_tables"]
    first = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    path = out / "runs" / name / "GRU4Rec" / "first.json"
    record = json.loads(path.read_text())

    command, cwd, _ = command_for(record, output_dir=str(tmp_path / "again"))
    assert cwd == str(tmp_path) and command[1] == str(ROOT / "run_benchmark.py")
    shown = subprocess.run([sys.executable, "-m", "recbole_ext.reproduce", str(path)], capture_output=True,
                           text=True, env=_env(), timeout=300)
    assert shown.returncode == 0 and shown.stdout.strip().splitlines()[-1].startswith(f"cd {tmp_path} && python ")

    rerun = subprocess.run([sys.executable, "-m", "recbole_ext.reproduce", str(path), f"--output_dir={tmp_path / 'again'}",
                            "--run"], capture_output=True, text=True, env=_env(), timeout=600, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (again,) = (tmp_path / "again" / "runs" / name / "GRU4Rec").glob("*.json")
    again = json.loads(again.read_text())
    assert again["test"] == record["test"] and again["valid"] == record["valid"]
    assert again["config_hash"] == record["config_hash"]
