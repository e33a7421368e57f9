"""bf16 autocast: on for a generative model training on a GPU (matmuls in bf16, weights fp32, a finite
loss that falls), off on the CPU."""

import pytest
import torch

from synthetic_data import tiny_loaders


def trainer_for(data_path, name, cache, **overrides):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.generative import GenerativeTrainer

    config, (train, valid, _) = tiny_loaders("TIGER", data_path, name, cache, **overrides)
    model = TIGER(config, train._dataset).to(config["device"])
    return GenerativeTrainer(config, model), train, valid


def linear_output_dtypes(model):
    """Records the dtype of every nn.Linear output while it runs."""
    seen = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_bf16_is_off_on_the_cpu(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole's trainer writes ./log_tensorboard
    trainer, train, _ = trainer_for(*tiny_dataset, tmp_path / "sid", bf16=True)
    assert trainer.use_bf16 is False
    seen, hooks = linear_output_dtypes(trainer.model)
    assert trainer._train_epoch(train, 0) > 0
    assert seen == {torch.float32}
    for h in hooks:
        h.remove()


@pytest.mark.cuda
def test_bf16_training_on_the_gpu(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, train, valid = trainer_for(*tiny_dataset, tmp_path / "sid", bf16=True, use_gpu=True, learning_rate=0.01,
                                        warmup_steps=0)
    assert trainer.use_bf16 is True and next(trainer.model.parameters()).device.type == "cuda"
    seen, hooks = linear_output_dtypes(trainer.model)
    losses = [float(trainer._train_epoch(train, epoch)) for epoch in range(5)]
    for h in hooks:
        h.remove()
    assert torch.bfloat16 in seen  # the matmuls ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # ... the weights stay fp32
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    result = trainer.evaluate(valid, load_best_model=False)
    assert 0.0 <= result["ndcg@10"] <= 1.0
