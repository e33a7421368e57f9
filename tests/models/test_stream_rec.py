"""STREAM-Rec on a tiny dataset: l = 0 is TIGER, labeller in the model, SFT terms, GRPO step,
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
    return resolved.model_class(config, train._dataset), train


def first(loader):
    return next(iter(loader))


def test_l0_is_tiger(tiny_dataset, tmp_path):
    tiger, train = build("TIGER", *tiny_dataset, tmp_path)
    stream, _ = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=0)
    tiger_t5 = tiger.t5.state_dict()
    assert all(torch.equal(v, tiger_t5[k]) for k, v in stream.t5.state_dict().items())  # same init
    batch = first(train)
    stream.set_stage("sft")
    tiger.train(), stream.train()  # dropout on: same seed, same draws
    torch.manual_seed(7)
    expected = tiger.calculate_loss(batch)
    torch.manual_seed(7)
    loss, terms = stream.sft_loss(batch, return_terms=True)
    assert set(terms) == {"sft"}  # no reasoning: no DPO, quantisation or state terms
    assert torch.equal(loss, expected)
    stream.eval(), tiger.eval()
    assert stream.decode_kwargs(batch) == {"free_steps": 0}
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
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    model.set_stage("sft")
    batch = first(train)
    loss, terms = model.sft_loss(batch, return_terms=True)
    assert set(terms) == {"sft", "dpo", "quant", "state"} and all(torch.isfinite(v) for v in terms.values())
    expected = terms["sft"] + 1.0 * terms["dpo"] + 0.1 * terms["quant"] + 0.1 * terms["state"]  # YAML weights
    assert torch.allclose(loss, expected)
    loss.backward()
    # straight-through: the likelihood reaches the residual MLP; the state loss the state MLP
    assert model.labeller.residual_mlp.net[0].weight.grad.abs().sum() > 0
    assert model.labeller.state_mlp.net[0].weight.grad.abs().sum() > 0
    model.dpo_weight = model.quant_weight = model.state_weight = 0.0
    _, terms = model.sft_loss(batch, return_terms=True)
    assert set(terms) == {"sft"}


def test_pretrain_targets_are_neighbours_then_target(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path)
    nb = model.neighbors[1:]  # [n, k]
    own = torch.arange(1, model.n_items)[:, None]
    assert (nb != own).all() and (nb > 0).all()  # never itself, never padding
    # sid neighbours: the nearest shares the longest code prefix
    codes = model.item_codes
    prefix = lambda a, b: int((codes[a] == codes[b]).long().cumprod(0).sum())  # noqa: E731
    for item in range(1, model.n_items):
        best = max(prefix(item, j) for j in range(1, model.n_items) if j != item)
        assert prefix(item, int(nb[item - 1, 0])) == best
    model.set_stage("pt")
    loss = model.calculate_loss(first(train))
    assert torch.isfinite(loss) and loss.requires_grad
    assert model.decode_kwargs(None) == {"free_steps": 2 * model.m}  # PT decodes its neighbour tokens first


def test_text_neighbours_use_faiss_cosine(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext.models import stream_rec

    def angle(token):
        return int(str(token)[1:]) / 5.0  # items "iN" on a circle by N

    def fake_embeddings(config, tokens):
        a = np.array([angle(t) for t in tokens], dtype=np.float32)
        return np.stack([np.cos(a), np.sin(a)], axis=1) * 3.0  # scale: cosine must ignore it

    monkeypatch.setattr(stream_rec, "_embeddings_for", fake_embeddings)
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
    model.begin_stage("rl")
    model.train()
    assert not model.t5.training  # RL without dropout
    before = {k: v.clone() for k, v in model.t5.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    torch.manual_seed(0)
    loss = model.calculate_loss(batch)
    rollouts = model._rollouts
    assert rollouts["tokens"].shape == (len(batch) * 4, 2 + model.m)
    assert rollouts["adv"].abs().sum() > 0
    assert rollouts["stats"]["valid_rate"] == 1.0 and torch.isfinite(rollouts["old"]).all()  # trie-constrained
    assert model.rl_stats["kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference at the start
    assert model.rl_stats["ratio"] == pytest.approx(1.0, abs=1e-4)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    after = model.t5.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved
    ref = model._ref_t5.state_dict()
    assert all(torch.equal(before[k], ref[k]) for k in before)  # the KL reference did not
    assert "_ref_t5" not in dict(model.named_modules()) and not any(k.startswith("_ref") for k in model.state_dict())
    model.calculate_loss(batch)  # second update on the same rollouts (rl_updates_per_batch = 2)
    assert model._rollouts is rollouts
    assert model.rl_stats["kl"] > 0  # now measured against the frozen reference


def test_fork_scorer_matches_teacher_forcing(tiny_dataset, tmp_path):
    """The thinking rewards' scorer (one decoder pass per rollout, forked into its candidates)
    equals a plain teacher-forced pass over [think; candidate]."""
    from recbole_ext.generation.t5_decoder import encode
    from recbole_ext.rl.grpo import token_logprobs

    model, train = build("STREAMRec", *tiny_dataset, tmp_path, reasoning_len=3)
    model.eval()
    batch = first(train)
    ids, mask = model.history_tokens(batch)
    b, g, c, m = ids.shape[0], 2, 3, model.m
    gen = torch.Generator().manual_seed(0)
    lo, hi = model.vocab.code_range()
    think = torch.randint(lo, hi, (b, g, 3), generator=gen)
    cand = model.item_tokens[torch.randint(1, model.n_items, (b, g, c), generator=gen)]  # [B, G, C, m]
    enc, emask = encode(model.t5, ids, mask)
    fast = model.score_after_thinking(model.t5, enc, emask, think, cand)  # [B, G, C]
    with torch.no_grad():
        full = model.t5.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        seq = torch.cat([think[:, :, None].expand(b, g, c, 3), cand], dim=-1).reshape(b * g * c, 3 + m)
        rep = g * c
        hidden = model._decode(model.t5.decoder, full.repeat_interleave(rep, 0), mask.repeat_interleave(rep, 0),
                               input_ids=model._shift(seq))
        slow = token_logprobs(model._logits(hidden), seq)[:, 3:].sum(1).view(b, g, c)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_unconstrained_rollouts_follow_levels_only(tiny_dataset, tmp_path):
    model, train = build("STREAMRec", *tiny_dataset, tmp_path, rl_constrained_rollout=False, rl_group_size=8)
    batch = first(train)
    model.begin_stage("rl")
    model.train()
    torch.manual_seed(0)
    model.calculate_loss(batch)
    r = model._rollouts
    l = model.reasoning_len
    codes = model.vocab.decode(r["tokens"][:, l:])
    assert (codes >= 0).all()  # each target token from its own level
    assert torch.isfinite(r["old"]).all() and torch.isfinite(r["ref"]).all()
    valid = model.trie(codes.device).lookup(codes) >= 0
    assert not valid.all()  # 30 items among 8*8*4 codes: random-ish rollouts hit invalid IDs
    assert r["stats"]["valid_rate"] == pytest.approx(valid.float().mean().item())


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
        assert stage["extra"]["decode_ms_per_user"] > 0 and stage["extra"]["invalid_rate"] == 0.0
        assert 1 <= stage["extra"]["mean_ranked_items"] <= 10
    assert rec["stages"][0]["extra"]["decode_free_steps"] == 2 * 3 and rec["stages"][1]["extra"]["reasoning_len"] == 2
    assert set(rec["stages"][2]["extra"]["rl_stats"]) >= {"reward_format", "reward_think_ranking", "kl"}
    assert set(rec["stages"][1]["extra"]["sft_stats"]) == {"loss_sft", "loss_dpo", "loss_quant", "loss_state"}
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
    assert [s["test"] for s in rec3["stages"]] == [s["test"] for s in rec2["stages"]]
    # the SFT schedule is an SFT key too
    rec_w = run_tiny(tiny_dataset, tmp_path, "w", sft_dpo_weight=0.5, sft_warmup_steps=10)
    assert [s["extra"]["cached"] for s in rec_w["stages"]] == [True, False, False]
    assert rec_w["extra"]["lr_schedule"]["sft"] == {"warmup_steps": 10, "decay": "inverse_sqrt"}
    # a subset from the command line: RL off, both stages reused
    rec4 = run_tiny(tiny_dataset, tmp_path, "d", sft_dpo_weight=0.5, stages="pt,sft")
    assert [(s["name"], s["extra"]["cached"]) for s in rec4["stages"]] == [("pt", True), ("sft", True)]


def test_parse_stages():
    from recbole_ext.models.stream_rec import parse_stages

    assert parse_stages("pt,sft") == ["pt", "sft"] and parse_stages(["PT", "rl"]) == ["pt", "rl"]
    for bad in ("sft,pt", "pt,pt", "", "pt,xx"):
        with pytest.raises(ValueError):
            parse_stages(bad)


def _count_calls(monkeypatch, obj, name):
    calls = []
    real = getattr(obj, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counting)
    return calls


@pytest.mark.parametrize("rounds, expected", [(None, 3), (2, 2)])
def test_sft_relabels_until_stopped_or_rounds(tiny_dataset, tmp_path, monkeypatch, rounds, expected):
    from recbole_ext.trainers.stream_rec import STREAMRecTrainer

    data_path, name = tiny_dataset
    settings = {"sft_rounds": rounds, "sft_round_epochs": 1, "stage_cache": False}
    model, train = build("STREAMRec", data_path, name, tmp_path, **settings)
    trainer = STREAMRecTrainer(tiny_config("STREAMRec", data_path, name, tmp_path, **settings), model)
    collections = _count_calls(monkeypatch, model, "collect_labels")
    trainer._start_stage("sft")
    model.begin_stage("sft")
    for epoch in range(3):
        trainer._train_epoch(train, epoch)
    assert len(collections) == expected  # ~ = a new collection every sft_round_epochs, without a cap


def test_rl_max_batches_caps_an_rl_epoch(tiny_dataset, tmp_path, monkeypatch):
    from recbole_ext.trainers.stream_rec import STREAMRecTrainer

    data_path, name = tiny_dataset
    model, train = build("STREAMRec", data_path, name, tmp_path)
    assert len(train) >= 3
    for cap, updates, steps in [(2, 1, 2), (1, 2, 2), (None, 1, len(train))]:
        config = tiny_config("STREAMRec", data_path, name, tmp_path, rl_max_batches=cap,
                             rl_updates_per_batch=updates, stage_cache=False)
        model.rl_updates = updates
        trainer = STREAMRecTrainer(config, model)
        trainer._start_stage("rl")
        model.begin_stage("rl")
        losses = _count_calls(monkeypatch, model, "calculate_loss")
        trainer._train_epoch(train, 0)
        assert len(losses) == steps  # GRPO updates: batches x updates per rollout batch
        monkeypatch.undo()
