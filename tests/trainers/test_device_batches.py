"""DeviceBatches: the loader's rows, batch sizes and shuffling, cut from device-resident tensors."""

import pytest
import torch

from synthetic_data import tiny_loaders


def loaders(data_path, name, cache, **overrides):
    return tiny_loaders("TIGER", data_path, name, cache, **overrides)


def rows(batch, fields):
    """Each row of a batch as a tuple over ``fields`` (lists flattened to tuples)."""
    cols = [batch[f].tolist() for f in fields]
    return [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in zip(*cols)]


def test_same_rows_and_batches_as_recbole_loader(tiny_dataset, tmp_path):
    from recbole_ext.trainers.device_batches import device_batches_for

    data_path, name = tiny_dataset
    config, (train, _, _) = loaders(data_path, name, tmp_path / "sid")
    batches, why = device_batches_for(train, "cpu")
    assert why == "" and batches is not None
    n = len(train._dataset)
    assert batches.n == n and len(batches) == len(train) == -(-n // 64)
    fields = ["user_id", "item_id", "item_id_list", "item_length"]
    theirs = sorted(r for b in train for r in rows(b, fields))
    first = [rows(b, fields) for b in batches]
    assert [len(b) for b in first] == [64] * (n // 64) + ([n % 64] if n % 64 else [])
    assert sorted(r for b in first for r in b) == theirs  # every row exactly once per epoch
    second = [r for b in batches for r in rows(b, fields)]
    assert sorted(second) == theirs and second != [r for b in first for r in b]  # reshuffled


def test_declines_loaders_that_build_batches_on_the_host(tiny_dataset, tmp_path):
    from recbole_ext.trainers.device_batches import device_batches_for

    data_path, name = tiny_dataset
    _, (train, _, _) = loaders(data_path, name, tmp_path / "sid",
                               train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    assert device_batches_for(train, "cpu") == (None, "the training loader samples negatives")
    _, (train, _, _) = loaders(data_path, name, tmp_path / "sid", transform="mask_itemseq",
                               mask_ratio=0.2, ft_ratio=0.0)
    assert device_batches_for(train, "cpu") == (None, "the training loader applies transform 'mask_itemseq'")


def test_trainer_switch(tiny_dataset, tmp_path):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.device_batches import DeviceBatches
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    for on in (True, False):
        config, (train, _, _) = loaders(data_path, name, tmp_path / "sid", data_on_device=on)
        trainer = GenerativeTrainer(config, TIGER(config, train._dataset))
        got = trainer.training_batches(train)
        assert isinstance(got, DeviceBatches) if on else got is train
        assert trainer.training_batches(train) is got  # built once per loader
        assert trainer._train_epoch(train, 0) > 0


@pytest.mark.cuda
def test_rows_live_on_the_gpu(tiny_dataset, tmp_path):
    from recbole_ext.trainers.device_batches import device_batches_for

    data_path, name = tiny_dataset
    _, (train, _, _) = loaders(data_path, name, tmp_path / "sid")
    batches, _ = device_batches_for(train, "cuda")
    got = list(batches)
    assert all(v.device.type == "cuda" for b in got for v in b.interaction.values())
    items = torch.cat([b["item_id"] for b in got]).cpu().sort().values
    assert torch.equal(items, train._dataset.inter_feat["item_id"].sort().values)
