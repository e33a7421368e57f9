"""GRPO math (recbole_ext.rl.grpo) against hand-computed values.

Constants used below (computed by hand / from tables, not by the code under test):
    e^0.2 = 1.22140276, e^-0.5 = 0.60653066, sqrt(3) = 1.73205081, ln(0.75) = -0.28768207,
    ln(1 + sqrt(3)) = 1.00505254.
"""

import math

import pytest
import torch

from recbole_ext.rl.grpo import (
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    kl_estimate,
    masked_mean,
    masked_sum,
    sequence_logprob,
    token_logprobs,
)

ATOL = 1e-6


def close(actual: torch.Tensor, expected, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected, dtype=torch.float32),
                               atol=atol, rtol=0)


# ----------------------------------------------------------------- advantages


def test_group_advantages_population_std():
    # row 0: [1, 0, 0, 1]: mean 0.5, population std 0.5 -> (+-0.5) / 0.5 = +-1
    # row 1: [3, 0, 0, 0]: mean 0.75, deviations [2.25, -0.75 x3],
    #        var = (2.25^2 + 3 * 0.75^2) / 4 = (5.0625 + 1.6875) / 4 = 1.6875, std = 1.29903811
    #        2.25 / 1.29903811 = sqrt(3) = 1.73205081; -0.75 / 1.29903811 = -1/sqrt(3) = -0.57735027
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(r, eps=0.0)
    close(adv, [[1.0, -1.0, -1.0, 1.0], [1.73205081, -0.57735027, -0.57735027, -0.57735027]])


def test_group_advantages_unbiased_std():
    # [1, 0, 0, 1]: sample var = (4 * 0.25) / 3 = 1/3, std = 0.57735027; 0.5 / 0.57735027 = 0.8660254
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), eps=0.0, unbiased=True)
    close(adv, [[0.8660254, -0.8660254, -0.8660254, 0.8660254]])


def test_group_advantages_eps_in_denominator():
    # [2, 0]: mean 1, std 1 -> +-1 / (1 + 1) = +-0.5 with eps = 1
    close(group_advantages(torch.tensor([[2.0, 0.0]]), eps=1.0), [[0.5, -0.5]])


def test_group_advantages_zero_for_equal_rewards():
    # 0.1 * 3 / 3 need not round back to 0.1 exactly; the result must still be exactly 0
    r = torch.tensor([[0.1, 0.1, 0.1], [-1.0, -1.0, -1.0], [0.0, 1.0, 0.0]])
    adv = group_advantages(r, eps=1e-12)
    assert torch.equal(adv[:2], torch.zeros(2, 3))
    assert adv[2, 1] > 0 and adv[2, 0] < 0
    # G = 1: nothing to compare against -> 0 (also with Bessel's correction)
    assert torch.equal(group_advantages(torch.tensor([[5.0], [2.0]]), unbiased=True), torch.zeros(2, 1))


def test_group_advantages_rejects_flat_input():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4))


# ----------------------------------------------------------------- log-prob helpers


def test_token_logprobs_and_temperature():
    # logits [0, ln 3] -> softmax [1/4, 3/4]; token 1 -> ln(0.75) = -0.28768207
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # [1, 1, 2]
    close(token_logprobs(logits, torch.tensor([[1]])), [[-0.28768207]])
    # temperature 2: logits [0, ln sqrt(3)] -> p0 = 1 / (1 + sqrt 3); ln p0 = -1.00505254
    close(token_logprobs(logits, torch.tensor([[0]]), temperature=2.0), [[-1.00505254]])
    # a padding id (-100) does not crash; it must be masked afterwards
    assert token_logprobs(logits, torch.tensor([[-100]])).shape == (1, 1)


def test_masked_sum_mean_ignore_masked_infinities():
    x = torch.tensor([[-1.0, -2.0, float("-inf")], [-4.0, float("nan"), 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_sum(x, m), [-3.0, -4.0])
    close(sequence_logprob(x, m), [-3.0, -4.0])
    close(masked_mean(x, m), [-1.5, -4.0])
    close(masked_mean(x, torch.zeros_like(m)), [0.0, 0.0])  # all-masked row -> 0


# ----------------------------------------------------------------- KL estimators


def test_kl_estimators():
    # log pi = -1, log pi_ref = -1.5: x = log(pi_ref/pi) = -0.5
    # k1 = -x = 0.5; k2 = x^2/2 = 0.125; k3 = e^-0.5 + 0.5 - 1 = 0.60653066 - 0.5 = 0.10653066
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    close(kl_estimate(lp, ref, "k1"), [0.5])
    close(kl_estimate(lp, ref, "k2"), [0.125])
    close(kl_estimate(lp, ref, "k3"), [0.10653066])
    close(kl_estimate(lp, lp, "k3"), [0.0])  # identical policies
    with pytest.raises(ValueError):
        kl_estimate(lp, ref, "k4")


# ----------------------------------------------------------------- clipped surrogate


def test_clipped_surrogate_cases_and_gradients():
    # eps = 0.2, clip range [0.8, 1.2]; surrogate = min(rho A, clip(rho) A)
    #   rho 1.5, A +2: min(3.0, 2.4) = 2.4  (clipped, no gradient)
    #   rho 0.5, A +2: min(1.0, 1.6) = 1.0  (unclipped; grad wrt log rho = rho A = 1.0)
    #   rho 0.5, A -1: min(-0.5, -0.8) = -0.8 (clipped, no gradient)
    #   rho 1.5, A -1: min(-1.5, -1.2) = -1.5 (unclipped; grad = rho A = -1.5)
    #   rho 1.1, A +1: inside the range: 1.1 (grad 1.1)
    rho = torch.tensor([1.5, 0.5, 0.5, 1.5, 1.1])
    adv = torch.tensor([2.0, 2.0, -1.0, -1.0, 1.0])
    log_ratio = rho.log().requires_grad_(True)
    surr, clipped = clipped_surrogate(log_ratio, adv, clip_eps=0.2)
    close(surr, [2.4, 1.0, -0.8, -1.5, 1.1], atol=1e-5)
    assert clipped.tolist() == [True, False, True, False, False]
    surr.sum().backward()
    close(log_ratio.grad, [0.0, 1.0, 0.0, -1.5, 1.1], atol=1e-5)


def test_clipped_surrogate_clip_higher():
    # eps_low 0.2, eps_high 0.3: rho 1.25, A 1 -> inside [0.8, 1.3] -> 1.25; rho 1.5 -> 1.3
    surr, _ = clipped_surrogate(torch.tensor([1.25, 1.5]).log(), torch.tensor([1.0, 1.0]),
                                clip_eps=0.2, clip_eps_high=0.3)
    close(surr, [1.25, 1.3], atol=1e-5)


# ----------------------------------------------------------------- full loss


def _sequence_case():
    logprobs = torch.tensor([[-1.0, -0.5], [-2.0, -9.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -0.5], [-1.5, 0.0]])
    ref = torch.tensor([[-1.0, -1.0], [-2.5, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, 1.0])
    return logprobs, old, ref, mask, adv


def test_grpo_loss_sequence_level():
    # row 0: log pi = -1.5, old = -1.7 -> log rho = 0.2, rho = 1.22140276 > 1.2 -> clipped: 1.2
    #        ref = -2.0 -> x = -2.0 + 1.5 = -0.5 -> k3 = 0.10653066
    #        objective = 1.2 - 0.1 * 0.10653066 = 1.18934693
    # row 1: (masked -9.0 ignored) log pi = -2.0, old = -1.5 -> rho = e^-0.5 = 0.60653066,
    #        A = 1 -> min(0.60653066, 0.8) = 0.60653066 (unclipped)
    #        ref = -2.5 -> x = -0.5 -> k3 = 0.10653066; objective = 0.60653066 - 0.01065307 = 0.59587759
    # loss = -(1.18934693 + 0.59587759) / 2 = -0.89261226
    logprobs, old, ref, mask, adv = _sequence_case()
    out = grpo_loss(logprobs, old, ref, adv, mask, clip_eps=0.2, beta=0.1, level="sequence")
    close(out.loss, -0.89261226)
    close(out.surrogate, (1.2 + 0.60653066) / 2)
    close(out.kl, 0.10653066)
    close(out.clip_fraction, 0.5)
    close(out.ratio_mean, (1.22140276 + 0.60653066) / 2)
    out.loss.backward()
    # d k3 / d log pi = 1 - e^x = 1 - 0.60653066 = 0.39346934
    # row 0 (clipped): only the KL term: d(+beta k3 / 2) = 0.1 * 0.39346934 / 2 = 0.01967347
    # row 1: -(rho A) / 2 + 0.01967347 = -0.30326533 + 0.01967347 = -0.28359186; masked token: 0
    close(logprobs.grad, [[0.01967347, 0.01967347], [-0.28359186, 0.0]])


def test_grpo_loss_no_reference_and_shapes():
    logprobs, old, _, mask, adv = _sequence_case()
    out = grpo_loss(logprobs, old, None, adv, mask, beta=0.1)
    close(out.loss, -(1.2 + 0.60653066) / 2)  # same as above without the KL terms
    close(out.kl, 0.0)
    with pytest.raises(ValueError):
        grpo_loss(logprobs, old, None, torch.zeros(3), mask)
    # works for [B, G, T] inputs with [B, G] advantages
    out3 = grpo_loss(logprobs.detach().view(1, 2, 2), old.view(1, 2, 2), None, adv.view(1, 2),
                     mask.view(1, 2, 2))
    close(out3.loss, out.loss.detach())


def test_grpo_loss_token_level_aggregations():
    # row A (2 tokens): token 0 rho 1 -> 1.0; token 1 rho 1.5 -> clipped to 1.2 (A = 1)
    # row B (1 valid token): rho 0.5, A = 1 -> min(0.5, 0.8) = 0.5
    # "sample": ((1.0 + 1.2) / 2 + 0.5) / 2 = 0.8; "token": (1.0 + 1.2 + 0.5) / 3 = 0.9
    logprobs = torch.tensor([[-1.0, -2.0], [-1.0, -3.0]])
    old = torch.tensor([[-1.0, -2.0 - math.log(1.5)], [-1.0 + math.log(2.0), 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, 1.0])
    out_s = grpo_loss(logprobs, old, logprobs, adv, mask, level="token", token_aggregation="sample")
    out_t = grpo_loss(logprobs, old, logprobs, adv, mask, level="token", token_aggregation="token")
    close(out_s.loss, -0.8, atol=1e-5)
    close(out_t.loss, -0.9, atol=1e-5)
    close(out_s.kl, 0.0)  # reference = policy
    close(out_s.clip_fraction, 1.0 / 3.0)


def test_grpo_loss_token_level_kl():
    # one token, rho = 1, A = 0 -> surrogate 0; k3 with x = -0.5 is 0.10653066
    # loss = -(0 - 0.5 * 0.10653066) = 0.05326533
    lp = torch.tensor([[-1.0]])
    out = grpo_loss(lp, lp, torch.tensor([[-1.5]]), torch.tensor([0.0]), beta=0.5, level="token")
    close(out.loss, 0.05326533)


def test_grpo_loss_rejects_bad_level():
    lp = torch.zeros(1, 1)
    with pytest.raises(ValueError):
        grpo_loss(lp, lp, None, torch.zeros(1), level="word")


def test_extreme_log_ratio_does_not_overflow():
    # log rho = 1000 would overflow exp; clamped at 20 -> surrogate = clip(...) A = 1.2 for A = 1,
    # and rho A = e^20 A is the minimum for A = -1 (finite)
    surr, _ = clipped_surrogate(torch.tensor([1000.0, 1000.0]), torch.tensor([1.0, -1.0]))
    assert torch.isfinite(surr).all()
    close(surr[:1], [1.2])
    assert torch.isfinite(kl_estimate(torch.tensor([-1000.0]), torch.tensor([0.0]), "k3")).all()


def test_grpo_loss_per_token_advantages():
    """level='token' with [*, T] advantages: each token's surrogate uses its own advantage."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    out = grpo_loss(logprobs, logprobs.detach(), None, torch.tensor([[2.0, 1.0, 0.0]]), level="token", beta=0.0)
    assert out.loss.item() == pytest.approx(-1.0)  # -(mean over tokens of A * ratio 1)
    out.loss.backward()
    assert torch.allclose(logprobs.grad, torch.tensor([[-2 / 3, -1 / 3, 0.0]]))
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(logprobs, logprobs.detach(), None, torch.zeros(1, 3), level="sequence")
