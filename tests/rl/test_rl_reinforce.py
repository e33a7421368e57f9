"""REINFORCE with baseline and entropy bonus: hand-computed losses, gradients and baselines."""

import math

import pytest
import torch

from recbole_ext.rl.reinforce import RunningBaseline, categorical_entropy, reinforce_loss

LOG3 = math.log(3.0)
H = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # entropy of (1/4, 3/4)


def two_rows():
    logits = torch.tensor([[0.0, LOG3], [0.0, LOG3]], requires_grad=True)  # softmax (1/4, 3/4)
    return logits, torch.tensor([1, 0]), torch.tensor([2.0, 0.0])


def test_batch_baseline_loss_and_gradient():
    logits, actions, rewards = two_rows()
    out = reinforce_loss(logits, actions, rewards)
    # b = 1, advantages (1, -1): loss = -(log 3/4 - log 1/4) / 2 = -log(3) / 2
    assert out.loss.item() == pytest.approx(-LOG3 / 2, abs=1e-6)
    assert out.advantages.tolist() == [1.0, -1.0] and float(out.baseline) == 1.0
    assert out.entropy.item() == pytest.approx(H, abs=1e-6)
    out.loss.backward()
    # d/dlogits of -(1/N) A log pi(a) = -(A/N) (onehot(a) - p)
    expected = torch.tensor([[0.125, -0.125], [0.375, -0.375]])  # row 1: (1/2) ((1, 0) - (1/4, 3/4))
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_entropy_bonus_and_other_baselines():
    logits, actions, rewards = two_rows()
    with_bonus = reinforce_loss(logits, actions, rewards, entropy_coef=0.1)
    assert with_bonus.loss.item() == pytest.approx(-LOG3 / 2 - 0.1 * H, abs=1e-6)
    none = reinforce_loss(logits, actions, rewards, baseline="none")  # A = (2, 0)
    assert none.loss.item() == pytest.approx(-(2 * math.log(0.75)) / 2, abs=1e-6)
    per_sample = reinforce_loss(logits, actions, rewards, baseline=torch.tensor([2.0, 0.0]))
    assert per_sample.loss.item() == pytest.approx(0.0, abs=1e-7)  # every advantage 0
    b = torch.tensor(1.0, requires_grad=True)
    reinforce_loss(logits, actions, rewards, baseline=b).loss.backward()
    assert b.grad is None  # the baseline is a constant of the gradient


def test_entropy_ignores_impossible_actions_and_errors_are_clear():
    logits = torch.tensor([[0.0, 0.0, float("-inf")], [5.0, float("-inf"), float("-inf")]])
    assert torch.allclose(categorical_entropy(logits), torch.tensor([math.log(2.0), 0.0]))
    with pytest.raises(ValueError, match="logits \\[N, A\\]"):
        reinforce_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="baseline"):
        reinforce_loss(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2), baseline="mean")
    with pytest.raises(ValueError, match="entropy_coef"):
        reinforce_loss(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2), entropy_coef=-1.0)


def test_running_baseline():
    base = RunningBaseline(momentum=0.5)
    assert base.update(torch.tensor([1.0, 3.0])) == 2.0  # first batch: its own mean
    assert base.update(torch.tensor([6.0])) == 2.0 and base.value == 4.0  # 0.5 * 2 + 0.5 * 6
    with pytest.raises(ValueError, match="momentum"):
        RunningBaseline(1.0)
