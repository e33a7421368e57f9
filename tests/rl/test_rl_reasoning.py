"""Iterative-inference labeller (recbole_ext.rl.reasoning, Eq. 12-13)."""

import pytest
import torch
from torch import nn

from recbole_ext.rl.reasoning import (
    IterativeInferenceLabeller,
    nearest_tokens,
    straight_through,
)

# 2-d toy vocabulary: e0=(0,0) e1=(1,0) e2=(0,1) e3=(1,1)
TABLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected, dtype=torch.float32),
                               atol=atol, rtol=0)


class RecordingStep:
    """d_i = 0.6 * embedding of the last appended token; records the shapes it was called with."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(tokens.shape))
        return 0.6 * self.table[tokens[:, -1]]


def test_nearest_tokens_l2_ties_and_restriction():
    # (0.9, 0.2): d^2 to e0..e3 = 0.85, 0.05, 1.45, 0.65 -> 1
    # (0.5, 0.0): e0 and e1 both at 0.25 -> lowest id 0
    r = torch.tensor([[0.9, 0.2], [0.5, 0.0]])
    assert nearest_tokens(r, TABLE).tolist() == [1, 0]
    # restricted to {2, 3}: (0.9, 0.2) -> e2 1.45, e3 0.65 -> 3 (an id of the full table)
    assert nearest_tokens(r[:1], TABLE, torch.tensor([2, 3])).tolist() == [3]
    assert nearest_tokens(torch.zeros(2, 3, 2), TABLE).shape == (2, 3)


def test_labeller_hand_example_identity_mlps():
    # Identity MLPs: r_i = t - s_{i-1}; s_i = d_0 + ... + d_i; d_i = 0.6 e_{o_i}; d_0 = 0
    # row 0, t = (1, 0.8):
    #   r1 = (1, .8): d^2 = 1.64, .64, 1.04, .04 -> o1 = 3; d1 = (.6,.6); s1 = (.6,.6)
    #   r2 = (.4,.2): d^2 = .20, .40, .80, 1.0   -> o2 = 0; d2 = 0;       s2 = (.6,.6)
    #   r3 = (.4,.2)                             -> o3 = 0;               s3 = (.6,.6)
    # row 1, t = (0, 1):
    #   r1 = (0, 1) -> o1 = 2 (distance 0); d1 = (0,.6); s1 = (0,.6)
    #   r2 = (0,.4): d^2 = .16, 1.16, .36, 1.36 -> o2 = 0; s2 = (0,.6); r3 = (0,.4) -> o3 = 0
    lab = IterativeInferenceLabeller(2, residual_mlp=nn.Identity(), state_mlp=nn.Identity())
    t = torch.tensor([[1.0, 0.8], [0.0, 1.0]])
    step = RecordingStep(TABLE)
    out = lab(t, torch.zeros(2, 2), TABLE, step, num_steps=3)
    assert out.tokens.tolist() == [[3, 0, 0], [2, 0, 0]]
    close(out.residuals, [[[1.0, 0.8], [0.4, 0.2], [0.4, 0.2]], [[0.0, 1.0], [0.0, 0.4], [0.0, 0.4]]])
    close(out.states, [[[0.6, 0.6]] * 3, [[0.0, 0.6]] * 3])
    close(out.quantized, TABLE[out.tokens])
    assert step.calls == [(2, 1), (2, 2), (2, 3)]  # tokens so far, one more each step


def test_labeller_hand_example_allowed_ids():
    # allowed {1, 2}, t = (1, 0.8), d_0 = 0:
    #   r1 = (1, .8):  e1 .64, e2 1.04 -> 1; d1 = (.6, 0);  s1 = (.6, 0)
    #   r2 = (.4, .8): e1 1.0, e2 .20  -> 2; d2 = (0, .6);  s2 = (.6, .6)
    #   r3 = (.4, .2): e1 .40, e2 .80  -> 1; d3 = (.6, 0);  s3 = (1.2, .6)
    lab = IterativeInferenceLabeller(2, residual_mlp=nn.Identity(), state_mlp=nn.Identity())
    out = lab(torch.tensor([[1.0, 0.8]]), torch.zeros(1, 2), TABLE, RecordingStep(TABLE), 3,
              allowed_ids=torch.tensor([1, 2]))
    assert out.tokens.tolist() == [[1, 2, 1]]
    close(out.residuals, [[[1.0, 0.8], [0.4, 0.8], [0.4, 0.2]]])
    close(out.states, [[[0.6, 0.0], [0.6, 0.6], [1.2, 0.6]]])


def test_labeller_d0_is_first_state_and_enters_the_sum():
    # d_0 = (0.6, 0): r1 = t - d_0 = (0.4, 0.8) -> d^2 = .80, 1.0, .20, .40 -> 2
    #   d1 = (0, .6); s1 = d_0 + d_1 = (.6, .6)
    lab = IterativeInferenceLabeller(2, residual_mlp=nn.Identity(), state_mlp=nn.Identity())
    out = lab(torch.tensor([[1.0, 0.8]]), torch.tensor([[0.6, 0.0]]), TABLE, RecordingStep(TABLE), 1)
    assert out.tokens.tolist() == [[2]]
    close(out.residuals, [[[0.4, 0.8]]])
    close(out.states, [[[0.6, 0.6]]])


def test_labeller_random_each_token_nearest_and_shapes():
    torch.manual_seed(0)
    b, h, v, l = 5, 8, 20, 4
    table = torch.randn(v, h)
    allowed = torch.arange(3, v)  # ids 0..2 play pad/eos/bos
    proj = torch.randn(h, h)
    lab = IterativeInferenceLabeller(h)

    def step(tokens: torch.Tensor) -> torch.Tensor:  # a stand-in decoder: [B, i] -> [B, H]
        return torch.tanh(table[tokens].mean(dim=1) @ proj)

    out = lab(torch.randn(b, h), torch.randn(b, h), table, step, l, allowed_ids=allowed)
    assert out.tokens.shape == (b, l) and out.tokens.dtype == torch.long
    for name in ("residuals", "states", "quantized", "quantized_st"):
        assert getattr(out, name).shape == (b, l, h)
    assert bool((out.tokens >= 3).all())
    # brute force: distance from each residual to every allowed row
    dist = (out.residuals.detach().unsqueeze(2) - table[allowed].view(1, 1, -1, h)).norm(dim=-1)
    best = dist.min(dim=-1).values  # [B, l]
    chosen = (out.residuals.detach() - table[out.tokens]).norm(dim=-1)  # [B, l]
    close(chosen, best, atol=1e-5)


def test_labeller_zero_steps_gives_empty_tensors():
    calls = []
    lab = IterativeInferenceLabeller(4)
    out = lab(torch.randn(3, 4), torch.randn(3, 4), torch.randn(10, 4),
              lambda toks: calls.append(toks) or torch.zeros(3, 4), 0)
    assert out.tokens.shape == (3, 0) and out.tokens.dtype == torch.long
    assert out.residuals.shape == (3, 0, 4) and out.states.shape == (3, 0, 4)
    assert calls == []


def test_straight_through_and_gradient_to_residual_mlp():
    r = torch.tensor([1.0, 2.0], requires_grad=True)
    q = torch.tensor([0.0, 5.0])
    st = straight_through(r, q)
    close(st, [0.0, 5.0])  # forward value = quantised
    (st * torch.tensor([2.0, 3.0])).sum().backward()
    close(r.grad, [2.0, 3.0])  # gradient passes straight to r
    torch.manual_seed(1)
    lab = IterativeInferenceLabeller(4)
    seen = []

    def step(tokens, embeds):  # pass_embeddings: [B, i] and [B, i, 4]
        seen.append((tuple(tokens.shape), tuple(embeds.shape)))
        return embeds.sum(dim=1)

    out = lab(torch.randn(2, 4), torch.randn(2, 4), torch.randn(6, 4), step, 2, pass_embeddings=True)
    assert seen == [((2, 1), (2, 1, 4)), ((2, 2), (2, 2, 4))]
    out.states.sum().backward()
    first = lab.residual_mlp.net[0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_teacher_forced_matches_the_loop():
    torch.manual_seed(2)
    b, h, l = 3, 6, 3
    table = torch.randn(12, h)
    lab = IterativeInferenceLabeller(h)
    hiddens = []

    def step(tokens):
        d = torch.sin(table[tokens].sum(dim=1))
        hiddens.append(d)
        return d

    t, d0 = torch.randn(b, h), torch.randn(b, h)
    with torch.no_grad():
        loop = lab(t, d0, table, step, l)
        tf = lab.teacher_forced(t, torch.stack([d0] + hiddens, dim=1), loop.tokens, table)
    close(tf.residuals, loop.residuals, atol=1e-5)
    close(tf.states, loop.states, atol=1e-5)
    close(tf.quantized, loop.quantized)
    with pytest.raises(ValueError):
        lab.teacher_forced(t, torch.zeros(b, l, h), loop.tokens, table)


def test_identity_init_starts_as_the_identity():
    from recbole_ext.rl.reasoning import IterativeInferenceLabeller, ResidualMLP

    torch.manual_seed(0)
    x = torch.randn(3, 8)
    assert torch.equal(ResidualMLP(8, skip=True)(x), x)
    assert not torch.allclose(ResidualMLP(8)(x), x)
    lab = IterativeInferenceLabeller(8, init="identity")
    table = torch.randn(10, 8)
    t, d0 = torch.randn(2, 8), torch.randn(2, 8)
    out = lab(t, d0, table, lambda so_far: torch.ones(2, 8), 1)
    assert torch.equal(out.residuals[:, 0], t - d0)  # r_1 = t - s_0 exactly
    assert torch.equal(out.tokens[:, 0], ((table[None] - (t - d0)[:, None]) ** 2).sum(-1).argmin(1))
    assert torch.equal(out.states[:, 0], d0 + 1)  # s_1 = d_0 + d_1
    with pytest.raises(ValueError, match="labeller init"):
        IterativeInferenceLabeller(8, init="zeros")
