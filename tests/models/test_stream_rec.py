"""STREAM-Rec on a tiny dataset: l = 0 is TIGER, labeller in the model, SFT terms, the GRPO stage,
neighbours, and the three-stage run through the runner with its stage cache."""

import numpy as np
import pytest
import torch

from synthetic_data import TINY_GENERATIVE

TINY = {
    **TINY_GENERATIVE, "sid_collision_codebook_size": 4,
    "neighbor_source": "sid", "reasoning_len": 2, "rl_group_size": 4, "rl_hard_negatives": 6,
}


def tiny_config(model_name, data_path, name, tmp_path, **overrides):
    from recbole_ext.config import ExtConfig
    from recbole_ext.registry import resolve

    return ExtConfig(resolve(model_name), name, config_dict={
        "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY, **overrides})


def build(model_name, data_path, name, tmp_path, **overrides):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.registry import resolve

    resolved = resolve(model_name)
    config = tiny_config(model_name, data_path, name, tmp_path, **overrides)
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], True)
    model = resolved.model_class(config, train._dataset)
    _CONFIGS[id(model)] = config
    return model, train


_CONFIGS: dict = {}  # id(model) -> the config it was built with (for its stages)


def first(loader):
    return next(iter(loader))


def stage(model, name):
    """The model's stage ``name`` as the StagedTrainer builds it."""
    return next(s for s in model.build_stages(_CONFIGS[id(model)]) if s.name == name)


def test_l0_is_tiger(tiny_dataset, tmp_path):
    tiger, train = build("TIGER", *tiny_dataset, tmp_path)
    stream, _ = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=0)
    tiger_t5 = tiger.seq2seq.t5.state_dict()
    assert all(torch.equal(v, tiger_t5[k]) for k, v in stream.seq2seq.t5.state_dict().items())  # same init
    batch = first(train)
    sft = stage(stream, "sft")
    tiger.train(), stream.train()  # dropout on: same seed, same draws
    torch.manual_seed(7)
    expected = tiger.calculate_loss(batch)
    torch.manual_seed(7)
    loss, terms = stream.sft_loss(batch, sft.config)
    assert set(terms) == {"sft", "nll_target"}  # no reasoning: no DPO, quantisation or state terms
    assert torch.equal(loss, expected) and torch.equal(terms["nll_target"], expected.detach())
    stream.eval(), tiger.eval()
    assert sft.decode_free_steps(stream) == 0
    stream.free_steps = sft.decode_free_steps(stream)
    assert torch.equal(stream.full_sort_predict(batch), tiger.full_sort_predict(batch))


def test_l0_sft_only_trains_exactly_like_tiger(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    common = {**TINY, "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), "state": "WARNING",
              "learning_rate": 0.01, "epochs": 2}
    tiger = run("TIGER", name, output_dir=tmp_path / "out", run_id="t", overrides=common)
    stream = run("STREAMRec", name, output_dir=tmp_path / "out", run_id="s", overrides={
        **common, "reasoning_len": 0, "stages": "sft", "stage_cache": False})
    assert stream["test"] == tiger["test"] and stream["valid"] == tiger["valid"]
    assert stream["per_user"]["test"] == tiger["per_user"]["test"]


def test_labeller_in_the_model(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=3)
    batch = first(train)
    model.train()
    tokens = model.label_batch(batch)
    assert tokens.shape == (len(batch), 3) and model.training  # mode restored
    lo, hi = model.vocab.code_range()
    assert ((tokens >= lo) & (tokens < hi)).all()
    assert torch.equal(model.label_batch(batch), tokens)  # deterministic (eval mode inside)
    n = model.collect_labels([batch])
    assert n == len(batch) and torch.equal(model.reasoning_labels(batch), tokens)
    model.reasoning_len = 0
    assert model.label_batch(batch).shape == (len(batch), 0)


def test_sft_terms_and_switches(tiny_dataset, tmp_path):
    import dataclasses

    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    cfg = stage(model, "sft").config
    batch = first(train)
    loss, terms = model.sft_loss(batch, cfg)
    assert set(terms) == {"sft", "dpo", "quant", "state", "nll_think", "nll_target"}
    assert all(torch.isfinite(v) for v in terms.values())
    l = model.reasoning_len  # temperature 1: L_SFT is the token-weighted mean of the two NLL diagnostics
    m = model.m
    assert torch.allclose(terms["sft"], (l * terms["nll_think"] + m * terms["nll_target"]) / (l + m), atol=1e-5)
    expected = terms["sft"] + 1.0 * terms["dpo"] + 0.1 * terms["quant"] + 0.1 * terms["state"]  # YAML weights
    assert torch.allclose(loss, expected)
    loss.backward()
    # straight-through: the likelihood reaches the residual MLP; the state loss the state MLP
    # (labeller_init: identity: the last layers start at zero, so they take the first gradients)
    assert model.labeller.residual_mlp.net[-1].weight.grad.abs().sum() > 0
    assert model.labeller.state_mlp.net[-1].weight.grad.abs().sum() > 0
    # sft_vocab_stop_gradient (YAML default True): t (Eq. 14) and the table of Eq. 15 carry no gradient
    target = model.seq2seq.item_tokens[batch[model.POS_ITEM_ID]]
    t, table = model.labeller_targets(target, cfg)
    assert cfg.vocab_stop_gradient and not t.requires_grad and not table.requires_grad
    t, table = model.labeller_targets(target, dataclasses.replace(cfg, vocab_stop_gradient=False))
    assert t.requires_grad and table is model.seq2seq.t5.shared.weight  # the paper as written
    _, terms = model.sft_loss(batch, dataclasses.replace(cfg, vocab_stop_gradient=False))
    assert {"sft", "dpo", "quant", "state"} <= set(terms)
    off = dataclasses.replace(cfg, dpo_weight=0.0, quant_weight=0.0, state_weight=0.0)
    _, terms = model.sft_loss(batch, off)
    assert set(terms) == {"sft", "nll_think", "nll_target"}


def test_frozen_dpo_reference_does_not_drift(tiny_dataset, tmp_path):
    import dataclasses

    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    batch = first(train)
    cfg = stage(model, "sft").config
    assert cfg.dpo_reference == "frozen"  # the YAML default
    stage(model, "sft").begin(model)  # freezes the direct path as PT left it
    model.eval()  # no dropout: the live reference then sees the same encoder states as the frozen one
    enc, mask = model._encode(batch)
    target = model.seq2seq.item_tokens[batch[model.POS_ITEM_ID]]
    frozen = model._reference_logprob(cfg, batch, enc, mask, target)
    live = dataclasses.replace(cfg, dpo_reference="live")
    assert torch.allclose(frozen, model._reference_logprob(live, batch, enc, mask, target), atol=1e-5)
    with torch.no_grad():  # SFT moves the shared encoder and embeddings
        for p in model.seq2seq.t5.parameters():
            p.add_(0.05 * torch.randn_like(p))
        enc, mask = model._encode(batch)
    assert torch.equal(frozen, model._reference_logprob(cfg, batch, enc, mask, target))
    assert not torch.allclose(frozen, model._reference_logprob(live, batch, enc, mask, target), atol=1e-3)
    assert not any(k.startswith("_dpo") for k in model.state_dict())


def test_pretrain_targets_are_neighbours_then_target(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    nb = model.neighbors[1:]  # [n, k]
    own = torch.arange(1, model.n_items)[:, None]
    assert (nb != own).all() and (nb > 0).all()  # never itself, never padding
    # sid neighbours: the nearest shares the longest code prefix
    codes = model.seq2seq.item_codes
    prefix = lambda a, b: int((codes[a] == codes[b]).long().cumprod(0).sum())  # noqa: E731
    for item in range(1, model.n_items):
        best = max(prefix(item, j) for j in range(1, model.n_items) if j != item)
        assert prefix(item, int(nb[item - 1, 0])) == best
    pt = stage(model, "pt")
    loss = pt.loss(model, first(train))
    assert torch.isfinite(loss) and loss.requires_grad
    assert pt.decode_free_steps(model) == 2 * model.m  # PT decodes its neighbour tokens first


def test_calculate_loss_points_at_the_staged_trainer(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    with pytest.raises(TypeError, match="StagedTrainer"):
        model.calculate_loss(first(train))


def test_text_neighbours_use_faiss_cosine(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext.models.stream_rec import neighbors

    def angle(token):
        return int(str(token)[1:]) / 5.0  # items "iN" on a circle by N

    def fake_embeddings(config, tokens):
        a = np.array([angle(t) for t in tokens], dtype=np.float32)
        return np.stack([np.cos(a), np.sin(a)], axis=1) * 3.0  # scale: cosine must ignore it

    monkeypatch.setattr(neighbors, "item_text_embeddings", fake_embeddings)
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, neighbor_source="text")
    id2token = list(train._dataset.field2id_token[train._dataset.iid_field])
    for rid in range(1, model.n_items):
        me = angle(id2token[rid])
        dist = lambda t: abs(np.angle(np.exp(1j * (angle(t) - me))))  # noqa: E731
        others = sorted(dist(t) for j, t in enumerate(id2token) if j not in (0, rid))
        near = [dist(id2token[int(j)]) for j in model.neighbors[rid, :2]]
        assert near == pytest.approx(others[:2], abs=1e-4)


def test_text_neighbours_missing_text_says_what_to_do(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="neighbor_source: sid"):
        build("STREAMRec", *tiny_dataset, tmp_path, neighbor_source="text")


def test_grpo_step_moves_the_policy_not_the_reference(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, rl_updates_per_batch=2, rl_kl_beta=0.5)
    batch = first(train)
    rl = stage(model, "rl")
    rl.begin(model)
    rl.train_mode(model)
    assert not model.seq2seq.t5.training  # RL without dropout
    t5 = model.seq2seq.t5
    before = {k: v.clone() for k, v in t5.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    torch.manual_seed(0)
    rl.reset_statistics()
    loss = rl.loss(model, batch)
    stats = rl.statistics()
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference at the start
    assert stats["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert stats["valid_rate"] == 1.0  # trie-constrained
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    after = t5.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved
    ref = rl.reference.state_dict()
    assert all(torch.equal(before[k], ref[k]) for k in before)  # the KL reference did not
    assert not any("reference" in k for k in model.state_dict())
    rl.reset_statistics()
    rl.loss(model, batch)  # second update on the same rollouts (rl_updates_per_batch = 2)
    second = rl.statistics()
    assert second["kl"] > 0  # now measured against the frozen reference
    assert abs(second["ratio"] - 1.0) > 1e-3 and second["clip_fraction"] > 0  # the ratio moved and the clip acts
    assert second["reward_total"] == stats["reward_total"]  # same rollouts, same rewards


def test_rollouts_and_advantages(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    batch = first(train)
    rl = stage(model, "rl")
    rl.begin(model)
    model.eval()
    torch.manual_seed(0)
    ro = rl.rollouts(model, batch)
    b, g = len(batch), 4
    assert ro.grouped.shape == (b, g, 2 + model.m) and ro.tokens.shape == (b * g, 2 + model.m)
    assert torch.equal(ro.tokens.view(b, g, -1), ro.grouped)
    assert torch.isfinite(ro.old).all() and torch.allclose(ro.old, ro.ref)  # reference = policy at the start
    adv = ro.advantages.view(b, g)
    assert adv.abs().sum() > 0 and torch.allclose(adv.mean(1), torch.zeros(b), atol=1e-5)  # group z-scores


def test_fork_scorer_matches_teacher_forcing(tiny_dataset, tmp_path):
    """The thinking rewards' scorer (one decoder pass per rollout, forked into its candidates)
    equals a plain teacher-forced pass over [think; candidate]."""
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=3)
    model.eval()
    s2s = model.seq2seq
    batch = first(train)
    ids, mask = model.history_tokens(batch)
    b, g, c, m = ids.shape[0], 2, 3, model.m
    gen = torch.Generator().manual_seed(0)
    lo, hi = model.vocab.code_range()
    think = torch.randint(lo, hi, (b, g, 3), generator=gen)
    cand = s2s.item_tokens[torch.randint(1, model.n_items, (b, g, c), generator=gen)]  # [B, G, C, m]
    enc, emask = s2s.encode_for_decoding(ids, mask)
    fast = s2s.score_continuations(enc, emask, think, cand)  # [B, G, C]
    with torch.no_grad():
        full = s2s.encode(ids, mask)
        seq = torch.cat([think[:, :, None].expand(b, g, c, 3), cand], dim=-1).reshape(b * g * c, 3 + m)
        rep = g * c
        slow, _ = s2s.token_logprobs(full.repeat_interleave(rep, 0), mask.repeat_interleave(rep, 0), seq)
        slow = slow[:, 3:].sum(1).view(b, g, c)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_unconstrained_rollouts_follow_levels_only(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, rl_constrained_rollout=False, rl_group_size=8)
    batch = first(train)
    rl = stage(model, "rl")
    rl.begin(model)
    model.eval()
    torch.manual_seed(0)
    r = rl.rollouts(model, batch)
    l = model.reasoning_len
    codes = model.vocab.decode(r.tokens[:, l:])
    assert (codes >= 0).all()  # each target token from its own level
    assert torch.isfinite(r.old).all() and torch.isfinite(r.ref).all()
    valid = model.seq2seq.trie(codes.device).lookup(codes) >= 0
    assert not valid.all()  # 30 items among 8*8*4 codes: random-ish rollouts hit invalid IDs
    assert r.stats["valid_rate"] == pytest.approx(valid.float().mean().item())


def run_tiny(tiny_dataset, tmp_path, run_id, **overrides):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    return run("STREAMRec", name, output_dir=tmp_path / "out", run_id=run_id, overrides={
        **TINY, "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
        "stage_cache_dir": str(tmp_path / "stages"), "state": "WARNING", **overrides})


def test_three_stages_end_to_end_with_cache(tiny_dataset, tmp_path):
    from recbole_ext.benchmark.collect import record_entries

    rec = run_tiny(tiny_dataset, tmp_path, "a")
    assert [s["name"] for s in rec["stages"]] == ["pt", "sft", "rl"]
    assert rec["test"] == rec["stages"][-1]["test"] and rec["valid"] == rec["stages"][-1]["valid"]
    for stage in rec["stages"]:
        assert set(stage["test"]) == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
        assert len(stage["per_user"]["test"]["user_ids"]) == 40
        assert np.mean(stage["per_user"]["test"]["ndcg@10"]) == pytest.approx(stage["test"]["ndcg@10"], abs=1e-6)
        assert stage["extra"]["cached"] is False and stage["extra"]["epochs"] == 1
        assert 0 < stage["extra"]["s_per_epoch"] <= stage["extra"]["train_s"]  # the stage's own epoch time
        assert stage["extra"]["decode_ms_per_user"] > 0 and stage["extra"]["invalid_rate"] == 0.0
        assert 1 <= stage["extra"]["mean_ranked_items"] <= 10
    assert rec["stages"][0]["extra"]["decode_free_steps"] == 2 * 3 and rec["stages"][1]["extra"]["reasoning_len"] == 2
    assert set(rec["stages"][2]["extra"]["rl_stats"]) >= {"reward_format", "reward_think_ranking", "kl"}
    assert set(rec["stages"][1]["extra"]["sft_stats"]) == {"loss_sft", "loss_dpo", "loss_quant", "loss_state",
                                                           "nll_think", "nll_target"}
    (labels,) = rec["stages"][1]["extra"]["label_rounds"]  # one collection round in one SFT epoch
    assert len(labels["label_distinct"]) == 2 and all(1 <= d <= 64 for d in labels["label_distinct"])
    assert labels["target_nll_after_gold_thoughts"] > 0 and labels["target_nll_after_own_thoughts"] > 0
    assert rec["extra"]["reasoning_len"] == 2 and rec["per_user"]["test"] == rec["stages"][-1]["per_user"]["test"]
    assert [e.label for e in record_entries(rec)] == ["STREAMRec (PT)", "STREAMRec (SFT)", "STREAMRec (RL)"]
    assert rec["extra"]["lr_schedule"] == {  # per stage, from STREAMRec.yaml
        "pt": {"warmup_steps": 1000, "decay": "inverse_sqrt"}, "sft": {"warmup_steps": 1000, "decay": "inverse_sqrt"},
        "rl": {"warmup_steps": 0, "decay": "constant"}}

    # an SFT key changed: PT reused, SFT and RL retrained
    rec2 = run_tiny(tiny_dataset, tmp_path, "b", sft_dpo_weight=0.5)
    assert [s["extra"]["cached"] for s in rec2["stages"]] == [True, False, False]
    assert rec2["stages"][0]["test"] == rec["stages"][0]["test"]
    # same config again: everything reused, still evaluated, same numbers
    rec3 = run_tiny(tiny_dataset, tmp_path, "c", sft_dpo_weight=0.5)
    assert [s["extra"]["cached"] for s in rec3["stages"]] == [True, True, True]
    assert [s["extra"]["s_per_epoch"] for s in rec3["stages"]] == [None, None, None]  # not trained: no epoch time
    assert [s["test"] for s in rec3["stages"]] == [s["test"] for s in rec2["stages"]]
    # the SFT schedule is an SFT key too
    rec_w = run_tiny(tiny_dataset, tmp_path, "w", sft_dpo_weight=0.5, sft_warmup_steps=10)
    assert [s["extra"]["cached"] for s in rec_w["stages"]] == [True, False, False]
    assert rec_w["extra"]["lr_schedule"]["sft"] == {"warmup_steps": 10, "decay": "inverse_sqrt"}
    # a subset from the command line: RL off, both stages reused
    rec4 = run_tiny(tiny_dataset, tmp_path, "d", sft_dpo_weight=0.5, stages="pt,sft")
    assert [(s["name"], s["extra"]["cached"]) for s in rec4["stages"]] == [("pt", True), ("sft", True)]


def test_stage_selection():
    from recbole_ext.trainers.stages import Stage, select_stages

    class Named(Stage):
        def __init__(self, name):
            self.name = name

    stages = [Named("pt"), Named("sft"), Named("rl")]
    assert [s.name for s in select_stages(stages, "pt,sft")] == ["pt", "sft"]
    assert [s.name for s in select_stages(stages, ["PT", "rl"])] == ["pt", "rl"]
    assert select_stages(stages, None) == stages
    for bad in ("sft,pt", "pt,pt", "", "pt,xx"):
        with pytest.raises(ValueError, match="stages must"):
            select_stages(stages, bad)


def _count_calls(monkeypatch, obj, name):
    calls = []
    real = getattr(obj, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counting)
    return calls


def staged_trainer(tiny_dataset, tmp_path, stage_name, **settings):
    """(trainer, model, train loader) with the trainer inside stage ``stage_name``, as fit() starts it."""
    from recbole_ext.trainers.staged import StagedTrainer

    data_path, name = tiny_dataset
    model, train = build("STREAMRec", data_path, name, tmp_path, stage_cache=False, **settings)
    trainer = StagedTrainer(tiny_config("STREAMRec", data_path, name, tmp_path, stage_cache=False, **settings), model)
    current = next(s for s in trainer.stages if s.name == stage_name)
    trainer.start_stage(current)
    current.begin(model)
    return trainer, model, train


@pytest.mark.parametrize("rounds, expected", [(None, 3), (2, 2)])
def test_sft_relabels_until_stopped_or_rounds(tiny_dataset, tmp_path, monkeypatch, rounds, expected):
    trainer, model, train = staged_trainer(tiny_dataset, tmp_path, "sft", sft_rounds=rounds, sft_round_epochs=1)
    collections = _count_calls(monkeypatch, model, "collect_labels")
    for epoch in range(3):
        trainer._train_epoch(train, epoch)
    assert len(collections) == expected  # ~ = a new collection every sft_round_epochs, without a cap


@pytest.mark.parametrize("cap, updates", [(2, 1), (1, 2), (None, 1)])
def test_rl_max_batches_caps_an_rl_epoch(tiny_dataset, tmp_path, monkeypatch, cap, updates):
    from recbole_ext.trainers.grpo_stage import GRPOStage

    trainer, model, train = staged_trainer(tiny_dataset, tmp_path, "rl", rl_max_batches=cap,
                                           rl_updates_per_batch=updates)
    assert len(train) >= 3
    losses = _count_calls(monkeypatch, GRPOStage, "loss")
    rollouts = _count_calls(monkeypatch, GRPOStage, "rollouts")
    trainer._train_epoch(train, 0)
    batches = len(train) if cap is None else cap
    assert len(losses) == batches * updates  # GRPO updates: batches x updates per rollout batch
    assert len(rollouts) == batches


def test_rl_epochs_keep_batches_on_the_device(tiny_dataset, tmp_path):
    """The RL stage's batch cap wraps the device-resident rows, not RecBole's loader."""
    from recbole_ext.trainers.device_batches import DeviceBatches

    trainer, model, train = staged_trainer(tiny_dataset, tmp_path, "rl", rl_max_batches=1, rl_updates_per_batch=1,
                                           data_on_device=True)
    batches = trainer.epoch_batches(train, 0)
    assert isinstance(batches.data, DeviceBatches) and batches.data is trainer.training_batches(train)
    assert len(batches) == 1 and trainer._train_epoch(train, 0) is not None


def test_stage_keys_come_from_the_typed_configs(tiny_dataset, tmp_path):
    """Every key a stage reads is in its cache key; keys no stage claims go into the data key."""
    trainer, model, _ = staged_trainer(tiny_dataset, tmp_path, "pt")
    pt, sft, rl = trainer.stages
    assert {"pt_neighbors", "pt_temperature", "pt_learning_rate", "learning_rate"} <= pt.claimed_keys()
    assert "reasoning_len" in sft.claimed_keys() and "reasoning_len" not in pt.claimed_keys()
    assert {"rl_group_size", "rl_reward_weights", "rl_hard_negatives"} <= rl.claimed_keys()
    assert rl.key_config()["rewards"]["hard_negatives"] == 6 and rl.key_config()["free_steps"] == 2
    key = trainer.data_key()
    trainer.config.final_config_dict["rl_group_size"] = 99  # a stage's key: not in the data key
    assert trainer.data_key() == key
    trainer.config.final_config_dict["some_new_model_key"] = 1  # nobody claims it: data key changes
    assert trainer.data_key() != key
    key = trainer.data_key()
    type(model).STAGE_CACHE_REVISION = 1  # a model's own code revision: its cached stages no longer match
    try:
        assert trainer.data_key() != key
    finally:
        del type(model).STAGE_CACHE_REVISION
    assert trainer.data_key() == key  # no revision: the key as before


def test_missing_config_key_is_named(tiny_dataset, tmp_path):
    from recbole_ext.models.stream_rec.stages import PTConfig
    from recbole_ext.trainers.stages import MissingConfigKeyError, read_config

    assert read_config(PTConfig, {"pt_neighbors": "3", "pt_temperature": 1, "pt_direct_weight": 0.5}, "pt_") == \
        PTConfig(neighbors=3, temperature=1.0, direct_weight=0.5)
    with pytest.raises(MissingConfigKeyError, match="pt_temperature"):
        read_config(PTConfig, {"pt_neighbors": 3, "pt_direct_weight": 0.5}, "pt_")


@pytest.mark.parametrize("incumbent", [True, False])
def test_a_stage_keeps_its_incoming_weights_unless_an_epoch_beats_them(tiny_dataset, tmp_path, monkeypatch,
                                                                        incumbent):
    """Validation scripted: PT epoch 0.2; SFT's incoming weights 0.5, its only epoch 0.3. With the
    incumbent, SFT returns the PT weights it started from; without, its trained weights."""
    from recbole_ext.trainers.staged import StagedTrainer

    data_path, name = tiny_dataset
    settings = dict(stage_cache=False, stage_incumbent=incumbent, stages="pt,sft", epochs=1, sft_learning_rate=0.05)
    model, train = build("STREAMRec", data_path, name, tmp_path, **settings)
    trainer = StagedTrainer(tiny_config("STREAMRec", data_path, name, tmp_path, **settings), model)
    scores = iter([0.2, 0.5, 0.3] if incumbent else [0.2, 0.3])
    monkeypatch.setattr(trainer, "_valid_epoch", lambda *a, **k: (s := next(scores), {"ndcg@10": s}))
    trainer.fit(train, train)
    pt, sft = trainer.stage_runs
    same = all(torch.equal(pt.state[k], sft.state[k]) for k in pt.state)
    assert same is incumbent
    if incumbent:
        assert sft.extra["kept_incoming"] is True and sft.extra["incoming_valid"] == {"ndcg@10": 0.5}
        assert sft.valid == {"ndcg@10": 0.5}
    else:
        assert "incoming_valid" not in sft.extra and sft.valid == {"ndcg@10": 0.3}
    assert "incoming_valid" not in pt.extra  # the first stage has no incumbent


def _grpo_stage(advantage="sequence", reward_norm="total", level="sequence"):
    from recbole_ext.trainers.grpo_stage import GRPOConfig, GRPOStage
    from recbole_ext.trainers.stages import StageSchedule

    cfg = GRPOConfig(group_size=2, temperature=1.0, clip_eps=0.2, kl_beta=0.0, kl_estimator="k3", level=level,
                     updates_per_batch=1, max_batches=None, constrained_rollout=True, dropout=False,
                     advantage=advantage, reward_norm=reward_norm)
    return GRPOStage("rl", "rl_", cfg, StageSchedule(1e-5, 1, 0, "constant", None), free_steps=1)


def test_grpo_advantages_sequence_per_reward_and_token():
    """One user, G = 2 rollouts of T = 3 tokens (1 reasoning token): a thinking reward (1, 3) with
    weight 1 and an item reward (2, 0) with weight 0.5; hand-computed advantages."""
    from recbole_ext.trainers.grpo_stage import RewardSet

    rewards = RewardSet({"think_likelihood": torch.tensor([1.0, 3.0]), "prefix_match": torch.tensor([2.0, 0.0])},
                        {"think_likelihood": 1.0, "prefix_match": 0.5}, frozenset({"think_likelihood"}))
    adv, stats = _grpo_stage().advantages(rewards, 1, 2, 3)  # total (2, 3): z = (-1, 1)
    assert adv.tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    assert stats == pytest.approx({"reward_think_likelihood": 2.0, "spread_think_likelihood": 1.0,
                                   "reward_prefix_match": 0.5, "spread_prefix_match": 0.5, "reward_total": 2.5})
    adv, _ = _grpo_stage(reward_norm="per_reward").advantages(rewards, 1, 2, 3)  # 1 * (-1, 1) + 0.5 * (1, -1)
    assert adv.tolist() == pytest.approx([-0.5, 0.5], abs=1e-5)
    adv, _ = _grpo_stage(advantage="token", level="token").advantages(rewards, 1, 2, 3)
    assert adv.shape == (2, 3)  # reasoning token: thinking reward; item tokens: item reward
    assert adv.tolist() == [pytest.approx([-1.0, 1.0, 1.0], abs=1e-5), pytest.approx([1.0, -1.0, -1.0], abs=1e-5)]
    with pytest.raises(ValueError, match="rl_level: token"):
        _grpo_stage(advantage="token", level="sequence")


def test_token_advantages_train_end_to_end(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, rl_advantage="token", rl_level="token",
                         rl_reward_norm="per_reward", rl_similarity_states="labeller")
    rl = stage(model, "rl")
    rl.begin(model)
    rl.train_mode(model)
    torch.manual_seed(0)
    loss = rl.loss(model, first(train))
    assert torch.isfinite(loss) and loss.requires_grad
    ro = rl.rollouts(model, first(train))
    assert ro.advantages.shape == ro.tokens.shape
    assert {"spread_think_ranking", "spread_similarity", "reward_total"} <= set(rl.statistics())


def test_reasoning_decode_modes(tiny_dataset, tmp_path):
    """best_thought: every beam follows one reasoning path; path_sum ranks the joint beam's items;
    neither reads the target."""
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    model.eval()
    batch = first(train)
    model.free_steps = model.reasoning_len
    joint = model.full_sort_predict(batch)
    model.reasoning_decode = "path_sum"
    summed = model.full_sort_predict(batch)
    assert torch.equal(torch.isfinite(summed), torch.isfinite(joint))  # the same items, another order
    model.reasoning_decode = "best_thought"
    best = model.full_sort_predict(batch)
    assert (torch.isfinite(best).sum(1) >= 1).all() and (torch.isfinite(best).sum(1) <= model.num_beams).all()
    batch[model.POS_ITEM_ID] = torch.flip(batch[model.POS_ITEM_ID], dims=[0])
    assert torch.equal(model.full_sort_predict(batch), best)
    with pytest.raises(ValueError, match="reasoning_decode"):
        build("STREAMRec", *tiny_dataset, tmp_path, reasoning_decode="greedy")


def test_label_statistics_hand_example():
    from recbole_ext.models.stream_rec.labels import label_statistics

    stats = label_statistics(torch.tensor([[5, 7], [5, 8], [5, 7], [5, 9]]))  # position 0 collapsed
    assert stats["label_distinct"] == [1, 3]
    assert stats["label_entropy"][0] == 0.0
    assert stats["label_entropy"][1] == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)), abs=1e-4)


def test_stage_schedule_falls_back_per_key():
    from recbole_ext.trainers.stages import StageSchedule

    config = {"learning_rate": 1e-3, "epochs": 5, "warmup_steps": 100, "lr_decay": "inverse_sqrt",
              "train_time_budget_s": None, "rl_learning_rate": 1e-5, "rl_warmup_steps": 0, "rl_lr_decay": "constant",
              "rl_train_time_budget_s": 30, "pt_epochs": None}
    assert StageSchedule.read(config, "rl_") == StageSchedule(1e-5, 5, 0, "constant", 30.0)
    assert StageSchedule.read(config, "pt_") == StageSchedule(1e-3, 5, 100, "inverse_sqrt", None)
    assert {"rl_train_time_budget_s", "train_time_budget_s", "learning_rate"} <= StageSchedule.keys("rl_")


def test_scorer_scores_repeated_thoughts_once_with_the_same_result(tiny_dataset, tmp_path, monkeypatch):
    """Rollouts of one user that share their thought are decoded once; scores equal the full pass."""
    from recbole_ext.generation import sampling

    model, train = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=2)
    model.eval()
    s2s = model.seq2seq
    batch = first(train)
    ids, mask = model.history_tokens(batch)
    enc, emask = s2s.encode_for_decoding(ids, mask)
    b, g, c = ids.shape[0], 4, 3
    gen = torch.Generator().manual_seed(0)
    lo, hi = model.vocab.code_range()
    two = torch.randint(lo, hi, (b, 2, 2), generator=gen)
    think = two[:, [0, 1, 0, 0]]  # [B, G, 2]: rollouts 0, 2, 3 share a thought
    cand = s2s.item_tokens[torch.randint(1, model.n_items, (b, 1, c), generator=gen)].expand(b, g, c, -1)
    steps = []
    real_step = sampling.T5CachedDecoder.step
    monkeypatch.setattr(sampling.T5CachedDecoder, "step", lambda self, tok, **k: steps.append(tok.numel()) or
                        real_step(self, tok, **k))
    deduped = s2s.score_continuations(enc, emask, think, cand)  # [B, G, C]
    decoded = sum(steps)
    rows = [s2s.score_continuations(enc, emask, think[:, i : i + 1], cand[:, i : i + 1]) for i in range(g)]
    assert torch.allclose(deduped, torch.cat(rows, dim=1), atol=1e-5)
    assert torch.equal(deduped[:, 0], deduped[:, 2]) and torch.equal(deduped[:, 0], deduped[:, 3])
    steps.clear()
    monkeypatch.setattr(torch, "unique", lambda x, **k: (x, torch.arange(x.shape[0])))  # no duplicates seen
    s2s.score_continuations(enc, emask, think, cand)
    distinct = len({(u, *think[u, i].tolist()) for u in range(b) for i in range(g)})  # ~2 per user
    m = model.m
    assert decoded == distinct * (1 + 2) + distinct * c * (m - 1)  # bos + 2 thought steps, then C candidates
    assert sum(steps) == b * g * (1 + 2) + b * g * c * (m - 1)  # without deduplication: every rollout
