"""TwiSTAR the model: held-out labels, collaborative sentences, self-filtering, routing and its record,
the cost term of the planner's reward, and all stages end to end through the runner."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from synthetic_data import TINY_GENERATIVE, tiny_model, write_item_text, write_sequences

TINY = {**TINY_GENERATIVE, "sid_collision_codebook_size": 4, "text_vocab_size": 300, "dropout_prob": 0.0,
        "twistar_holdout_ratio": 0.3, "twistar_slow_max_tokens": 12, "slow_rl_group_size": 2,
        "slow_sft_filter_rows": 4, "planner_warmup_passes": 3, "planner_rl_passes": 3}


@pytest.fixture
def text_dataset(tmp_path):
    """The tiny sequences plus an Amazon-style item file (title, categories, brand)."""
    write_sequences(tmp_path / "data", "tiny")
    write_item_text(tmp_path / "data", "tiny")
    return str(tmp_path / "data"), "tiny"


def build(data_path, name, tmp_path, **overrides):
    config, model, loaders = tiny_model("TwiSTAR", data_path, name, tmp_path / "sid", **{**TINY, **overrides})
    return config, model.eval(), loaders


def first(loader):
    return next(iter(loader))


# --- pure pieces ------------------------------------------------------------------------------------
def test_holdout_rows_are_a_fixed_hash_of_the_rows_content():
    from recbole_ext.models.twistar.holdout import holdout_rows, row_hash

    gen = torch.Generator().manual_seed(0)
    users = torch.arange(10000) // 10
    history = torch.randint(1, 500, (10000, 20), generator=gen)  # [R, L]
    target = torch.randint(1, 500, (10000,), generator=gen)
    held = holdout_rows(users, history, target, 0.1)
    torch.manual_seed(123)  # no RNG involved: the same rows for every seed
    assert torch.equal(holdout_rows(users, history, target, 0.1), held)
    assert float(held.float().mean()) == pytest.approx(0.1, abs=0.01)
    # one user, every row at RecBole's capped length: still decided row by row, not all or none
    one = holdout_rows(torch.zeros(10000, dtype=torch.long), history, target, 0.1)
    assert float(one.float().mean()) == pytest.approx(0.1, abs=0.01)
    # equal content, equal decision; any changed part of a row, another hash
    assert torch.equal(holdout_rows(users[:5].repeat(2), history[:5].repeat(2, 1), target[:5].repeat(2), 0.5)[:5],
                       holdout_rows(users[:5], history[:5], target[:5], 0.5))
    base = row_hash(users[:1], history[:1], target[:1])
    changed = [row_hash(users[:1] + 1, history[:1], target[:1]), row_hash(users[:1], history[:1].flip(1), target[:1]),
               row_hash(users[:1], history[:1], target[:1] + 1)]
    assert all(c[0] != base[0] for c in changed)


def test_self_filter_keeps_a_rationale_only_after_a_hit():
    from recbole_ext.models.twistar.slow import self_filter

    sep, pad = 9, 0
    text = torch.tensor([[5, 6, sep, 7, sep], [5, sep, 0, 0, 0], [8, 8, 8, sep, 0]])
    ends = torch.tensor([[2, 4], [1, -1], [3, -1]])
    hits = torch.tensor([[False, True], [False, False], [True, True]])  # 2 sampled justifications per row
    out, out_ends, keep = self_filter(text, ends, hits, pad)
    assert keep.tolist() == [True, False, True]
    assert out.tolist() == [[5, 6, sep, 7, sep], [0, 0, 0, 0, 0], [8, 8, 8, sep, 0]]
    assert out_ends.tolist() == [[2, 4], [-1, -1], [3, -1]]


def test_swing_leaves_out_the_held_out_rows_targets():
    """Two users share items 3 and 4 only through user 1's third row: with that row left out, Swing
    has no evidence for the pair (and user 1's sequence is [1, 2, 4, 5])."""
    from recbole_ext.cooccurrence import user_sequences
    from recbole_ext.models.twistar.knowledge import swing_neighbours, without_targets

    users = torch.tensor([1, 1, 1, 1, 2, 2, 2])
    hist = torch.tensor([[1, 0, 0, 0], [1, 2, 0, 0], [1, 2, 3, 0], [1, 2, 3, 4], [3, 0, 0, 0], [3, 4, 0, 0],
                         [3, 4, 6, 0]])
    lengths = torch.tensor([1, 2, 3, 4, 1, 2, 3])
    target = torch.tensor([2, 3, 4, 5, 4, 6, 7])
    out = torch.tensor([False, True, False, False, False, False, False])  # user 1's row predicting item 3
    sequences = user_sequences(users, hist, lengths, target)
    assert sequences == {1: [1, 2, 3, 4, 5], 2: [3, 4, 6, 7]}
    assert without_targets(sequences, users, target, out) == {1: [1, 2, 4, 5], 2: [3, 4, 6, 7]}
    both = swing_neighbours(users, hist, lengths, target, 8, 1.0, 200)
    left = swing_neighbours(users, hist, lengths, target, 8, 1.0, 200, leave_out=out)
    assert int(both[3]) != 0 and int(left[3]) == 0  # item 3 had a neighbour only through the held-out row


def test_compact_tokens_closes_the_gap_between_history_and_knowledge():
    from recbole_ext.models.twistar.slow import compact_tokens

    hist = torch.tensor([[3, 4, 0, 0], [3, 4, 5, 6]])
    know = torch.tensor([[7, 8, 0], [0, 0, 0]])
    assert compact_tokens(hist, know, 0).tolist() == [[3, 4, 7, 8], [3, 4, 5, 6]]


# --- training signals ----------------------------------------------------------------------------
def test_fast_tool_is_tigers_loss_on_the_rows_not_held_out(text_dataset, tmp_path):
    from recbole_ext.models.tiger import TIGER

    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    batch = first(train)
    held = model.holdout_mask(batch)
    assert 0 < int(held.sum()) < len(batch)
    kept = batch[~held]
    ids, mask = model.history_tokens(kept)
    expected = model.seq2seq.lm_loss(ids, mask, model.target_tokens(kept))  # TIGER's CE, kept rows only
    torch.testing.assert_close(model.fast_loss(batch), expected)
    torch.testing.assert_close(model.fast_loss(batch, exclude_holdout=False), TIGER.calculate_loss(model, batch))
    assert not torch.allclose(model.fast_loss(batch), TIGER.calculate_loss(model, batch))


def test_ranker_trains_on_held_out_rows_only(text_dataset, tmp_path, monkeypatch):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    seen = []
    beams = model.fast_beams

    def spy(interaction):
        seen.extend(zip(interaction["user_id"].tolist(), interaction["item_length"].tolist()))
        return beams(interaction)

    monkeypatch.setattr(model, "fast_beams", spy)
    batch = first(train)
    loss, stats = model.ranker_loss(batch, model.ranker_cfg)
    held = batch[model.holdout_mask(batch)]
    assert sorted(seen) == sorted(zip(held["user_id"].tolist(), held["item_length"].tolist()))
    assert stats["rows"] == len(held) and torch.isfinite(loss)
    loss.backward()
    assert model.ranker.item_embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.seq2seq.parameters())  # the fast tool stays frozen


def test_planner_labels_come_from_held_out_training_rows_only(text_dataset, tmp_path):
    from recbole_ext.models.twistar.holdout import row_hash

    _, model, (train, valid, test) = build(*text_dataset, tmp_path)
    table = model.planner_table(train)
    rows = table.keys.tolist()
    assert len(rows) == len(set(rows)) > 0
    held = {}  # the training rows the model holds out, by content hash
    for batch in train:
        batch = batch[model.holdout_mask(batch)]
        for key, user in zip(row_hash(batch["user_id"], batch["item_id_list"], batch["item_id"]).view(np.int64).tolist(),
                             batch["user_id"].tolist()):
            held[key] = user
    assert set(rows) == set(held)  # every held-out training row, once, and nothing else
    assert table.users.tolist() == [held[k] for k in rows] == sorted(table.users.tolist())
    assert table.features.shape == (len(rows), 8) and table.ndcg.shape == (len(rows), 3)
    assert (table.cost > 0).all()
    # other validation / test targets change nothing
    for loader in (valid, test):
        feat = loader._dataset.inter_feat
        feat.interaction["item_id"] = 1 + (feat["item_id"] % (model.n_items - 1))
    again = model.planner_table(train)
    for name in ("users", "lengths", "target", "fast_items", "features", "ndcg", "oracle", "keys"):
        assert torch.equal(getattr(table, name), getattr(again, name)), name


def test_swing_sentences_name_history_items_and_their_training_neighbours(text_dataset, tmp_path):
    from recbole_ext.cooccurrence import user_sequences
    from recbole_ext.models.twistar.knowledge import swing_neighbours

    _, model, (train, _, test) = build(*text_dataset, tmp_path)
    feat = train._dataset.inter_feat
    expected = swing_neighbours(feat["user_id"], feat["item_id_list"], feat["item_length"], feat["item_id"],
                                model.n_items, 1.0, 200, leave_out=model.holdout_mask(feat))
    assert torch.equal(model.knowledge.neighbour, expected)
    sequences = user_sequences(feat["user_id"], feat["item_id_list"], feat["item_length"], feat["item_id"])
    together = {(a, b) for seq in sequences.values() for a in seq for b in seq if a != b}
    titles = [f.title for f in model.text.facts]
    batch = first(test)[0]
    n_sentences = 0
    for history, length in zip(batch["item_id_list"].tolist(), batch["item_length"].tolist()):
        history = history[:length]
        recent = []
        for item in reversed(history):
            if item not in recent:
                recent.append(item)
        for a, b, text in model.knowledge.sentences(history):
            assert a in recent[:3] and b == int(expected[a]) and (a, b) in together
            assert text == f'Users who bought "{titles[a]}" next bought "{titles[b]}".'
            ids = model.knowledge.item_tokens[a]
            decoded = model.text.vocab.decode((ids[ids != 0] - model.slow_vocab.extra_offset).tolist())
            assert decoded == text.lower()  # the whole sentence fits its token budget: B is named
            n_sentences += 1
    assert n_sentences > 0
    tokens = model.knowledge.tokens(batch["item_id_list"])
    ids, mask = model.slow_inputs(batch)
    assert tokens.shape[0] == ids.shape[0] and (ids[mask.bool()] != model.slow_vocab.pad).all()
    assert (tokens >= model.slow_vocab.extra_offset).sum() == ((ids >= model.slow_vocab.extra_offset) & mask.bool()).sum()


def test_slow_sft_self_filtering_decisions(text_dataset, tmp_path, monkeypatch):
    _, model, (train, _, _) = build(*text_dataset, tmp_path, slow_sft_filter_rows=3)
    batch = first(train)
    kept_rows = batch[~model.holdout_mask(batch)]
    decisions = torch.tensor([[True, False], [False, False], [False, True]])
    monkeypatch.setattr(model, "sampled_hits", lambda interaction, cfg, gen: decisions[: len(interaction)])
    keep: dict = {}
    _, stats = model.slow_sft_loss(batch, model.slow_sft_cfg, keep, torch.Generator())
    from recbole_ext.models.twistar.holdout import row_hash

    key = row_hash(kept_rows["user_id"], kept_rows["item_id_list"], kept_rows["item_id"]).tolist()  # by row content
    assert keep == {key[0]: True, key[1]: False, key[2]: False | True}
    n = len(kept_rows)
    assert float(stats["rationale_kept"]) == pytest.approx((n - 1) / n)  # only row 1 trains an empty rationale
    _, warm = model.slow_sft_loss(batch, model.slow_sft_cfg, None, torch.Generator())  # warm epoch: no filtering
    assert "rationale_kept" not in warm


# --- routing and the record ------------------------------------------------------------------------
def force(model, tool: int) -> None:
    """Make the planner pick ``tool`` for everyone (a huge bias on its last layer)."""
    with torch.no_grad():
        model.planner.net[-1].bias.zero_()
        model.planner.net[-1].bias[tool] = 1e6


def evaluate(model, loader):
    model.reset_decode_stats()
    return torch.cat([model.full_sort_predict(inter) for inter, *_ in loader])


@pytest.mark.parametrize("tool,mode", [(0, "fast"), (1, "rank"), (2, "slow")])
def test_routed_scores_are_the_chosen_tools(text_dataset, tmp_path, tool, mode):
    _, model, (_, _, test) = build(*text_dataset, tmp_path)
    model.route_mode = mode
    alone = evaluate(model, test)
    force(model, tool)
    model.route_mode = "route"
    routed = evaluate(model, test)
    assert torch.equal(routed, alone)
    extra = model.record_extra()
    assert extra["tool_shares"][("fast", "rank", "slow")[tool]] == 1.0


def test_each_user_gets_one_tool_and_the_record_holds_the_fixed_strategies(text_dataset, tmp_path):
    _, model, (train, _, test) = build(*text_dataset, tmp_path)
    model.planner.fit_scaler(model.planner_table(train).features)
    torch.manual_seed(0)
    with torch.no_grad():  # a planner that mixes the tools
        for p in model.planner.net.parameters():
            p.normal_(std=2.0)
    model.route_mode, model.evaluating_test = "route", True
    for inter, *_ in test:  # the target is read for the record only, never for the scores
        scores = model.full_sort_predict(inter)
        target = inter["item_id"]
        inter.interaction["item_id"] = 1 + target % (model.n_items - 1)
        assert torch.equal(model.full_sort_predict(inter), scores)
        inter.interaction["item_id"] = target
    model.reset_decode_stats()
    for inter, *_ in test:
        model.full_sort_predict(inter)
    extra = model.record_extra()
    assert len(model.eval_log["tool"]) == 40 and len(model.eval_log["latency"]) == 40
    assert sum(extra["tool_shares"].values()) == pytest.approx(1.0)
    assert sum(v > 0 for v in extra["tool_shares"].values()) >= 2
    assert 0.0 <= extra["oracle_agreement"] <= 1.0
    assert set(extra["fixed_strategies"]) == {"fast", "rank", "slow"}
    keys = {"hit@5", "hit@10", "ndcg@5", "ndcg@10", "latency_ms_mean", "latency_ms_p95"}
    for row in (*extra["fixed_strategies"].values(), extra["routed"]):
        assert set(row) == keys and row["latency_ms_p95"] >= 0
    # the routed list of each user is the list of the tool it was sent to
    tools = torch.tensor(model.eval_log["tool"])
    served = torch.tensor(model.eval_log["served_rank"])
    per_tool = torch.stack([torch.tensor(model.fixed_log[n]["rank"]) for n in ("fast", "rank", "slow")], 1)
    assert torch.equal(served, per_tool.gather(1, tools[:, None])[:, 0])
    model.evaluating_test = False  # validation: no fixed strategies
    model.reset_decode_stats()
    model.full_sort_predict(first(test)[0])
    assert "fixed_strategies" not in model.record_extra()


def test_routed_beams_and_reasoning_steps_count_each_tools_own_list(text_dataset, tmp_path, monkeypatch):
    """Padding a short list to the routed width is no invalid beam, and reasoning tokens are those decoded:
    hand-made tools (fast: 12 valid beams; slow: 3 beams, one dead, after 5 justification tokens), every
    other user sent to the slow tool."""
    from recbole_ext.models.twistar.routing import FAST, SLOW

    _, model, (_, _, test) = build(*text_dataset, tmp_path)
    inter = first(test)[0]
    b = inter["item_id"].shape[0]
    fast = torch.arange(1, 13).repeat(b, 1)  # [B, 12]
    monkeypatch.setattr(model, "fast_beams", lambda i: (fast[: i["item_id"].shape[0]], torch.zeros(i["item_id"].shape[0], 12)))
    monkeypatch.setattr(model, "features", lambda i, scores: torch.zeros(scores.shape[0], 8))
    tools = torch.tensor([FAST, SLOW] * b)[:b]
    monkeypatch.setattr(model.planner, "act", lambda feats, greedy: (tools, torch.zeros(b, 3)))
    monkeypatch.setattr(model, "slow_list", lambda i: (torch.tensor([[7, 8, -1]]).repeat(i["item_id"].shape[0], 1),
                                                       torch.full((i["item_id"].shape[0],), 5)))
    model.route_mode = "route"
    model.reset_decode_stats()
    model.full_sort_predict(inter)
    n_slow = int((tools == SLOW).sum())
    assert model.decode_beams == 12 * (b - n_slow) + 3 * n_slow
    assert int(model.invalid_beams) == n_slow  # the slow lists' dead beam, not the padding up to the width
    extra = model.record_extra()
    assert extra["mean_reasoning_steps"] == round(5 * n_slow / b, 3)
    assert extra["mean_justification_tokens"] == 5.0  # over the slow tool's users


def test_cost_term_moves_the_planner(text_dataset, tmp_path):
    from recbole_ext.models.twistar.planner import PlannerTable
    from recbole_ext.models.twistar.stages import PlannerRLConfig, PlannerRLStage
    from recbole_ext.trainers.stages import StageSchedule

    _, model, _ = build(*text_dataset, tmp_path)
    g = torch.Generator().manual_seed(0)
    h = 64
    features = torch.randn(h, 8, generator=g)
    ndcg = torch.tensor([0.2, 0.5, 1.0]).expand(h, 3).clone()  # slow is the most accurate ...
    table = PlannerTable(torch.arange(h), torch.ones(h, dtype=torch.long), torch.ones(h, dtype=torch.long),
                         torch.zeros(h, 50, dtype=torch.long), features, ndcg, torch.zeros(h, dtype=torch.long),
                         torch.tensor([0.001, 0.002, 0.05]), torch.arange(h))  # ... and the most expensive

    def train(beta: float) -> torch.Tensor:
        torch.manual_seed(0)
        model.planner.net[-1].reset_parameters()
        cfg = PlannerRLConfig(beta=beta, entropy=0.0, passes=1, batch_size=h, tool_cost=None)
        schedule = StageSchedule(0.05, 1, 0, "constant", None)
        stage = PlannerRLStage(cfg, schedule)
        stage.begin(model)
        stage.table = table
        stage.prepare(model)
        opt = torch.optim.Adam(model.planner.parameters(), lr=0.05)
        for _ in range(150):
            for index in stage.batches(None, 0):
                opt.zero_grad()
                stage.loss(model, index).backward()
                opt.step()
        with torch.no_grad():
            return model.planner(features).argmax(1)

    assert train(0.0).eq(2).all()  # accuracy only: everyone reasons slowly
    assert train(1e4).eq(0).all()  # a huge price on latency: everyone takes the fast tool
    assert torch.allclose(model.tool_cost, torch.tensor([0.001, 0.002, 0.05]))


# --- end to end ------------------------------------------------------------------------------------
def run_tiny(text_dataset, tmp_path, run_id, **overrides):
    from recbole_ext.runner import run

    data_path, name = text_dataset
    return run("TwiSTAR", name, output_dir=tmp_path / "out", run_id=run_id, overrides={
        **TINY, "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
        "stage_cache_dir": str(tmp_path / "stages"), "state": "WARNING", "slow_rl_max_batches": 1,
        "slow_sft_warm_epochs": 0, **overrides})


def test_all_stages_end_to_end_with_a_cache_hit_on_rerun(text_dataset, tmp_path):
    names = ["fast", "ranker", "slow_sft", "slow_rl", "planner_warmup", "planner_rl"]
    rec = run_tiny(text_dataset, tmp_path, "a")
    assert [s["name"] for s in rec["stages"]] == names
    for stage in rec["stages"]:
        assert set(stage["test"]) == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
        assert len(stage["per_user"]["test"]["user_ids"]) == 40
        assert stage["extra"]["latency_ms_p95"] > 0 and stage["extra"]["latency_ms_mean"] > 0  # both timed
    modes = [s["extra"]["route_mode"] for s in rec["stages"]]
    assert modes == ["fast", "rank", "slow", "slow", "route", "route"]
    fast, ranker, sft, rl, warm, plan = (s["extra"] for s in rec["stages"])
    assert ranker["ranker_stats"]["rows"] > 0 and "rationale_kept" in sft["slow_sft_stats"]
    assert {"reward_hit", "reward_prefix_match", "kl"} <= set(rl["slow_rl_stats"])
    assert warm["holdout_rows"] > 0 and sum(warm["warmup_label_shares"].values()) == pytest.approx(1.0)
    for extra in (warm, plan):
        assert sum(extra["tool_shares"].values()) == pytest.approx(1.0)
        assert set(extra["fixed_strategies"]) == {"fast", "rank", "slow"} and "oracle_agreement" in extra
        assert all(c > 0 for c in extra["tool_cost_ms"])
    assert "fixed_strategies" not in fast
    # the RL stage trains against the warm-up's measured costs, on the warm-up's table (built once)
    assert plan["planner_rl_cost_source"] == "warmup"
    assert plan["measured_tool_cost_ms"] == warm["measured_tool_cost_ms"] == plan["tool_cost_ms"]
    # a tool stage serves everyone with its tool (so its efficiency row does not show the planner's shares)
    assert [e["tool_shares"] for e in (fast, ranker, sft, rl)] == [
        {"fast": 1.0, "rank": 0.0, "slow": 0.0}, {"fast": 0.0, "rank": 1.0, "slow": 0.0},
        {"fast": 0.0, "rank": 0.0, "slow": 1.0}, {"fast": 0.0, "rank": 0.0, "slow": 1.0}]
    # the fixed strategies of the routed stage are the stages' own decodings of the same weights
    assert plan["fixed_strategies"]["fast"]["ndcg@10"] == pytest.approx(rec["stages"][0]["test"]["ndcg@10"], abs=1e-6)
    # rerun: every stage from the cache, the comparison off (a test-only key), then a new beta retrains the RL only
    rec2 = run_tiny(text_dataset, tmp_path, "b", twistar_compare_fixed=False)
    assert [s["extra"]["cached"] for s in rec2["stages"]] == [True] * 6
    assert [s["valid"] for s in rec2["stages"]] == [s["valid"] for s in rec["stages"]]
    assert "fixed_strategies" not in rec2["stages"][-1]["extra"]
    rec3 = run_tiny(text_dataset, tmp_path, "c", twistar_beta=1000.0)
    assert [s["extra"]["cached"] for s in rec3["stages"]] == [True] * 5 + [False]
    assert rec3["stages"][-1]["extra"]["beta"] == 1000.0
    # a cell of a beta sweep: the warm-up from the cache, its costs with it
    assert rec3["stages"][-1]["extra"]["planner_rl_cost_source"] == "warmup"
    assert rec3["stages"][-1]["extra"]["tool_cost_ms"] == plan["tool_cost_ms"]


def test_calculate_loss_points_at_the_staged_trainer(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    with pytest.raises(TypeError, match="StagedTrainer"):
        model.calculate_loss(first(train))
