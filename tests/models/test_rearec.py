"""ReaRec: the reasoning loop against a hand-unrolled encoder, ERL/PRL on hand-made tensors,
K = 0 is SASRec, inference ignores the target, and one tiny run through the runner."""

import math

import pytest
import torch

from recbole_ext.models.rearec import (
    ReaRec,
    erl_diversity,
    prl_contrastive_loss,
    prl_progressive_loss,
    prl_temperatures,
)

SMALL = {"hidden_size": 16, "inner_size": 32, "n_layers": 2, "n_heads": 2, "use_gpu": False,
         "train_batch_size": 64, "eval_batch_size": 64}


def build(tiny_dataset, **overrides):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig

    data_path, name = tiny_dataset
    config = ExtConfig("ReaRec", name, config_dict={"data_path": data_path, **SMALL, **overrides})
    init_seed(config["seed"], True)
    train, _, test = data_preparation(config, create_dataset(config))
    return config, ReaRec(config, train._dataset), train, test


def eval_batch(loader):
    interaction, *_ = next(iter(loader))
    return interaction


# --- ERL's KL term ----------------------------------------------------------------------------------
def test_erl_diversity_hand_computed_value_and_stop_gradient():
    # p0 = softmax([0, 0]) = [1/2, 1/2], p1 = softmax([ln 3, 0]) = [3/4, 1/4]
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], requires_grad=True)  # [B=1, T=2, N=2]
    kl_10 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL(p1 || p0) = 0.130812
    kl_01 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0)  # KL(p0 || p1) = 0.143841
    value = erl_diversity(logits)
    assert value.item() == pytest.approx((kl_10 + kl_01) / 2, abs=1e-7)  # 0.137327
    value.backward()
    # d/dz1 of KL(p1 || sg(p0)) / 2 = p1 * (a - sum p1 a) / 2, a = log p1 - log p0; the other
    # pair's p1 is behind the stop-gradient (without it the gradient would add (p1 - p0) / 2).
    a = [math.log(1.5), math.log(0.5)]
    g = [0.75 * (a[0] - kl_10) / 2, 0.25 * (a[1] - kl_10) / 2]  # [0.102995, -0.102995]
    assert torch.allclose(logits.grad[0, 1], torch.tensor(g), atol=1e-6)
    # and symmetrically for step 0: p0 * (log p0 - log p1 - KL(p0 || p1)) / 2
    b = [math.log(0.5 / 0.75), math.log(2.0)]
    g0 = [0.5 * (b[0] - kl_01) / 2, 0.5 * (b[1] - kl_01) / 2]
    assert torch.allclose(logits.grad[0, 0], torch.tensor(g0), atol=1e-6)


def test_erl_diversity_is_zero_for_equal_steps():
    logits = torch.tensor([[[1.0, -2.0, 0.5]] * 3, [[0.0, 0.0, 3.0]] * 3])  # [2, 3, 3], steps equal
    assert erl_diversity(logits).item() == pytest.approx(0.0, abs=1e-7)


# --- PRL: temperatures, progressive CE, contrastive loss ------------------------------------------
def test_prl_temperature_schedule():
    assert prl_temperatures(0.5, 2.0, 2).tolist() == [2.0, 1.0, 0.5]  # tau * alpha^(K-j), j = 0..K
    assert prl_temperatures(0.07, 5.0, 2).tolist() == pytest.approx([1.75, 0.35, 0.07])
    assert prl_temperatures(0.07, 5.0, 0).tolist() == pytest.approx([0.07])


def test_prl_progressive_loss_hand_computed():
    states = torch.tensor([[[1.0, 0.0], [2.0, 0.0]],  # [B=2, K+1=2, D=2]: user 0, steps 0 and 1
                           [[0.0, 0.0], [0.0, 4.0]]])  # user 1
    items = torch.eye(2)  # E = I: the logits are the states
    target = torch.tensor([0, 1])
    temps = prl_temperatures(1.0, 2.0, 1)  # [2, 1]
    # last step at tau = 1: user 0 CE([2, 0]) = log(1 + e^-2), user 1 CE([0, 4]) = log(1 + e^-4)
    last = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-4.0))) / 2  # 0.072539
    # step 0 at tau = 2: user 0 CE([1, 0] / 2) = log(1 + e^-0.5), user 1 CE([0, 0]) = log 2
    first = (math.log(1 + math.exp(-0.5)) + math.log(2.0)) / 2  # 0.583612
    loss = prl_progressive_loss(states, items, target, temps, 0.5)
    assert loss.item() == pytest.approx(last + 0.5 * first, abs=1e-6)
    assert prl_progressive_loss(states[:, 1:], items, target, temps[1:], 0.5).item() == pytest.approx(last, abs=1e-6)


def test_prl_contrastive_loss_hand_computed():
    clean = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # [B=2, K=2, D=2]
    noisy = torch.tensor([[[2.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    # step 1, tau = 0.5: user 0 scores clean users [2, 0] / 0.5 -> -log softmax = log(1 + e^-4);
    #                    user 1 scores [1, 1] / 0.5 -> log 2.
    # step 2: noisy = clean, scores [1, 0] / 0.5 and [0, 1] / 0.5 -> log(1 + e^-2) each.
    expected = (math.log(1 + math.exp(-4)) + math.log(2) + 2 * math.log(1 + math.exp(-2))) / 4  # 0.241638
    assert prl_contrastive_loss(clean, noisy, 0.5).item() == pytest.approx(expected, abs=1e-6)
    # the query is the noisy view, the keys the clean one: swapping them changes the value
    assert prl_contrastive_loss(noisy, clean, 0.5).item() != pytest.approx(expected, abs=1e-3)


# --- the reasoning loop -------------------------------------------------------------------------------
def unrolled(model, item_seq, item_seq_len, noise=None):
    """Step by step with RecBole's full encoder: the history plus the reasoning inputs so far as one
    causal sequence (padding keys masked), the output at the newest position is the next state."""
    B, L = item_seq.shape
    x = model.LayerNorm(model.item_embedding(item_seq) + model.position_embedding(torch.arange(L)))
    out = model.trm_encoder(x, model.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]
    states = [out[torch.arange(B), item_seq_len - 1]]  # h_0 [B, D]
    inputs, noisy_inputs, noisy_states = [], [], []
    for j in range(model.reasoning_steps):
        step_input = states[-1] + model.reasoning_position_embedding.weight[j]
        inputs.append(model.LayerNorm(step_input))
        if noise is not None:
            noisy_inputs.append(model.LayerNorm(step_input + noise[:, j]))
        n = L + j + 1
        valid = torch.cat([item_seq != 0, torch.ones(B, j + 1, dtype=torch.bool)], dim=1)  # [B, n]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        mask = torch.where(causal[None, None] & valid[:, None, None, :], 0.0, -10000.0)  # [B, 1, n, n]
        for chain, target in ((inputs, states), (noisy_inputs, noisy_states)):
            if chain:
                seq = torch.cat([x, torch.stack(chain, dim=1)], dim=1)  # [B, n, D]
                target.append(model.trm_encoder(seq, mask, output_all_encoded_layers=False)[-1][:, -1])
    noisy = torch.stack(noisy_states, dim=1) if noise is not None else None
    return torch.stack(states, dim=1), noisy


def test_loop_matches_hand_unrolled_encoder(tiny_dataset):
    _, model, _, test = build(tiny_dataset, reasoning_steps=3)
    model.eval()
    batch = eval_batch(test)
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    assert (seq_len < seq.size(1)).all()  # padded histories: the padding mask matters
    noise = torch.randn(seq.size(0), 3, model.hidden_size) * 0.5
    with torch.no_grad():
        states, noisy = model.reason(seq, seq_len, noise)
        expected_states, expected_noisy = unrolled(model, seq, seq_len, noise)
    assert states.shape == (seq.size(0), 4, model.hidden_size) and noisy.shape == (seq.size(0), 3, model.hidden_size)
    assert torch.allclose(states, expected_states, atol=1e-6, rtol=0)
    assert torch.allclose(noisy, expected_noisy, atol=1e-6, rtol=0)
    assert (states[:, 1:] - noisy).abs().max() > 1e-3  # the noise changed the noisy chain
    assert (states[:, 1] - states[:, 0]).abs().max() > 1e-3  # reasoning moved the state
    # scoring: PRL reads the last state, ERL the mean, both divided by the temperature
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert torch.allclose(scores, states[:, -1] @ model.item_embedding.weight.T / 0.07, atol=1e-4)
        model.objective = "erl"
        scores = model.full_sort_predict(batch)
        assert torch.allclose(scores, states.mean(1) @ model.item_embedding.weight.T / 0.07, atol=1e-4)


@pytest.mark.parametrize("objective", ["erl", "prl"])
def test_zero_steps_is_sasrec(tiny_dataset, objective):
    from recbole.model.sequential_recommender.sasrec import SASRec

    config, model, train, test = build(tiny_dataset, reasoning_steps=0, temperature=1.0, rearec_objective=objective)
    sasrec = SASRec(config, train._dataset)
    sasrec.load_state_dict(model.state_dict())  # the same parameters, nothing more
    model.eval(), sasrec.eval()
    batch = eval_batch(test)
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), sasrec.full_sort_predict(batch))
        train_batch = next(iter(train))
        assert torch.allclose(model.calculate_loss(train_batch), sasrec.calculate_loss(train_batch), atol=1e-6)


@pytest.mark.parametrize("objective", ["erl", "prl"])
def test_inference_never_reads_the_target(tiny_dataset, objective):
    _, model, _, test = build(tiny_dataset, rearec_objective=objective)
    model.eval()
    batch = eval_batch(test)
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        batch[model.POS_ITEM_ID] = torch.flip(batch[model.POS_ITEM_ID], dims=[0])
        batch[model.ITEM_ID] = torch.flip(batch[model.ITEM_ID], dims=[0])
        assert torch.equal(model.full_sort_predict(batch), scores)


def test_losses_are_wired_as_documented(tiny_dataset):
    # no dropout: the only randomness of a training step is PRL's noise
    _, model, train, _ = build(tiny_dataset, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, kl_weight=0.3,
                               pl_weight=0.7, cl_weight=0.2, prl_noise_std=0.05)
    batch = next(iter(train))
    seq, seq_len, target = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID]
    items = model.item_embedding.weight
    temps = prl_temperatures(0.07, 5.0, 2)
    model.train()
    torch.manual_seed(7)
    loss = model.calculate_loss(batch)
    torch.manual_seed(7)
    noise = torch.randn(seq.size(0), 2, model.hidden_size) * 0.05  # N(0, gamma^2): gamma is the std
    states, noisy = model.reason(seq, seq_len, noise)
    expected = (prl_progressive_loss(states, items, target, temps, 0.7)
                + 0.2 * prl_contrastive_loss(states[:, 1:], noisy, 0.07))
    assert torch.allclose(loss, expected, atol=1e-5)
    model.eval()  # no noise and no contrastive term outside training
    states, _ = model.reason(seq, seq_len)
    assert torch.allclose(model.calculate_loss(batch), prl_progressive_loss(states, items, target, temps, 0.7),
                          atol=1e-5)
    model.objective = "erl"
    ce = torch.nn.functional.cross_entropy(states.mean(1) @ items.T / 0.07, target)
    expected = ce - 0.3 * erl_diversity(states @ items.T / 0.07)
    assert torch.allclose(model.calculate_loss(batch), expected, atol=1e-5)


def test_rejects_unknown_objective_and_non_ce_loss(tiny_dataset):
    with pytest.raises(ValueError, match="rearec_objective"):
        build(tiny_dataset, rearec_objective="cot")
    with pytest.raises(ValueError, match="loss_type must be CE"):
        build(tiny_dataset, loss_type="BPR", train_neg_sample_args={"distribution": "uniform", "sample_num": 1})


@pytest.mark.parametrize("objective", ["erl", "prl"])
def test_tiny_run_through_the_runner(tiny_dataset, tmp_path, objective):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    overrides = {**SMALL, "data_path": data_path, "epochs": 2, "rearec_objective": objective}
    record = run("ReaRec", name, overrides=overrides, output_dir=tmp_path / "out", run_id="r1")
    assert record["status"] == "ok" and record["model"] == "ReaRec"
    assert record["config"]["rearec_objective"] == objective and record["config"]["reasoning_steps"] == 2
    assert record["timings"]["epochs"] == 2
    assert all(0.0 <= v <= 1.0 for v in record["test"].values())
    assert len(record["per_user"]["test"]["user_ids"]) == 40
