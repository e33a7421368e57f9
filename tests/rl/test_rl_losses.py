"""STREAM-Rec losses (recbole_ext.rl.losses, Eq. 9-19) against hand-computed values.

Constants (by hand / tables): e^-1 = 0.36787944, e^-1.5 = 0.22313016, e^-2 = 0.13533528,
e^1.5 = 4.48168907, ln 2 = 0.69314718, ln 3 = 1.09861229, ln(1.36787944) = 0.31326169,
ln(1.22313016) = 0.20141328, ln(1.13533528) = 0.12692801, ln(0.75) = -0.28768207,
ln(1 + sqrt 3) = 1.00505254, ln(sqrt 3) = 0.54930614.
"""

import math

import pytest
import torch

from recbole_ext.rl.losses import (
    dpo_loss,
    pretrain_targets,
    quantization_loss,
    sft_objective,
    state_target_infonce,
    step_weights,
    temperature_nll,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected, dtype=torch.float32),
                               atol=atol, rtol=0)


# ----------------------------------------------------------------- Eq. 9-11


def test_pretrain_targets_concatenates_neighbours_then_target():
    nb = torch.tensor([[[1, 2], [3, 4]]])  # [B=1, n=2, m=2]
    tgt = torch.tensor([[5, 6]])
    assert pretrain_targets(nb, tgt).tolist() == [[1, 2, 3, 4, 5, 6]]


def test_temperature_nll():
    ln3 = math.log(3.0)
    logits = torch.tensor([[[0.0, ln3], [ln3, 0.0]]])  # [1, 2, 2]
    # tau = 1, labels [1, ignored]: softmax [1/4, 3/4] -> -ln 0.75 = 0.28768207 over 1 token
    close(temperature_nll(logits, torch.tensor([[1, -100]])), 0.28768207)
    # tau = 2, labels [1, 0]: logits/2 = [0, ln sqrt3] -> p = sqrt3 / (1 + sqrt3)
    #   -ln p = ln(1 + sqrt3) - ln sqrt3 = 1.00505254 - 0.54930614 = 0.45574640 per token
    labels = torch.tensor([[1, 0]])
    close(temperature_nll(logits, labels, temperature=2.0), 0.45574640)
    close(temperature_nll(logits, labels, temperature=2.0, reduction="sum"), 0.91149281)
    close(temperature_nll(logits, labels, temperature=2.0, reduction="none"), [0.91149281])
    with pytest.raises(ValueError):
        temperature_nll(logits, labels, temperature=0.0)


# ----------------------------------------------------------------- Eq. 14


def test_step_weights_schedules():
    close(step_weights(4), [0.1, 0.2, 0.3, 0.4])  # j / (1+2+3+4)
    close(step_weights(3, "exp", gamma=2.0), [1 / 7, 2 / 7, 4 / 7])  # 2^(j-1) / 7
    close(step_weights(2, "uniform"), [0.5, 0.5])
    close(step_weights(3, normalize=False), [1.0, 2.0, 3.0])
    assert step_weights(0).shape == (0,)


def _infonce_case():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    step1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    step2 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    return torch.stack([step1, step2], dim=1), targets  # states [2, 2, 2]


def test_state_target_infonce():
    # step 1: row 1 logits [1, 0] -> -log(e/(e+1)) = ln(1 + e^-1) = 0.31326169; row 2 the same
    # step 2: row 1 logits [2, 0] -> ln(1 + e^-2) = 0.12692801; row 2 logits [0, 0] -> ln 2
    # linear weights (normalised) [1/3, 2/3]:
    #   row 1: 0.31326169/3 + 2*0.12692801/3 = 0.10442056 + 0.08461867 = 0.18903923
    #   row 2: 0.10442056 + 2*0.69314718/3  = 0.10442056 + 0.46209812 = 0.56651868
    #   mean 0.37777896, sum 0.75555791
    states, targets = _infonce_case()
    close(state_target_infonce(states, targets), 0.37777896)
    close(state_target_infonce(states, targets, reduction="sum"), 0.75555791)
    close(state_target_infonce(states, targets, reduction="none"), [0.18903923, 0.56651868])
    # unweighted (w_j = 1): row 1 0.44018970, row 2 1.00640887 -> sum 1.44659857
    close(state_target_infonce(states, targets, weights=None, reduction="sum"), 1.44659857)
    # explicit weights [0, 1]: step 2 only -> mean (0.12692801 + 0.69314718) / 2 = 0.41003760
    close(state_target_infonce(states, targets, weights=[0.0, 1.0]), 0.41003760)


def test_state_target_infonce_temperature_and_empty():
    states, targets = _infonce_case()
    # step 1 only, tau 0.5: logits [2, 0] in both rows -> ln(1 + e^-2) = 0.12692801
    close(state_target_infonce(states[:, :1], targets, temperature=0.5), 0.12692801)
    zero = state_target_infonce(torch.zeros(2, 0, 2, requires_grad=True), targets)
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError):
        state_target_infonce(states, targets, weights=[1.0])


def test_state_target_infonce_gradient_flows_to_states():
    states, targets = _infonce_case()
    states.requires_grad_(True)
    state_target_infonce(states, targets).backward()
    assert states.grad is not None and states.grad.abs().sum() > 0


# ----------------------------------------------------------------- Eq. 15


def test_quantization_loss_values_and_straight_gradients():
    # r = [(1,2), (0,0)], o = [(0,0), (3,4)]: ||r-o||^2 = 5, 25
    # per step: codebook + 0.25 * commitment = 1.25 * d -> 6.25, 31.25; mean 18.75; sum 37.5
    r = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], requires_grad=True)
    o = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]], requires_grad=True)
    close(quantization_loss(r, o, beta=0.25), 18.75)
    close(quantization_loss(r, o, beta=0.25, reduction="sum"), 37.5)
    close(quantization_loss(r, o, beta=0.25, reduction="none"), [[6.25, 31.25]])
    close(quantization_loss(r, o, beta=0.25, mask=torch.tensor([[1, 0]])), 6.25)
    # mean = 1/2 sum(||sg r - o||^2 + b ||r - sg o||^2):
    #   dL/do = (o - r)         -> [(-1, -2), (3, 4)]   (codebook term only)
    #   dL/dr = b (r - o)       -> [(0.25, 0.5), (-0.75, -1.0)] (commitment term only)
    quantization_loss(r, o, beta=0.25).backward()
    close(o.grad, [[[-1.0, -2.0], [3.0, 4.0]]])
    close(r.grad, [[[0.25, 0.5], [-0.75, -1.0]]])


def test_quantization_loss_empty_steps():
    r = torch.zeros(3, 0, 4)
    assert quantization_loss(r, r.clone()).item() == 0.0


# ----------------------------------------------------------------- Eq. 16-18


def test_dpo_loss_values():
    # sample 1: logit+ = -1 - (-2) = 1; logit- = -3 - (-2.5) = -0.5; beta 1:
    #   -log(e^1 / (e^1 + e^-0.5)) = ln(1 + e^-1.5) = ln 1.22313016 = 0.20141328
    # sample 2: logit+ = logit- = 0 -> ln 2 = 0.69314718
    # mean = 0.44728023
    pol_pos = torch.tensor([-1.0, -2.0], requires_grad=True)
    pol_neg = torch.tensor([-3.0, -4.0], requires_grad=True)
    ref_pos = torch.tensor([-2.0, -2.0], requires_grad=True)
    ref_neg = torch.tensor([-2.5, -4.0], requires_grad=True)
    close(dpo_loss(pol_pos, pol_neg, ref_pos, ref_neg, beta=1.0, reduction="none"),
          [0.20141328, 0.69314718])
    loss = dpo_loss(pol_pos, pol_neg, ref_pos, ref_neg, beta=1.0, reduction="sum")
    close(loss, 0.89456046)
    loss.backward()
    # d/d logit+ of softplus(-(l+ - l-)) = -sigma(-(l+ - l-)):
    #   sample 1: -1/(1 + e^1.5) = -1/5.48168907 = -0.18242552; sample 2: -sigma(0) = -0.5
    close(pol_pos.grad, [-0.18242552, -0.5])
    close(pol_neg.grad, [0.18242552, 0.5])
    assert ref_pos.grad is None and ref_neg.grad is None  # frozen reference by default
    close(dpo_loss(pol_pos, pol_neg, ref_pos, ref_neg, beta=1.0), 0.44728023)


def test_dpo_loss_beta_scales_margin_and_ref_gradient_switch():
    # beta 2, margin (l+ - l-) = 0.75: ln(1 + e^-1.5) = 0.20141328
    z = torch.zeros(1)
    close(dpo_loss(torch.tensor([0.75]), z, z, z, beta=2.0), 0.20141328)
    ref = torch.zeros(1, requires_grad=True)
    dpo_loss(torch.tensor([0.75]), z, ref, z, beta=2.0, detach_ref=False).backward()
    # d/d ref+ = +beta sigma(-1.5) = 2 * 0.18242552 = 0.36485104
    close(ref.grad, [0.36485104])


# ----------------------------------------------------------------- Eq. 19


def test_sft_objective():
    one = torch.tensor(1.0)
    # 1 + 2 * 0.5 + 0 (mu = 0 switches quant off) + 0.1 * 3 = 2.3
    close(sft_objective(one, torch.tensor(0.5), torch.tensor(7.0), torch.tensor(3.0),
                        lam=2.0, mu=0.0, delta=0.1), 2.3)
    close(sft_objective(one, None, None, None), 1.0)


def test_state_target_infonce_normalize_and_detach():
    # normalise: step 2 row 1 (2,0) -> (1,0): logits [1, 0] -> 0.31326169; row 2 (0,0) stays 0
    #   -> ln 2; step 1 unchanged. linear weights [1/3, 2/3]:
    #   row 1: 0.31326169 (both steps); row 2: 0.10442056 + 0.46209812 = 0.56651868
    #   mean (0.31326169 + 0.56651868) / 2 = 0.43989019
    states, targets = _infonce_case()
    close(state_target_infonce(states, targets, normalize=True), 0.43989019)
    targets.requires_grad_(True)
    state_target_infonce(states.requires_grad_(True), targets, detach_targets=True).backward()
    assert targets.grad is None and states.grad is not None
