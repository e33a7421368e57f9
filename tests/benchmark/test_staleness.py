"""Finished cells trained under other defaults than properties/ holds now are named on rerun."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from bench_helpers import fake_command

from recbole_ext.benchmark.staleness import default_layers, stale_defaults
from recbole_ext.benchmark.launch import run_suite
from recbole_ext.benchmark.suite import load_suite


def test_layers_follow_extconfig_order():
    tiger = default_layers("TIGER", "scientific2018")
    assert tiger["lr_decay"] == "inverse_sqrt"  # properties/family/sid_generative.yaml
    assert tiger["valid_metric"] == "NDCG@10"  # properties/overall.yaml
    assert tiger["weight_decay"] == 0.01  # the family's 0.01 wins over overall.yaml's 0.0
    assert tiger["train_batch_size"] == 256  # the family's 256 wins over overall.yaml's 2048
    assert default_layers("SASRec", "ml-100k")["weight_decay"] == 0.0
    assert default_layers("NotAModel", "ml-100k")["weight_decay"] == 0.0  # unknown model: protocol layers only


@pytest.mark.parametrize("model", ["TIGER", "STREAMRec"])
def test_layers_are_what_extconfig_resolves(model):
    """Every scalar default the check compares is the value ExtConfig resolves: same layers, same order."""
    from recbole_ext.config import ExtConfig

    config = ExtConfig(model, "ml-100k").final_config_dict
    layers = default_layers(model, "ml-100k")
    assert layers["d_model"] == 256 and layers["num_beams"] == 20  # family keys are among the layers
    scalar = (str, int, float, bool, type(None))
    # RecBole expands train_neg_sample_args: ~ into a dict
    scalars = {k: v for k, v in layers.items() if isinstance(v, scalar) and k != "train_neg_sample_args"}
    assert {k: config[k] for k in scalars} == scalars


def test_a_changed_family_default_is_named():
    """A key of the family file (not in any model file) changed since a STREAM-Rec run is flagged."""
    config = {**default_layers("STREAMRec", "ml-100k"), "num_beams": 10, "warmup_steps": 500}
    assert stale_defaults("STREAMRec", "ml-100k", {}, {"config": config}) == [
        "num_beams: 10 -> 20", "warmup_steps: 500 -> 1000"]
    assert stale_defaults("STREAMRec", "ml-100k", {"num_beams": 10, "warmup_steps": 500}, {"config": config}) == []


def test_changed_added_and_overridden_keys():
    now = default_layers("TIGER", "ml-100k")
    config = {k: v for k, v in now.items() if k not in ("warmup_steps", "train_time_budget_s")}
    assert now["train_time_budget_s"] is None  # added as ~: absent and None mean the same to RecBole
    assert stale_defaults("TIGER", "ml-100k", {}, {"config": config}) == ["warmup_steps: (absent) -> 1000"]
    config.update(warmup_steps=1000, lr_decay="constant", learning_rate=0.001)
    assert stale_defaults("TIGER", "ml-100k", {}, {"config": config}) == ["lr_decay: 'constant' -> 'inverse_sqrt'"]
    assert stale_defaults("TIGER", "ml-100k", {"lr_decay": "constant"}, {"config": config}) == []  # the cell's own
    config.update(lr_decay="inverse_sqrt", learning_rate=1e-3, eval_args={"other": 1})  # 1e-3 == 0.001; dicts skipped
    assert stale_defaults("TIGER", "ml-100k", {}, {"config": config}) == []


def test_rerun_names_a_stale_cell(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    suite = tmp_path / "mini.yaml"
    suite.write_text("name: mini\ndatasets: [ml-100k]\nseeds: [1]\nmodels:\n  - SASRec\ntable: {plots: []}\n")
    out = tmp_path / "out"
    assert run_suite(str(suite), str(out), command_builder=fake_command) == 0
    (cell,) = load_suite(str(suite)).cells
    (path,) = (out / "runs").rglob(f"{cell.id}.json")
    record = json.loads(path.read_text())
    record["config"] = {**default_layers("SASRec", "ml-100k"), **cell.overrides}
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        assert run_suite(str(suite), str(out), command_builder=fake_command) == 0
    assert "other defaults" not in caplog.text  # same defaults: silent reuse is right
    record["config"]["stopping_step"] = 3
    path.write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_suite(str(suite), str(out), command_builder=fake_command) == 0
    assert f"cell {cell.id} was trained under other defaults" in caplog.text
    assert "stopping_step: 3 -> 10" in caplog.text and f"delete {path}" in caplog.text
