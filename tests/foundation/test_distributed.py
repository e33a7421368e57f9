"""Data-parallel runs on the CPU: 2 gloo ranks agree with one process (gradients, evaluation), end to end
runs write one record, a failing rank leaves none (:mod:`recbole_ext.distributed`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from synthetic_data import TINY_GENERATIVE, tiny_loaders

from foundation.tiny_plugin import MeanPoolRec
from recbole_ext import distributed, registry
from recbole_ext.benchmark.collect import read_record
from recbole_ext.distributed import DistributedRunError
from recbole_ext.runner import run

TINY = {**TINY_GENERATIVE, "dropout_prob": 0.0, "state": "WARNING"}
STREAM_TINY = {**TINY, "sid_collision_codebook_size": 4, "neighbor_source": "sid", "reasoning_len": 2,
               "rl_group_size": 4, "rl_hard_negatives": 6}


class RankOneFails(MeanPoolRec):
    """Trains on rank 0; raises on rank 1 (a rank that dies mid-run)."""

    def calculate_loss(self, interaction):
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")
        return super().calculate_loss(interaction)


def _spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on 2 CPU ranks."""
    mp.spawn(worker, args=(distributed.free_port(), *args), nprocs=2, join=True, start_method="spawn")


def _join(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    distributed.init(rank, 2, rank, False, "127.0.0.1", port, "spawn")


# --- (1) a training step -----------------------------------------------------------------------------
def _tiger(data_path: str, name: str, sid: str):
    from recbole_ext.registry import resolve

    config, (train, _, test) = tiny_loaders("TIGER", data_path, name, sid, dropout_prob=0.0)
    torch.manual_seed(0)
    model = resolve("TIGER").model_class(config, train._dataset)
    return config, model, train, test


def _one_step(model, interaction) -> dict[str, torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # linear in the gradient: a fair comparison
    model.train()
    optimizer.zero_grad()
    model.calculate_loss(interaction).backward()
    distributed.average_gradients(model.parameters())  # a no-op in one process
    optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _step_worker(rank: int, port: int, model, interaction, out: str) -> None:
    _join(rank, port)
    model = copy.deepcopy(model)  # spawn passes tensors in shared memory: each rank its own weights
    half = len(interaction) // 2
    rows = torch.arange(rank * half, (rank + 1) * half)
    state = _one_step(model, interaction[rows])
    if rank == 0:
        torch.save(state, out)
    distributed.shutdown()


def test_two_ranks_on_halves_step_like_one_process_on_the_batch(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    _, model, train, _ = _tiger(data_path, name, str(tmp_path / "sid"))
    interaction = next(iter(train))[torch.arange(32)]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    whole = _one_step(model, interaction)
    model.load_state_dict(start)
    _spawn(_step_worker, model, interaction, str(tmp_path / "rank0.pt"))
    sharded = torch.load(tmp_path / "rank0.pt", weights_only=True)
    moved = [k for k in whole if not torch.equal(whole[k], start[k])]
    assert len(moved) > 10  # the step did update the weights
    for key in whole:
        torch.testing.assert_close(sharded[key], whole[key], rtol=1e-5, atol=1e-6)


def test_average_gradients_keeps_none_only_where_no_rank_has_a_gradient():
    _spawn(_none_worker)


def _none_worker(rank: int, port: int) -> None:
    _join(rank, port)
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad = torch.full((2,), float(rank + 1))  # 1 and 2 -> 1.5
    if rank == 0:
        b.grad = torch.full((2,), 4.0)  # 4 and (none = 0) -> 2
    distributed.average_gradients([a, b, c])
    assert torch.equal(a.grad, torch.full((2,), 1.5)) and torch.equal(b.grad, torch.full((2,), 2.0))
    assert c.grad is None
    distributed.shutdown()


# --- (2) sharded evaluation --------------------------------------------------------------------------
def _eval_worker(rank: int, port: int, data_path: str, name: str, sid: str, state: dict, out: str) -> None:
    from recbole_ext.trainers.generative import GenerativeTrainer

    _join(rank, port)
    config, model, _, test = _tiger(data_path, name, sid)
    assert not config["single_spec"] and len(list(test.sampler)) == 20  # this rank's half of the 40 users
    model.load_state_dict(state)
    trainer = GenerativeTrainer(config, model)
    result = dict(trainer.evaluate(test, load_best_model=False))
    if rank == 0:
        Path(out).write_text(json.dumps({"result": result, "per_user": trainer.per_user()}))
    distributed.shutdown()


def test_sharded_evaluation_gathers_the_single_process_metrics(tiny_dataset, tmp_path):
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    sid = str(tmp_path / "sid")
    config, model, _, test = _tiger(data_path, name, sid)
    for p in model.parameters():  # trained-looking weights: spread scores
        p.data.add_(0.3 * torch.randn_like(p))
    trainer = GenerativeTrainer(config, model)
    single = dict(trainer.evaluate(test, load_best_model=False))
    single_users = trainer.per_user()
    out = tmp_path / "eval.json"
    _spawn(_eval_worker, data_path, name, sid, model.state_dict(), str(out))
    sharded = json.loads(out.read_text())
    assert sharded["result"] == pytest.approx(single, abs=1e-6)
    assert sharded["per_user"]["user_ids"] == single_users["user_ids"]
    for key, values in single_users.items():
        assert sharded["per_user"][key] == pytest.approx(values, abs=1e-6)


# --- (3) end to end ------------------------------------------------------------------------------------
def _run(model: str, tiny_dataset, tmp_path, run_id: str, nproc: int = 2, **overrides) -> dict:
    data_path, name = tiny_dataset
    return run(model, name, output_dir=tmp_path / "out", run_id=run_id, nproc=nproc,
               overrides={"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
                          "stage_cache_dir": str(tmp_path / "stages"), **overrides})


def _check_record(record: dict, tmp_path: Path, model: str, run_id: str) -> None:
    path = tmp_path / "out" / "runs" / "tiny" / model / f"{run_id}.json"
    stored = json.loads(path.read_text())
    assert stored == {"schema_version": stored["schema_version"], **record}
    assert stored["distributed"] == {"world_size": 2, "backend": "gloo", "launcher": "spawn"}
    assert stored["config"]["single_spec"] is True and "world_size" not in stored["config"]
    assert len(stored["per_user"]["test"]["user_ids"]) == 40  # every test user once
    assert all(stored["test"][k] is not None for k in ("hit@10", "ndcg@10"))
    assert list((tmp_path / "out" / "runs" / "tiny" / model).iterdir()) == [path] and read_record(path) is not None


def test_baseline_on_two_ranks_writes_one_record(tiny_dataset, tmp_path):
    overrides = {"epochs": 1, "train_batch_size": 64, "eval_batch_size": 64, "embedding_size": 8,
                 "hidden_size": 8, "state": "WARNING"}
    record = _run("GRU4Rec", tiny_dataset, tmp_path, "ddp", **overrides)
    _check_record(record, tmp_path, "GRU4Rec", "ddp")
    single = run("GRU4Rec", tiny_dataset[1], output_dir=tmp_path / "single", run_id="one",
                 overrides={"data_path": tiny_dataset[0], **overrides})
    assert single["config_hash"] == record["config_hash"]  # the same cell
    assert set(single) == set(record) - {"distributed"}


def test_tiger_on_two_ranks_writes_one_record(tiny_dataset, tmp_path):
    record = _run("TIGER", tiny_dataset, tmp_path, "ddp", **TINY)
    _check_record(record, tmp_path, "TIGER", "ddp")


def test_stream_rec_all_stages_on_two_ranks(tiny_dataset, tmp_path):
    record = _run("STREAMRec", tiny_dataset, tmp_path, "ddp", **STREAM_TINY)
    _check_record(record, tmp_path, "STREAMRec", "ddp")
    assert [s["name"] for s in record["stages"]] == ["pt", "sft", "rl"]
    assert not any(s["extra"]["cached"] for s in record["stages"])
    assert len(list((tmp_path / "stages").rglob("*.pt"))) == 3  # rank 0 cached each stage once


def test_a_model_that_cannot_run_data_parallel_is_refused_before_any_work(tiny_dataset, tmp_path):
    """TwiSTAR builds its planner table from the rows a rank sees: with --nproc it is refused, one line."""
    from recbole_ext.validate import ConfigValueError

    with pytest.raises(ConfigValueError, match=r"^TwiSTAR does not train data-parallel \(its planner table.*"
                                               r"run it in one process"):
        _run("TwiSTAR", tiny_dataset, tmp_path, "tw", **TINY)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


# --- (4) a failing rank --------------------------------------------------------------------------------
@pytest.fixture
def failing_plugin():
    registry.register("RankOneFails", f"{__name__}:RankOneFails", group="traditional")
    yield
    registry.unregister("RankOneFails")


def test_a_failing_rank_ends_the_run_without_record(failing_plugin, tiny_dataset, tmp_path):
    with pytest.raises(DistributedRunError, match=r"rank 1 of 2 failed.*no record.*rank 1 fails on purpose"):
        _run("RankOneFails", tiny_dataset, tmp_path, "dead", epochs=1, train_batch_size=64, eval_batch_size=64,
             embedding_size=8, state="WARNING")
    assert not list((tmp_path / "out").rglob("runs/**/*.json"))


def test_cli_nproc_flag(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext import cli

    calls = {}
    monkeypatch.setattr("recbole_ext.runner.run", lambda *a, **k: calls.update(k) or {
        "model": "M", "dataset": "d", "run_id": "r", "test": {}})
    assert cli.main(["--model=GRU4Rec", "--nproc=2", "--no_tables", f"--output_dir={tmp_path}"]) == 0
    assert calls["nproc"] == 2 and "nproc" not in calls["overrides"]
    assert cli.main(["--model=GRU4Rec", "--nproc=0", "--no_tables"]) == 2


# --- several GPUs per suite cell -----------------------------------------------------------------------
def _suite(tmp_path: Path, slurm: str) -> str:
    path = tmp_path / "multi.yaml"
    path.write_text(f"name: multi\ndatasets: [ml-100k]\nseeds: [1]\nmodels: [SASRec]\nslurm: {slurm}\n"
                    "table: {plots: []}\n")
    return str(path)


def test_local_slots_hold_gpus_per_cell_gpus(tmp_path):
    from recbole_ext.benchmark.launch import SuiteRun, default_command
    from recbole_ext.benchmark.suite import load_suite

    suite = load_suite(_suite(tmp_path, "{}"))
    multi = SuiteRun(suite, tmp_path / "out", default_command, gpus_per_cell=2)
    assert multi._gpu_slots(["0", "1", "2", "3", "4"]) == ["0,1", "2,3"] and multi._gpu_slots([]) == [None]
    assert multi._command(suite.cells[0])[-1] == "--nproc=2"
    with pytest.raises(ValueError, match="gpus_per_cell=2"):
        multi._gpu_slots(["0"])
    single = SuiteRun(suite, tmp_path / "out", default_command)
    assert single._gpu_slots(["0", "1"]) == ["0", "1"] and "--nproc" not in " ".join(single._command(suite.cells[0]))


def test_slurm_job_asks_for_the_cells_gpus_and_starts_its_ranks(tmp_path, monkeypatch):
    import sys

    from benchmark import fake_submitit

    from recbole_ext.benchmark.launch import run_suite

    monkeypatch.setitem(sys.modules, "submitit", fake_submitit)
    monkeypatch.setattr(fake_submitit, "EXECUTORS", [])
    out = tmp_path / "out"
    suite = _suite(tmp_path, "{partition: gpu, gpus_per_cell: 2, timeout_min: 5}")
    assert run_suite(suite, str(out), launcher="slurm", tables=False,
                     command_builder=lambda cell, _: [sys.executable, "-c", "pass"]) == 1  # no record: a failure
    (executor,) = fake_submitit.EXECUTORS
    assert executor.parameters == {"partition": "gpu", "timeout_min": 5, "name": "recbole-ext-multi", "nodes": 1,
                                   "tasks_per_node": 1, "gpus_per_node": 2}
    (failed,) = (out / "suites" / "multi" / "failed").iterdir()
    assert json.loads(failed.read_text())["command"][-1] == "--nproc=2"


# --- (5) torchrun ----------------------------------------------------------------------------------------
def test_torchrun_runs_the_cli_as_two_ranks_and_one_record(tiny_dataset, tmp_path):
    """The README's ``torchrun --nproc_per_node=N run_benchmark.py ...`` for real (gloo on this CPU): every
    process is a rank from torchrun's environment, rank 0 alone writes the record, and it says so."""
    import os
    import subprocess
    import sys

    data_path, name = tiny_dataset
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "run_benchmark.py"), "--model=GRU4Rec", f"--dataset={name}", f"--data_path={data_path}",
           f"--output_dir={tmp_path / 'out'}", "--run_id=tr", "--no_tables", "--epochs=1",
           "--train_batch_size=64", "--eval_batch_size=64", "--embedding_size=8", "--hidden_size=8",
           "--state=WARNING"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp_path / "out" / "runs").rglob("*.json")
    record = json.loads(path.read_text())
    assert path.name == "tr.json" and record["distributed"] == {"world_size": 2, "backend": "gloo",
                                                                 "launcher": "torchrun"}
    assert len(record["per_user"]["test"]["user_ids"]) == 40  # every test user once, gathered from both ranks
