"""Learning-rate schedule (hand-computed factors) and the training time budget, through the runner."""

import math

import pytest
import torch

from recbole_ext.trainers.lr_schedule import StepSchedule, check_schedule, lr_factor

from synthetic_data import TINY_GENERATIVE as TINY
from synthetic_data import tiny_loaders


def test_factors_by_hand():
    # warm-up 4: steps 0..3 -> 1/4, 2/4, 3/4, then 1 (constant) or sqrt(4/n) (inverse_sqrt)
    assert [lr_factor(s, 4, "constant") for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 4, "inverse_sqrt") for s in (0, 2, 3, 15, 99)] == [0.25, 0.75, 1.0, 0.5, 0.2]
    assert lr_factor(7, 4, "inverse_sqrt") == pytest.approx(math.sqrt(0.5))
    assert lr_factor(123, 0, "constant") == 1.0


def test_cosine_factors_by_hand():
    # warm-up 2 of 6 steps: 1/2, 1, then 0.5 (1 + cos(pi p)), p = (step - 2) / 4 = 0, 1/4, 1/2, 3/4, then 0
    got = [lr_factor(s, 2, "cosine", total_steps=6) for s in range(8)]
    c = math.cos(math.pi / 4)
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + c), 0.5, 0.5 * (1 - c), 0.0, 0.0])
    assert got[3] == pytest.approx(0.853553, abs=1e-6) and got[5] == pytest.approx(0.146447, abs=1e-6)
    assert [lr_factor(s, 0, "cosine", total_steps=4) for s in range(4)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447],
                                                                                          abs=1e-6)
    with pytest.raises(ValueError, match="needs the horizon"):
        lr_factor(0, 2, "cosine")


def test_warmup_ratio_resolves_against_the_horizon():
    schedule = StepSchedule(1000, "cosine", warmup_ratio=0.01)  # the ratio replaces warmup_steps
    schedule.set_horizon(8200)  # e.g. 100 epochs x 82 batches
    assert schedule.warmup_steps == 82 and schedule.total_steps == 8200
    schedule.set_horizon(150)
    assert schedule.warmup_steps == 2  # ceil(1.5)
    assert schedule.describe() == {"warmup_steps": 2, "decay": "cosine", "warmup_ratio": 0.01, "total_steps": 150}
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=0.1)
    seen = []
    for _ in range(151):
        schedule.before_step(opt)
        seen.append(opt.param_groups[0]["lr"])
    assert seen[:3] == pytest.approx([0.05, 0.1, 0.1]) and seen[-1] == 0.0 and seen[-2] == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi * 147 / 148)))
    assert StepSchedule(0, "constant", warmup_ratio=0.05).active


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="needs warmup_steps > 0"):
        check_schedule(0, "inverse_sqrt")
    with pytest.raises(ValueError, match="choose one of"):
        check_schedule(10, "linear")
    with pytest.raises(ValueError, match="must be >= 0"):
        StepSchedule(-1, "constant")
    with pytest.raises(ValueError, match=r"warmup_ratio=1.5 must be in \[0, 1\)"):
        StepSchedule(0, "cosine", warmup_ratio=1.5)
    with pytest.raises(ValueError, match="needs warmup_steps > 0"):
        StepSchedule(0, "inverse_sqrt", warmup_ratio=0.0)
    ratio_only = StepSchedule(0, "inverse_sqrt", warmup_ratio=0.001)  # resolved at the horizon: ceil(0.1) = 1
    ratio_only.set_horizon(100)
    assert ratio_only.warmup_steps == 1


def test_schedule_sets_lr_and_restarts_with_a_new_optimizer():
    w = torch.nn.Parameter(torch.zeros(2))
    first = torch.optim.AdamW([w], lr=0.01)
    schedule = StepSchedule(2, "inverse_sqrt")
    seen = []
    for _ in range(4):
        schedule.before_step(first)
        seen.append(first.param_groups[0]["lr"])
    assert seen == pytest.approx([0.005, 0.01, 0.01 * math.sqrt(2 / 3), 0.01 * math.sqrt(2 / 4)])
    second = torch.optim.AdamW([w], lr=0.1)  # e.g. the next STREAM-Rec stage
    schedule.before_step(second)
    assert second.param_groups[0]["lr"] == pytest.approx(0.05)
    assert not StepSchedule(0, "constant").active and StepSchedule(2, "inverse_sqrt").active


def test_trainer_follows_the_schedule(tiny_dataset, tmp_path):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    config, (train, _, _) = tiny_loaders("TIGER", data_path, name, tmp_path / "sid",
                                         warmup_steps=1000, lr_decay="inverse_sqrt")
    trainer = GenerativeTrainer(config, TIGER(config, train._dataset))
    trainer._train_epoch(train, 0)
    steps = len(train)
    assert trainer.schedule.step_count == steps
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * steps / 1000)  # still warming up


def test_time_budget_stops_after_a_validation_and_says_so(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    overrides = {"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY,
                 "epochs": 5, "train_time_budget_s": 0}
    record = run("TIGER", name, overrides=overrides, output_dir=tmp_path / "out", run_id="budget")
    assert record["timings"]["epochs"] == 1  # one epoch and its validation, then the budget stops it
    assert record["extra"]["stopped_by_time_budget"] is True and record["extra"]["time_budget_s"] == 0.0
    # the family YAML's schedule; horizon = 5 epochs x 3 batches of 64 (tiny: 40 users, 136 training rows)
    assert record["extra"]["lr_schedule"] == {"warmup_steps": 1000, "decay": "inverse_sqrt", "warmup_ratio": None,
                                              "total_steps": 15}
    assert record["test"]["ndcg@10"] >= 0
    unbounded = run("TIGER", name, overrides={**overrides, "train_time_budget_s": None, "epochs": 2},
                    output_dir=tmp_path / "out", run_id="free")
    assert unbounded["timings"]["epochs"] == 2 and unbounded["extra"]["stopped_by_time_budget"] is False
