"""The runner end to end: a plugin and a built-in through RecBole's trainer, records, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_ext import registry
from recbole_ext.benchmark.collect import load_records
from recbole_ext.benchmark.records import RecordExistsError
from recbole_ext.runner import UnknownDatasetError, run

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
FAST = {"epochs": 1, "train_batch_size": 64, "eval_batch_size": 64, "embedding_size": 8}


@pytest.fixture
def plugins():
    registry.register("MeanPoolRec", "foundation.tiny_plugin:MeanPoolRec", group="traditional")
    registry.register("ExplodingRec", "foundation.tiny_plugin:ExplodingRec", group="traditional")
    yield
    registry.unregister("MeanPoolRec")
    registry.unregister("ExplodingRec")


def test_plugin_trains_through_recbole_and_writes_record(plugins, tiny_dataset, tmp_path, monkeypatch):
    data_path, name = tiny_dataset
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    out = tmp_path / "out"
    record = run("MeanPoolRec", name, overrides={**FAST, "data_path": data_path}, output_dir=out, run_id="r1",
                 argv=["run_benchmark.py", "--model=MeanPoolRec"])

    path = out / "runs" / name / "MeanPoolRec" / "r1.json"
    stored = json.loads(path.read_text())
    assert stored == {"schema_version": 1, **record}  # what run() returns is what it stored
    assert stored["run_id"] == "r1" and stored["schema_version"] == 1 and stored["status"] == "ok"
    for key in ("model", "dataset", "seed", "config", "valid", "test", "timings", "versions", "device"):
        assert key in stored
    assert set(stored["test"]) == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
    assert stored["config"]["embedding_size"] == 8 and stored["config"]["epochs"] == 1
    assert stored["timings"]["epochs"] == 1 and stored["timings"]["s_per_epoch"] > 0
    assert {"python", "torch", "recbole", "recbole_ext", "git_commit", "numpy", "pandas", "scipy", "transformers",
            "sentence_transformers", "faiss", "cuda", "nvidia_driver", "gpus"} <= set(stored["versions"])
    provenance = stored["provenance"]
    assert provenance["cwd"] == str(workdir) and provenance["argv"] == ["run_benchmark.py", "--model=MeanPoolRec"]
    assert provenance["executable"] == sys.executable and set(provenance["git"]) >= {"commit", "dirty", "diff_sha256"}
    assert stored["device"].startswith("cpu")
    assert stored["extra"] == {"pooling": "mean"}  # the model's record_extra()

    per_user = stored["per_user"]["test"]
    assert sorted(per_user["user_ids"]) == sorted(f"u{i}" for i in range(40))  # every user once, by token
    for metric, value in stored["test"].items():
        assert np.mean(per_user[metric]) == pytest.approx(value, abs=1e-6)
    # hit@5 <= hit@10 and ndcg <= hit, user by user
    assert all(a <= b for a, b in zip(per_user["hit@5"], per_user["hit@10"]))
    assert all(n <= h + 1e-12 for n, h in zip(per_user["ndcg@10"], per_user["hit@10"]))

    assert list(workdir.iterdir()) == []  # nothing written to the working directory
    artifacts = out / "artifacts" / name / "MeanPoolRec" / "r1"
    assert (artifacts / "run.log").is_file() and list((artifacts / "checkpoints").glob("*.pth"))
    log = (artifacts / "run.log").read_text()
    assert "The number of users: 41" in log and "\x1b[" not in log  # RecBole's summary, without colour codes
    assert [r["run_id"] for r in load_records(out)] == ["r1"]

    with pytest.raises(RecordExistsError):
        run("MeanPoolRec", name, overrides={**FAST, "data_path": data_path}, output_dir=out, run_id="r1")


def test_crashed_run_leaves_no_record(plugins, tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    with pytest.raises(RuntimeError, match="boom"):
        run("ExplodingRec", name, overrides={**FAST, "data_path": data_path}, output_dir=tmp_path, run_id="x")
    assert not list((tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else True


def test_unknown_dataset_lists_available(tiny_dataset, tmp_path):
    data_path, _ = tiny_dataset
    with pytest.raises(UnknownDatasetError) as info:
        run("GRU4Rec", "nosuchdata", overrides={"data_path": data_path}, output_dir=tmp_path)
    assert "'nosuchdata'" in str(info.value) and "prepared folders there: tiny" in str(info.value) and "ml-100k" in str(info.value)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_cli_builtin_model_end_to_end(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "out"
    args = ["--model=GRU4Rec", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1",
            "--embedding_size=8", "--hidden_size=8", "--train_batch_size=64", f"--output_dir={out}", "--run_id=cli1"]
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GRU4Rec on tiny (run cli1) test: hit@5=" in result.stdout
    record = json.loads((out / "runs" / name / "GRU4Rec" / "cli1.json").read_text())
    assert record["config"]["hidden_size"] == 8 and record["config"]["model"] == "GRU4Rec"
    # the command as typed, where it was typed, and the code it ran
    assert record["provenance"]["argv"][1:] == args and record["provenance"]["argv"][0].endswith("run_benchmark.py")
    assert record["provenance"]["cwd"] == str(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert record["provenance"]["git"]["commit"] == head.stdout.strip()
        assert record["versions"]["git_commit"].startswith(head.stdout.strip())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # nothing in the cwd
    assert "\x1b[" not in result.stderr  # a pipe is not a terminal: no colour codes
    assert "GradScaler" not in result.stderr and "chained assignment" not in result.stderr  # RecBole's, silenced


def test_cli_errors(tmp_path, tiny_dataset):
    data_path, name = tiny_dataset
    result = _cli("--model=NoSuchModel", cwd=tmp_path)
    assert result.returncode == 2 and "unknown model 'NoSuchModel'" in result.stderr and "SASRec" in result.stderr
    result = _cli("--model=GRU4Rec", "--dataset=nope", f"--data_path={data_path}", cwd=tmp_path)
    assert result.returncode == 2 and "unknown dataset 'nope'" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    result = _cli("--model=GRU4Rec", f"--dataset={name}", f"--data_path={data_path}", f"--config_files={bad}", cwd=tmp_path)
    assert result.returncode == 2 and f"malformed YAML in {bad}:" in result.stderr
    result = _cli("stray", cwd=tmp_path)
    assert result.returncode == 2 and "--key=value" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.cuda
def test_same_command_trains_on_gpu(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    record = run("GRU4Rec", name, overrides={**FAST, "hidden_size": 8, "data_path": data_path, "use_gpu": True},
                 output_dir=tmp_path, run_id="gpu")
    assert record["device"].startswith("cuda")


def test_cli_suite_shows_progress_and_isolates_a_failing_cell(tmp_path):
    suite = tmp_path / "broken.yaml"
    suite.write_text("name: broken\ndatasets: [ml-100k]\nseeds: [1]\nmodels: [NoSuchModel]\n")
    result = _cli(f"--suite={suite}", f"--output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "suite broken: 1 cells" in result.stderr and "cell 1/1 start NoSuchModel/ml-100k" in result.stderr
    assert list((tmp_path / "out" / "suites" / "broken" / "failed").glob("*.failed.json"))
