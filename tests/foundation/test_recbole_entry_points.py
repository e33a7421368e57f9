"""RecBole's own public entry points keep working under our compatibility layer (recbole_ext.compat):
``run_recbole``, ``objective_function`` (the hyper-parameter tuning objective, which calls
``ray.tune.report``), and its evaluation settings (orders RO/TO, splits RS/LS, full and uni100
ranking), as RecBole 1.2.1's tests/evaluation_setting exercise them. CI catches the next break."""

from __future__ import annotations

import math

import pytest

from recbole_ext import compat
from synthetic_data import write_sequences

compat.apply()

FAST = {"epochs": 1, "embedding_size": 8, "hidden_size": 8, "train_batch_size": 256, "eval_batch_size": 256,
        "use_gpu": False, "show_progress": False, "state": "ERROR", "metrics": ["Recall", "NDCG", "MRR"],
        "topk": [10], "valid_metric": "MRR@10", "reproducibility": True,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A 60-user, 150-item dataset (enough items for 100 sampled negatives); RecBole writes ./log and
    ./saved, so the test runs in a folder of its own."""
    write_sequences(tmp_path / "data", "entry", n_users=60, n_items=150, min_len=8, max_len=14)
    monkeypatch.chdir(tmp_path)
    return {"data_path": str(tmp_path / "data"), "dataset": "entry",
            "checkpoint_dir": str(tmp_path / "saved"), **FAST}


def check_result(result):
    assert set(result["test_result"]) == {"recall@10", "ndcg@10", "mrr@10"}
    for value in (*result["test_result"].values(), *result["best_valid_result"].values()):
        assert 0.0 <= float(value) <= 1.0 and math.isfinite(float(value))
    assert result["valid_score_bigger"] is True


def test_run_recbole(dataset):
    from recbole.quick_start import run_recbole

    result = run_recbole(model="GRU4Rec", dataset="entry",
                         config_dict={**dataset, "loss_type": "CE", "train_neg_sample_args": None})
    check_result(result)


SETTINGS = {  # RecBole's evaluation_setting cases: model, eval_args
    "RO_RS_full": ("BPR", {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"}),
    "TO_RS_full": ("BPR", {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"}),
    "RO_LS_uni100": ("BPR", {"split": {"LS": "valid_and_test"}, "order": "RO", "mode": "uni100"}),
    "TO_LS_full": ("GRU4Rec", {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}),
    "TO_LS_uni100": ("GRU4Rec", {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_objective_function_in_every_evaluation_setting(dataset, setting):
    from recbole.quick_start import objective_function

    model, eval_args = SETTINGS[setting]
    extra = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}} if model == "BPR" else \
        {"loss_type": "CE", "train_neg_sample_args": None}
    result = objective_function(config_dict={**dataset, "model": model, "eval_args": {"group_by": "user", **eval_args},
                                             **extra}, saved=True)
    assert result["model"] == model
    check_result(result)
