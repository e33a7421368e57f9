"""TwiSTAR planner: warm-up on a separable toy task, REINFORCE gradient sign, acting, class weights."""

import math

import pytest
import torch

from recbole_ext.models.twistar.features import FEATURE_NAMES
from recbole_ext.models.twistar.planner import Planner, balanced_class_weights, reinforce_step, warmup_loss
from recbole_ext.models.twistar.routing import FAST, RANK, SLOW


def toy_task(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated clusters in feature 0 (on a large offset and scale the scaler must absorb)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    x = torch.randn(n, len(FEATURE_NAMES), generator=g)
    x[:, 0] = 100.0 + 50.0 * labels.float() + 5.0 * torch.randn(n, generator=g)
    return x, labels


def test_warmup_learns_a_separable_toy_task():
    torch.manual_seed(0)
    x, y = toy_task()
    planner = Planner(hidden=(16,)).fit_scaler(x)
    opt = torch.optim.Adam(planner.parameters(), lr=0.05)
    for _ in range(100):
        loss = warmup_loss(planner(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tools, logits = planner.act(x, greedy=True)
    assert logits.shape == (300, 3) and tools.shape == (300,)
    assert (tools == y).float().mean() > 0.97
    assert {"scaler.mean", "scaler.std", "scaler.fitted"} <= set(planner.state_dict())


def test_warmup_loss_and_class_weights_hand_values():
    assert warmup_loss(torch.zeros(2, 3), torch.tensor([0, 2])).item() == pytest.approx(math.log(3))
    w = balanced_class_weights(torch.tensor([FAST, FAST, FAST, RANK]))
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 4 / 3])  # missing SLOW: N / 3
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    # weighted mean: (w0 * -log(3/5) + w1 * -log(1/3)) / (w0 + w1)
    want = (1.0 * -math.log(3 / 5) + 3.0 * math.log(3)) / 4.0
    got = warmup_loss(logits, torch.tensor([FAST, RANK]), class_weights=torch.tensor([1.0, 3.0, 1.0]))
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_reinforce_gradient_sign_hand_case():
    logits = torch.zeros(2, 3, requires_grad=True)  # uniform policy
    tools = torch.tensor([FAST, SLOW])
    reward = torch.tensor([1.0, 0.0])  # batch baseline 0.5: advantages (+0.5, -0.5)
    out = reinforce_step(logits, tools, reward)
    out.loss.backward()
    # d loss / d logits = -(A / N) (onehot(a) - p), p = 1/3
    want = torch.tensor([[-1 / 6, 1 / 12, 1 / 12], [-1 / 12, -1 / 12, 1 / 6]])
    assert torch.allclose(logits.grad, want, atol=1e-6)
    assert out.advantages.tolist() == [0.5, -0.5]


def test_reinforce_step_raises_the_better_tools_probability():
    torch.manual_seed(0)
    planner = Planner(hidden=(8,))
    x = torch.randn(1, len(FEATURE_NAMES)).expand(4, -1)  # one user state, four rollouts
    tools = torch.tensor([FAST, SLOW, FAST, SLOW])
    reward = torch.tensor([0.9, 0.1, 0.9, 0.1])  # FAST pays more here
    before = torch.softmax(planner(x[:1]), dim=1)[0].detach()
    opt = torch.optim.SGD(planner.parameters(), lr=0.5)
    out = reinforce_step(planner(x), tools, reward, entropy_coef=0.01)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    after = torch.softmax(planner(x[:1]), dim=1)[0].detach()
    assert after[FAST] > before[FAST] and after[SLOW] < before[SLOW]


def test_act_samples_valid_tools_reproducibly():
    torch.manual_seed(0)
    planner = Planner()
    x = torch.randn(50, len(FEATURE_NAMES))
    a, _ = planner.act(x, greedy=False, generator=torch.Generator().manual_seed(1))
    b, _ = planner.act(x, greedy=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (50,) and a.min() >= 0 and a.max() <= 2
    greedy, logits = planner.act(x, greedy=True)
    assert torch.equal(greedy, logits.argmax(dim=1)) and logits.requires_grad
