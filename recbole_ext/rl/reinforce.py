"""REINFORCE with a baseline and an entropy bonus, for small categorical policies.

Williams (1992), "Simple statistical gradient-following algorithms for connectionist
reinforcement learning"; the entropy bonus as in Mnih et al. (2016, A3C). Used where a policy picks
one of a few discrete actions per sample: LASAR's depth head (how many latent steps) and TwiSTAR's
planner (which tool). Pure tensor functions: no models, no transformers, no RecBole.

For logits ``[N, A]``, sampled actions ``a [N]`` and rewards ``r [N]``::

    loss = - mean_i (r_i - b) log π(a_i | x_i)  -  entropy_coef * mean_i H(π(. | x_i))

with the baseline ``b`` held constant in the gradient (:func:`reinforce_loss`). The baseline is
the batch mean (``baseline="batch"``), a running mean kept by :class:`RunningBaseline`, or any
tensor the caller passes (a learned value, per-sample ``[N]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ReinforceOutput", "RunningBaseline", "categorical_entropy", "reinforce_loss"]


def categorical_entropy(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per row: [N, A] -> [N] (nats; -inf logits are impossible actions)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(dim=-1)


@dataclass
class ReinforceOutput:
    loss: Tensor  # scalar, to minimise
    advantages: Tensor  # [N] r - b (no gradient)
    entropy: Tensor  # scalar, mean entropy (no gradient)
    baseline: Tensor  # scalar or [N], the baseline used (no gradient)


def reinforce_loss(logits: Tensor, actions: Tensor, rewards: Tensor, baseline: Tensor | float | str = "batch",
                   entropy_coef: float = 0.0) -> ReinforceOutput:
    """Policy-gradient loss of sampled ``actions`` [N] under ``logits`` [N, A] with ``rewards`` [N].

    ``baseline``: ``"batch"`` (mean reward of the batch), ``"none"`` (0), a float, or a tensor
    (scalar or [N]); it is detached. ``entropy_coef`` >= 0 weights the entropy bonus.
    """
    if logits.dim() != 2 or actions.shape != logits.shape[:1] or rewards.shape != actions.shape:
        raise ValueError(f"expected logits [N, A], actions [N], rewards [N]; got {tuple(logits.shape)}, "
                         f"{tuple(actions.shape)}, {tuple(rewards.shape)}")
    if entropy_coef < 0:
        raise ValueError(f"entropy_coef must be >= 0, got {entropy_coef}")
    rewards = rewards.detach().float()
    if isinstance(baseline, str):
        if baseline not in ("batch", "none"):
            raise ValueError(f"baseline must be 'batch', 'none', a number or a tensor; got {baseline!r}")
        b = rewards.mean() if baseline == "batch" else rewards.new_zeros(())
    else:
        b = torch.as_tensor(baseline, dtype=torch.float32, device=rewards.device).detach()
    adv = rewards - b  # [N]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, actions.long()[:, None]).squeeze(1)  # [N]
    entropy = categorical_entropy(logits)  # [N]
    loss = -(adv * logp).mean() - entropy_coef * entropy.mean()
    return ReinforceOutput(loss, adv, entropy.mean().detach(), b)


class RunningBaseline:
    """Exponential moving average of the mean reward: ``b <- momentum * b + (1 - momentum) * mean(r)``
    (the first update sets b to the first batch's mean)."""

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: float | None = None

    def update(self, rewards: Tensor) -> float:
        """Fold in a batch of rewards; returns the baseline to use for that batch (before the update)."""
        mean = float(rewards.detach().float().mean())
        before = mean if self.value is None else self.value
        self.value = mean if self.value is None else self.momentum * self.value + (1 - self.momentum) * mean
        return before
