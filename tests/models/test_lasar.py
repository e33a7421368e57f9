"""LASAR: alignment loss, latent loop, depth labels and policy gradient, decoding modes, stages end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic_data import TINY_GENERATIVE, tiny_model, write_item_text, write_sequences

TINY = {**TINY_GENERATIVE, "sid_collision_codebook_size": 4, "rl_group_size": 4, "text_vocab_size": 300,
        "dropout_prob": 0.0}


@pytest.fixture
def text_dataset(tmp_path):
    """The tiny sequences plus an Amazon-style item file (title, categories, brand)."""
    write_sequences(tmp_path / "data", "tiny")
    write_item_text(tmp_path / "data", "tiny")
    return str(tmp_path / "data"), "tiny"


def build(data_path, name, tmp_path, **overrides):
    config, model, loaders = tiny_model("LASAR", data_path, name, tmp_path / "sid", **{**TINY, **overrides})
    return config, model, loaders


def first(loader):
    """The first training batch (an Interaction)."""
    return next(iter(loader))


# --- pure pieces ------------------------------------------------------------------------------------
def test_bidirectional_kl_hand_value_symmetry_and_zero():
    from recbole_ext.rl.alignment import bidirectional_kl

    p, q = torch.tensor([[0.0, math.log(3.0)]]), torch.zeros(1, 2)  # p = (1/4, 3/4), q = (1/2, 1/2)
    # (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2) = 0.25 ln 2 + 0.25 ln 1.5 = 0.274653
    assert bidirectional_kl(p, q).item() == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), abs=1e-6)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    torch.testing.assert_close(bidirectional_kl(a, b), bidirectional_kl(b, a))
    assert torch.allclose(bidirectional_kl(a, a + 3.0), torch.zeros(5), atol=1e-6)  # same distribution
    assert (bidirectional_kl(a, b) > 0).all()


def test_anchor_index_hand_example():
    from recbole_ext.rl.alignment import anchor_index

    # K = 3 columns. Row 0: k = 3, 2 sentences: step 1 -> anchor 0, step 2 (no sentence after it, not last) -> none,
    # step 3 (last) -> anchor 1. Row 1: k = 1, 3 sentences: column 2 is its only step, the last -> anchor 2.
    # Row 2: k = 0: nothing.
    keep, index = anchor_index(3, torch.tensor([3, 1, 0]), torch.tensor([2, 3, 1]))
    assert keep.tolist() == [[True, False, True], [False, False, True], [False, False, False]]
    assert index.tolist() == [[0, 0, 1], [0, 0, 2], [0, 0, 0]]


def test_depth_policy_gradient_prefers_the_cheaper_depth_at_equal_reward():
    from recbole_ext.models.lasar.rl import depth_policy_loss

    logits = torch.zeros(1, 4, requires_grad=True)  # one user, depths 0..3
    depth = torch.tensor([1, 3])  # two rollouts, same recommendation reward
    out = depth_policy_loss(logits, depth, torch.tensor([1.0, 1.0]), step_cost=0.1, entropy_coef=0.0)
    out.loss.backward()
    # rewards 0.9 and 0.7, baseline 0.8: advantages +0.1 and -0.1; d loss / d logit_a = -mean_i adv_i (1[a=a_i] - 1/4)
    assert out.advantages.tolist() == pytest.approx([0.1, -0.1])
    assert logits.grad[0].tolist() == pytest.approx([0.0, -0.05, 0.0, 0.05], abs=1e-6)  # descent raises depth 1


def test_depth_labels(text_dataset, tmp_path):
    _, model, _ = build(*text_dataset, tmp_path)
    assert model.depth_labels(torch.tensor([1, 2, 4, 5])).tolist() == [1, 2, 4, 4]  # max_depth 4
    _, fixed, _ = build(*text_dataset, tmp_path, depth_mode="fixed", fixed_depth=2)
    assert fixed.depth_labels(torch.tensor([1, 4])).tolist() == [2, 2]


# --- the model ---------------------------------------------------------------------------------------
def test_zero_depth_is_direct_decoding(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    model.eval()
    batch = first(train)
    s2s = model.seq2seq
    enc, mask = model._encode(batch)
    target = model.target_tokens(batch)
    with torch.no_grad():
        hidden, k = model.decode_after_latent(enc, mask, torch.zeros(len(target), dtype=torch.long), target)
        direct = s2s.decode(enc, mask, input_ids=s2s.shift(target))
    assert k == 0 and torch.equal(hidden, direct)


def test_latent_loop_training_path_equals_decoding_path(text_dataset, tmp_path):
    """k steps give k latent states, and the teacher-side loop (transformers, left padding) gives the
    cached decoder's first-SID logits for mixed depths."""
    from recbole_ext.generation.latent import latent_prefix_steps
    from recbole_ext.generation.t5_decoder import T5CachedDecoder

    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    model.eval()
    batch = first(train)
    s2s, t5 = model.seq2seq, model.seq2seq.t5
    with torch.no_grad():
        model.step_embedding.weight.normal_()  # steps that matter
        enc, mask = model._encode(batch)
        target = model.target_tokens(batch)
        depth = torch.arange(len(target)) % 5  # 0..4 mixed in one batch
        hidden, k = model.decode_after_latent(enc, mask, depth, target)
        dec = T5CachedDecoder(t5, enc, mask, k + 1 + model.m)
        logits, latent = latent_prefix_steps(dec, t5.shared.weight[model.vocab.bos], model.step_embedding.weight,
                                             depth, log_probs=False)
    assert k == 4 and latent.shape == (len(target), 4, enc.shape[-1])
    torch.testing.assert_close(s2s.logits(hidden[:, k]).float(), logits[:, 0], atol=1e-4, rtol=1e-4)
    # right-aligned: a row with k steps has its latent outputs in the last k columns, equal on both paths
    for row in range(5):
        kk = int(depth[row])
        torch.testing.assert_close(hidden[row, 1 + 4 - kk : 5], latent[row, 4 - kk :], atol=1e-4, rtol=1e-4)
    # a deeper loop is a different computation: depth moves the first SID distribution
    assert not torch.allclose(logits[0, 0], logits[1, 0])


def test_cot_anchors_are_the_states_at_sentence_ends(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    model.eval()
    batch = first(train)
    s2s = model.seq2seq
    with torch.no_grad():
        enc, mask = model._encode(batch)
        target = model.target_tokens(batch)
        cot, ends, n = model.rationale_tokens(batch)
        loss, anchors = model.cot_pass(enc, mask, cot, ends, target)
        assert loss > 0 and anchors.shape == (len(target), 4, enc.shape[-1])
        assert (n >= 1).all() and (n <= 4).all() and ((ends >= 0).sum(1) == n).all()
        for row in (0, 3):  # one row alone, unpadded: [bos, cot, sid]
            length = int((cot[row] != 0).sum())
            seq = torch.cat([torch.tensor([model.vocab.bos]), cot[row, :length], target[row]])
            alone = s2s.decode(enc[row : row + 1], mask[row : row + 1], input_ids=seq[None, :-1])[0]
            for j in range(int(n[row])):
                torch.testing.assert_close(anchors[row, j], alone[1 + ends[row, j]], atol=1e-4, rtol=1e-4)
            sep = model.text.vocab.sep_id + model.vocab.extra_offset
            assert cot[row, ends[row, : n[row]]].eq(sep).all()


def test_reasoning_loss_terms_and_switches(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    batch = first(train)
    loss, terms = model.reasoning_loss(batch, model.reason)
    assert set(terms) == {"cot", "rec", "align", "depth_ce", "depth_mean"} and torch.isfinite(loss)
    loss.backward()
    assert model.step_embedding.weight.grad.abs().sum() > 0 and model.policy_head[0].weight.grad.abs().sum() > 0
    no_align = dict(vars(model.reason), align_weight=0.0, cot_weight=0.0, ground_weight=1.0)
    _, terms2 = model.reasoning_loss(batch, type(model.reason)(**no_align))
    assert set(terms2) == {"rec", "depth_ce", "ground", "depth_mean"}


def test_grounding_tasks(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    loss, terms = model.grounding_loss(first(train), model.ground)
    assert set(terms) == {"rec", "title_to_sid", "sid_to_title"} and torch.isfinite(loss)
    token = train._dataset.field2id_token["item_id"][5]  # "i<N>", titled "Widget model <N> steel"
    ids = model.title_tokens[5]
    title = model.text.vocab.decode((ids[ids > 0] - model.vocab.extra_offset).tolist())
    assert title == f"widget model {token[1:]} steel"


@pytest.mark.parametrize("decoding", ["latent", "explicit", "none"])
def test_test_decodings_ignore_the_target(text_dataset, tmp_path, decoding):
    from test_no_target_peeking import assert_scores_ignore_the_target

    _, model, (_, _valid, test) = build(*text_dataset, tmp_path, test_decoding=decoding, explicit_max_tokens=12)
    model.eval()
    model.free_steps, model.evaluating_test = model.settings.max_depth, True
    assert assert_scores_ignore_the_target(model, [test], f"LASAR ({decoding})") == 40
    extra = model.record_extra()
    assert extra["test_decoding"] == decoding
    if decoding == "none":
        assert extra["depth_histogram"][0] == sum(extra["depth_histogram"]) > 0
    if decoding == "explicit":
        assert 0 <= extra["mean_cot_tokens"] <= 12


def run_tiny(text_dataset, tmp_path, run_id, **overrides):
    from recbole_ext.runner import run

    data_path, name = text_dataset
    return run("LASAR", name, output_dir=tmp_path / "out", run_id=run_id, overrides={
        **TINY, "data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"),
        "stage_cache_dir": str(tmp_path / "stages"), "state": "WARNING", "rl_max_batches": 1, **overrides})


def test_three_stages_end_to_end_cache_and_test_decoding(text_dataset, tmp_path):
    rec = run_tiny(text_dataset, tmp_path, "a")
    assert [s["name"] for s in rec["stages"]] == ["ground", "reason", "rl"]
    for stage in rec["stages"]:
        assert set(stage["test"]) == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
        assert len(stage["per_user"]["test"]["user_ids"]) == 40 and stage["extra"]["invalid_rate"] == 0.0
        assert np.mean(stage["per_user"]["test"]["ndcg@10"]) == pytest.approx(stage["test"]["ndcg@10"], abs=1e-6)
    ground, reason, rl = (s["extra"] for s in rec["stages"])
    assert ground["mean_depth"] == 0 and ground["test_decoding"] == "sid"
    assert sum(reason["depth_histogram"]) == 40 and reason["test_decoding"] == "latent"
    assert set(reason["reason_stats"]) >= {"loss_rec", "loss_cot", "loss_align", "depth_ce", "depth_mean"}
    assert set(rl["rl_stats"]) >= {"reward_hit", "reward_prefix_match", "kl", "align", "depth_reward", "depth_mean"}
    # the same weights decoded with explicit CoT and with no reasoning, on the same test users
    assert "test_variants" not in ground and set(reason["test_variants"]) == set(rl["test_variants"]) == {
        "explicit", "none"}
    none, explicit = rl["test_variants"]["none"], rl["test_variants"]["explicit"]
    assert none["extra"]["mean_depth"] == 0 and none["extra"]["depth_histogram"][0] == 40
    assert explicit["extra"]["test_decoding"] == "explicit" and explicit["extra"]["mean_cot_tokens"] >= 0
    assert set(none["test"]) == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"} and "sid" not in none["extra"]
    from recbole_ext.benchmark.collect import record_entries

    labels = [e.label for e in record_entries(rec)]
    assert labels == ["LASAR (GROUND)", "LASAR (REASON)", "LASAR (REASON) [explicit]", "LASAR (REASON) [none]",
                      "LASAR (RL)", "LASAR (RL) [explicit]", "LASAR (RL) [none]"]
    # the explicit-CoT variant of the same weights: every stage reused, only the test decoding differs
    rec2 = run_tiny(text_dataset, tmp_path, "b", test_decoding="explicit", explicit_max_tokens=16,
                    compare_decodings=[])
    assert [s["extra"]["cached"] for s in rec2["stages"]] == [True, True, True]
    assert [s["valid"] for s in rec2["stages"]] == [s["valid"] for s in rec["stages"]]
    assert rec2["stages"][2]["extra"]["test_decoding"] == "explicit" and "mean_cot_tokens" in rec2["stages"][2]["extra"]
    assert "test_variants" not in rec2["stages"][2]["extra"]
    # mixed training (the abstract's worse order): no grounding stage, its losses inside stage 2
    rec3 = run_tiny(text_dataset, tmp_path, "c", stages="reason,rl", reason_ground_weight=1.0)
    assert [s["name"] for s in rec3["stages"]] == ["reason", "rl"]
    assert "loss_ground" in rec3["stages"][0]["extra"]["reason_stats"]


def test_fixed_depth_ablation_decodes_at_that_depth(text_dataset, tmp_path):
    rec = run_tiny(text_dataset, tmp_path, "f", depth_mode="fixed", fixed_depth=2, stages="ground,reason")
    assert rec["stages"][1]["extra"]["depth_histogram"] == [0, 0, 40, 0, 0]


def test_calculate_loss_points_at_the_staged_trainer(text_dataset, tmp_path):
    _, model, (train, _, _) = build(*text_dataset, tmp_path)
    with pytest.raises(TypeError, match="StagedTrainer"):
        model.calculate_loss(first(train))


def test_stage_max_batches_caps_an_epoch_and_enters_the_key_only_when_set():
    from recbole_ext.models.lasar.stages import GroundConfig
    from recbole_ext.trainers.stages import Stage, StageSchedule

    typed = GroundConfig(1.0, 1.0, 1.0, 0.25)
    config = {"learning_rate": 1e-3, "epochs": 2, "warmup_steps": 0, "lr_decay": "constant",
              "train_time_budget_s": None, "reason_max_batches": 3}
    capped = StageSchedule.read(config, "reason_")
    assert capped.max_batches == 3 and StageSchedule.read(config, "ground_").max_batches is None
    stage = Stage(typed, capped)
    assert list(stage.batches(range(10), 0)) == [0, 1, 2] and len(stage.batches(range(10), 0)) == 3
    assert list(Stage(typed, StageSchedule.read(config, "ground_")).batches(range(4), 0)) == [0, 1, 2, 3]
    assert "max_batches" in Stage(typed, capped).key_config()["schedule"]
    assert "max_batches" not in Stage(typed, StageSchedule.read(config, "ground_")).key_config()["schedule"]
    with pytest.raises(ValueError, match="reason_max_batches must be >= 1"):
        StageSchedule.read({**config, "reason_max_batches": 0}, "reason_")
