"""benchmarks/fair_baselines.yaml: the learning-rate grid for every ID baseline, SASRec with CE and
BCE as rows, and the BCE cell's overrides accepted by RecBole (one tiny epoch through the runner)."""

from pathlib import Path

import pytest

from recbole_ext.benchmark.suite import load_suite

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "fair_baselines.yaml"


def test_grid_and_rows():
    suite = load_suite(SUITE)
    cells = suite.cells
    assert len(cells) == (2 + 1 + 1 + 1) * 3 * 3  # (SASRec CE, BCE, GRU4Rec, BERT4Rec, Caser) x 3 lr x 3 seeds
    grid = {(c.model, c.label, c.overrides["learning_rate"]) for c in cells}
    for model in ("GRU4Rec", "BERT4Rec", "Caser"):
        assert {lr for m, _, lr in grid if m == model} == {0.001, 0.003, 0.005}
    sasrec = {c.label: c.model for c in cells if c.model.startswith("SASRec")}
    assert sasrec == {f"SASRec ({loss}, lr={lr})": model for loss, model in (("CE", "SASRec"), ("BCE", "SASRecBCE"))
                      for lr in (0.001, 0.003, 0.005)}
    assert {c.seed for c in cells} == {2020, 2021, 2022} and {c.dataset for c in cells} == {"scientific2018"}


def test_sasrec_bce_cell_runs(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    cell = next(c for c in load_suite(SUITE).cells if c.label == "SASRec (BCE, lr=0.003)")
    data_path, name = tiny_dataset
    overrides = {**cell.overrides, "data_path": data_path, "epochs": 1, "use_gpu": False,
                 "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1}
    record = run(cell.model, name, overrides=overrides, output_dir=tmp_path / "out", run_id="bce")
    assert record["config"]["loss_type"] == "BCE" and record["config"]["learning_rate"] == 0.003
    assert record["config"]["train_neg_sample_args"]["sample_num"] == 1
    assert record["test"]["ndcg@10"] is not None


def test_bce_loss_by_hand(tiny_dataset):
    """Eq. 6 of the SASRec paper on one hand-set batch: -log s(pos) - log(1 - s(neg)), averaged."""
    import math

    import torch
    from recbole.data import create_dataset, data_preparation

    from recbole_ext.config import ExtConfig
    from recbole_ext.registry import resolve

    data_path, name = tiny_dataset
    config = ExtConfig(resolve("SASRecBCE"), name, config_dict={"data_path": data_path, "use_gpu": False,
                                                                "hidden_size": 4, "inner_size": 8, "n_layers": 1,
                                                                "n_heads": 1})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = resolve("SASRecBCE").model_class(config, train._dataset)
    batch = next(iter(train))
    assert model.NEG_ITEM_ID in batch.interaction  # RecBole's pairwise sampler supplied the negatives
    seq = torch.full((2, model.max_seq_length), 0, dtype=torch.long)
    seq[:, 0] = 1
    hand = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.tensor([1, 1]), model.POS_ITEM_ID: torch.tensor([2, 3]),
            model.NEG_ITEM_ID: torch.tensor([4, 5])}
    model.eval()
    model.forward = lambda s, n: torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])  # [B, H]
    with torch.no_grad():
        model.item_embedding.weight.zero_()
        model.item_embedding.weight[2, 0] = 2.0  # user 0: pos score 2, neg score 0
        model.item_embedding.weight[3, 1] = -0.5  # user 1: pos score -1, neg score 1.5
        model.item_embedding.weight[5, 1] = 0.75
        loss = model.calculate_loss(hand).item()

    def softplus(x):
        return math.log1p(math.exp(x))

    expected = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.0) + softplus(1.5)) / 2
    assert loss == pytest.approx(expected, abs=1e-6)
    config["loss_type"] = "CE"
    with pytest.raises(ValueError, match="SASRecBCE trains with loss_type BCE"):
        resolve("SASRecBCE").model_class(config, train._dataset)
