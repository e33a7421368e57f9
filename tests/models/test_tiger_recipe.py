"""The references' recipe as options: EOS after history / target, the tiger_paper preset, cosine
schedule through the trainer, validation every N epochs and validation-loss early stopping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from synthetic_data import TINY_GENERATIVE as TINY
from synthetic_data import tiny_loaders

ROOT = Path(__file__).resolve().parents[2]


def _s2s(history_eos: bool):
    from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq
    from recbole_ext.sid import SIDVocab

    torch.manual_seed(0)
    codes = torch.tensor([[-1, -1], [0, 0], [0, 1], [1, 1]])  # padding row + 3 items
    backbone = {"num_layers": 1, "num_decoder_layers": 1, "d_model": 16, "d_ff": 32, "num_heads": 2, "d_kv": 8,
                "dropout": 0.0}
    return SIDSeq2Seq(SIDVocab((2, 2)), codes, backbone, history_eos=history_eos).eval()


def test_history_eos_follows_the_last_history_token():
    s2s = _s2s(history_eos=True)
    items = torch.tensor([[1, 2, 0], [3, 0, 0], [3, 3, 3]])  # RecBole pads at the end
    ids, mask = s2s.history_tokens(items)  # [3, 3*2 + 1]
    # layout: pad 0, eos 1, bos 2, level 0 -> 3, 4, level 1 -> 5, 6
    assert ids.tolist() == [[3, 5, 3, 6, 1, 0, 0], [4, 6, 1, 0, 0, 0, 0], [4, 6, 4, 6, 4, 6, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1] * 7]
    plain, plain_mask = _s2s(history_eos=False).history_tokens(items)
    assert plain.tolist() == [[3, 5, 3, 6, 0, 0], [4, 6, 0, 0, 0, 0], [4, 6, 4, 6, 4, 6]]
    assert plain_mask.sum().item() == 12 and mask.sum().item() == 15
    assert s2s.append_eos(torch.tensor([[4, 6], [3, 5]])).tolist() == [[4, 6, 1], [3, 5, 1]]


def _build(model_name, data_path, name, tmp_path, **overrides):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig
    from recbole_ext.registry import resolve

    resolved = resolve(model_name)
    extra = {"sid_collision_codebook_size": 4, "neighbor_source": "sid"} if model_name == "STREAMRec" else {}
    config = ExtConfig(resolved, name, config_dict={"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
                                                    **TINY, "sid_collision_codebook_size": 4, **extra, **overrides})
    init_seed(config["seed"], True)
    train, valid, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return resolved.model_class(config, train._dataset), config, train, valid


def test_target_eos_is_one_more_ce_term(tiny_dataset, tmp_path):
    model, _, train, _ = _build("TIGER", *tiny_dataset, tmp_path, target_eos=True)
    model.eval()
    batch = next(iter(train))
    ids, mask = model.history_tokens(batch)
    target = model.target_tokens(batch)  # [B, m]
    with torch.no_grad():
        logp, _ = model.seq2seq.token_logprobs(model.seq2seq.encode(ids, mask), mask, model.seq2seq.append_eos(target))
        loss = model.calculate_loss(batch)
        assert logp.shape == (len(batch), 4)  # m = 3 codes + EOS
        assert loss.item() == pytest.approx(-logp.mean().item(), abs=1e-6)  # mean over the m + 1 tokens
        model.target_eos = False
        assert model.calculate_loss(batch).item() == pytest.approx(-logp[:, :3].mean().item(), abs=1e-6)


def test_stream_rec_refuses_target_eos(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="target_eos is not supported by STREAMRec"):
        _build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=0, target_eos=True)


def test_history_eos_keeps_stream_rec_l0_equal_to_tiger(tiny_dataset, tmp_path):
    tiger, _, train, _ = _build("TIGER", *tiny_dataset, tmp_path, history_eos=True)
    stream, config, _, _ = _build("STREAMRec", *tiny_dataset, tmp_path, history_eos=True, reasoning_len=0)
    sft = next(s for s in stream.build_stages(config) if s.name == "sft")
    batch = next(iter(train))
    ids, _ = tiger.history_tokens(batch)
    assert (ids == tiger.vocab.eos).sum(1).tolist() == [1] * len(batch)  # one EOS per history
    assert torch.equal(stream.history_tokens(batch)[0], ids)  # one encoder input format for both
    tiger.train(), stream.train()
    torch.manual_seed(7)
    expected = tiger.calculate_loss(batch)
    torch.manual_seed(7)
    loss, _ = stream.sft_loss(batch, sft.config)
    # same terms; T5's mean CE and STREAM-Rec's sum / count may round the last bit differently
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    tiger.eval(), stream.eval()
    assert torch.equal(stream.full_sort_predict(batch), tiger.full_sort_predict(batch))


def test_history_eos_l0_sft_only_trains_like_tiger(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    common = {**TINY, "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), "state": "WARNING",
              "learning_rate": 0.01, "epochs": 2, "history_eos": True, "sid_collision_codebook_size": 4,
              "neighbor_source": "sid"}
    tiger = run("TIGER", name, output_dir=tmp_path / "out", run_id="t", overrides=common)
    stream = run("STREAMRec", name, output_dir=tmp_path / "out", run_id="s", overrides={
        **common, "reasoning_len": 0, "stages": "sft", "stage_cache": False})
    assert stream["test"] == tiger["test"] and stream["valid"] == tiger["valid"]
    assert stream["per_user"]["test"] == tiger["per_user"]["test"]


def test_tiger_paper_preset_sizes(tiny_dataset, tmp_path):
    from recbole_ext.config import ExtConfig

    data_path, name = tiny_dataset
    preset = ROOT / "properties" / "presets" / "tiger_paper.yaml"
    config = ExtConfig("TIGER", name, config_file_list=[str(preset)], config_dict={"data_path": data_path})
    assert [config[k] for k in ("d_model", "num_heads", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                                "dropout_prob")] == [128, 6, 64, 1024, 4, 4, 0.1]
    default = ExtConfig("TIGER", name, config_dict={"data_path": data_path})
    assert (default["d_model"], default["num_heads"]) == (256, 4)  # the family defaults stay
    ref = ExtConfig("TIGER", name, config_file_list=[str(ROOT / "properties" / "presets" /
                                                         "scientific2018_reference.yaml")],
                    config_dict={"data_path": data_path})
    assert (ref["d_model"], ref["learning_rate"], ref["lr_decay"], ref["warmup_ratio"], ref["stopping_step"],
            ref["valid_loss_stopping"], ref["history_eos"], ref["target_eos"], ref["train_batch_size"]) == (
        128, 0.0005, "cosine", 0.01, 20, True, True, True, 512)
    from recbole_ext.modules.t5_backbone import build_t5
    from recbole_ext.modules.sid_seq2seq import backbone_settings

    t5 = build_t5(100, **backbone_settings(config))
    attention = t5.encoder.block[0].layer[0].SelfAttention
    assert (attention.n_heads, attention.key_value_proj_dim, t5.config.d_ff) == (6, 64, 1024)


def test_cosine_schedule_through_the_trainer(tiny_dataset, tmp_path):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    config, (train, valid, _) = tiny_loaders("TIGER", data_path, name, tmp_path / "sid", lr_decay="cosine",
                                             warmup_ratio=0.25, epochs=2, learning_rate=0.01)
    trainer = GenerativeTrainer(config, TIGER(config, train._dataset))
    trainer.fit(train, valid, saved=False)
    steps = len(train)  # 3 batches of 64 (136 training rows)
    assert trainer.schedule.total_steps == 2 * steps == 6 and trainer.schedule.warmup_steps == 2  # ceil(1.5)
    assert trainer.schedule.step_count == 6
    # the last step (step 5) ran at 0.01 * 0.5 (1 + cos(pi * 3/4))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert trainer.record_extra()["lr_schedule"] == {"warmup_steps": 2, "decay": "cosine", "warmup_ratio": 0.25,
                                                     "total_steps": 6}


def test_validation_every_n_epochs(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    config, (train, valid, _) = tiny_loaders("TIGER", data_path, name, tmp_path / "sid", epochs=5, eval_step=2)
    trainer = GenerativeTrainer(config, TIGER(config, train._dataset))
    seen = []
    real = trainer.evaluate

    def counting(*args, **kwargs):
        seen.append(len(trainer.epoch_seconds))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", counting)
    trainer.fit(train, valid, saved=False)
    assert len(trainer.epoch_seconds) == 5 and seen == [2, 4]  # after epochs 2 and 4 (RecBole's eval_step)


def test_validation_loss_is_the_mean_teacher_forced_loss(tiny_dataset, tmp_path):
    from recbole_ext.trainers.generative import GenerativeTrainer

    model, config, _, valid = _build("TIGER", *tiny_dataset, tmp_path, valid_loss_stopping=True)
    trainer = GenerativeTrainer(config, model)
    assert (trainer.valid_metric, trainer.valid_metric_bigger, trainer.best_valid_score) == ("valid_loss", False,
                                                                                             math.inf)
    model.train()  # validation_loss switches to eval mode (no dropout) and back
    got = trainer.validation_loss(valid)
    assert model.training
    model.eval()
    with torch.no_grad():
        per_user = []
        for interaction, *_ in valid:
            ids, mask = model.history_tokens(interaction)
            logp, _ = model.seq2seq.token_logprobs(model.seq2seq.encode(ids, mask), mask,
                                                   model.target_tokens(interaction))
            per_user.append(-logp.mean(dim=1))
    expected = torch.cat(per_user)
    assert len(expected) == 40 and got == pytest.approx(expected.mean().item(), abs=1e-6)
    score, result = trainer._valid_epoch(valid)
    assert score == got and result == {"valid_loss": got}


def test_valid_loss_selects_and_stops_on_the_lowest_loss(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext.models.tiger import TIGER
    from recbole_ext.trainers.generative import GenerativeTrainer

    data_path, name = tiny_dataset
    config, (train, valid, _) = tiny_loaders("TIGER", data_path, name, tmp_path / "sid", epochs=8, stopping_step=2,
                                             valid_loss_stopping=True, checkpoint_dir=str(tmp_path / "ckpt"))
    trainer = GenerativeTrainer(config, TIGER(config, train._dataset))
    scripted = iter([3.0, 2.0, 2.5, 2.1, 2.2, 1.0, 1.0, 1.0])  # hand-made validation losses
    states, ranked = [], []

    def fake_loss(data):
        states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return next(scripted)

    real_eval = trainer.evaluate
    monkeypatch.setattr(trainer, "validation_loss", fake_loss)
    monkeypatch.setattr(trainer, "evaluate", lambda data, **kw: ranked.append(kw) or real_eval(data, **kw))
    score, result = trainer.fit(train, valid, saved=True)
    # best 2.0 after epoch 2; 2.5, 2.1, 2.2 do not improve: patience 2 is exceeded at the 5th validation
    assert len(trainer.epoch_seconds) == 5 and score == 2.0 and trainer.best_valid_loss == 2.0
    assert ranked == [{"load_best_model": True, "show_progress": False}]  # one ranking, of the best checkpoint
    assert all(torch.equal(v, states[1][k]) for k, v in trainer.model.state_dict().items())
    assert not all(torch.equal(v, states[4][k]) for k, v in trainer.model.state_dict().items())
    assert result["valid_loss"] == 2.0 and {"ndcg@10", "hit@10"} <= set(result)
    assert trainer.record_extra()["best_valid_loss"] == 2.0


def test_valid_loss_stopping_through_the_runner(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    overrides = {"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY, "epochs": 4,
                 "learning_rate": 0.01, "valid_loss_stopping": True, "stopping_step": 1}
    record = run("TIGER", name, overrides=overrides, output_dir=tmp_path / "out", run_id="vl")
    extra = record["extra"]
    assert extra["valid_loss_stopping"] is True and extra["best_valid_loss"] > 0
    assert set(record["valid"]) >= {"ndcg@10", "hit@10"}  # the selected checkpoint ranked once on validation
    assert record["valid"]["ndcg@10"] is not None and record["test"]["ndcg@10"] >= 0


def test_staged_trainer_refuses_valid_loss_stopping(tiny_dataset, tmp_path):
    from recbole_ext.trainers.staged import StagedTrainer

    model, config, _, _ = _build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=0, valid_loss_stopping=True)
    with pytest.raises(ValueError, match="valid_loss_stopping is not supported for STREAMRec"):
        StagedTrainer(config, model)
