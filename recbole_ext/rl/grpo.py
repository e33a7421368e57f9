"""Group Relative Policy Optimisation (GRPO) as pure tensor functions.

STREAM-Rec (Zhang et al., 2025, arXiv 2504.09627) section 2.4.1, Eq. 20; the algorithm is
DeepSeekMath's (Shao et al., 2024, arXiv 2402.03300, section 4.1):

    J(θ) = E[ 1/G Σ_i ( min(ρ_i A_i, clip(ρ_i, 1-ε, 1+ε) A_i) - β D_KL(π_θ || π_ref) ) ]   (20)
    ρ_i  = π_θ(y_i | s_u) / π_θold(y_i | s_u)

Nothing here knows about T5, items or STREAM-Rec: the functions take log-probabilities, old and
reference log-probabilities, advantages and a mask, so LASAR and TwiSTAR reuse them as they are.

Conventions
-----------
* A rollout batch holds B prompts (users) x G rollouts each. Rewards and advantages are [B, G];
  log-probabilities are token-level ``[N, T]`` with ``N = B * G`` rows in prompt-major order
  (row ``b * G + g`` is rollout g of prompt b, i.e. ``advantages.reshape(-1)``). Any leading
  shape works as long as log-probabilities are ``[*, T]`` and advantages ``[*]``.
* ``mask`` ``[*, T]`` is 1 (or True) on generated tokens that belong to the action (reasoning
  and target tokens in STREAM-Rec) and 0 on padding / prompt positions.
* ``level="sequence"`` (the default) implements Eq. 20 exactly as written: the ratio is one
  ratio of whole-sequence probabilities, ρ_i = exp(Σ_t log π_θ - Σ_t log π_old), and the KL term
  is estimated on the sequence log-ratio. ``level="token"`` is DeepSeekMath's per-token form
  (ratio, clipping and KL per token, averaged over a sequence's tokens, then over sequences).
  STREAM-Rec's sequences are short (l + m <= 12 tokens), so the sequence ratio stays tame.
* KL estimator: ``"k3"`` (default) is the unbiased, always non-negative estimator used by
  DeepSeekMath GRPO (Schulman, "Approximating KL divergence", 2020):
  ``k3 = π_ref/π_θ - log(π_ref/π_θ) - 1``; ``"k1"`` = ``log π_θ - log π_ref`` (unbiased, can be
  negative), ``"k2"`` = ``0.5 (log π_θ - log π_ref)^2`` (biased, low variance). Like every
  GRPO implementation, the samples come from π_old, not π_θ; with one update per rollout
  batch the two coincide.
* ``old_logprobs`` and ``ref_logprobs`` are detached inside: they are constants of the update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "GRPOOutput",
    "group_advantages",
    "token_logprobs",
    "masked_sum",
    "masked_mean",
    "sequence_logprob",
    "kl_estimate",
    "clipped_surrogate",
    "grpo_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")
#: |log ratio| above which exp() is clamped (ratio and k3), e^20 ~ 4.9e8.
MAX_LOG_RATIO = 20.0


def group_advantages(rewards: Tensor, eps: float = 1e-6, unbiased: bool = False) -> Tensor:
    """Group-normalised advantages of GRPO's outcome supervision (DeepSeekMath Eq. for Â_i).

    ``A[b, g] = (r[b, g] - mean_g r[b]) / (std_g r[b] + eps)``.

    Args:
        rewards: ``[B, G]`` total reward of rollout g of prompt b.
        eps: added to the standard deviation.
        unbiased: False (default) uses the population std (divide by G), which is defined for
            G = 1; True uses Bessel's correction (divide by G - 1) as TRL does.

    Returns:
        ``[B, G]`` advantages. A group whose rewards are all equal gets exactly 0 (set
        explicitly, so float round-off in the mean cannot leak a ±tiny/eps value).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    rewards = rewards.detach().float()
    mean = rewards.mean(dim=1, keepdim=True)  # [B, 1]
    if unbiased and rewards.size(1) > 1:
        std = rewards.std(dim=1, keepdim=True, unbiased=True)  # [B, 1]
    else:
        std = rewards.std(dim=1, keepdim=True, unbiased=False)  # [B, 1]
    adv = (rewards - mean) / (std + eps)  # [B, G]
    all_equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # [B, 1]
    return torch.where(all_equal, torch.zeros_like(adv), adv)


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each chosen token under softmax(logits / temperature).

    Args:
        logits: ``[*, T, V]``.
        tokens: ``[*, T]`` token ids (any value at padded positions; mask them later).
        temperature: the sampling temperature the rollouts were drawn with.

    Returns:
        ``[*, T]`` log-probabilities.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [*, T, V]
    safe = tokens.clamp(min=0, max=logits.size(-1) - 1)  # ignore_index-style ids -> any valid id
    return logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # [*, T]


def _as_mask(mask: Optional[Tensor], like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != values shape {tuple(like.shape)}")
    return mask.to(like.dtype)


def masked_sum(values: Tensor, mask: Optional[Tensor], dim: int = -1) -> Tensor:
    """Sum of ``values`` over ``dim`` where ``mask`` is set (masked entries contribute 0,
    even if they are -inf/NaN)."""
    m = _as_mask(mask, values)
    return torch.where(m > 0, values * m, torch.zeros_like(values)).sum(dim=dim)


def masked_mean(values: Tensor, mask: Optional[Tensor], dim: int = -1) -> Tensor:
    """Mean of ``values`` over ``dim`` where ``mask`` is set; 0 for an all-masked row."""
    m = _as_mask(mask, values)
    return masked_sum(values, m, dim) / m.sum(dim=dim).clamp(min=1.0)


def sequence_logprob(token_logp: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``log π(y) = Σ_t log π(y_t | y_<t)`` over masked tokens: ``[*, T] -> [*]``."""
    return masked_sum(token_logp, mask, dim=-1)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-sample estimate of ``D_KL(π_θ || π_ref)`` from log-probabilities of sampled actions.

    With ``x = log π_ref - log π_θ``: k1 = -x, k2 = x^2 / 2, k3 = exp(x) - x - 1 (>= 0).
    Elementwise; works on token- or sequence-level log-probabilities. For k3, x is clamped to
    ``<= MAX_LOG_RATIO`` (20) so that exp cannot overflow.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")
    x = ref_logprobs.detach() - logprobs  # log(π_ref / π_θ)
    if estimator == "k3":
        x = x.clamp(max=MAX_LOG_RATIO)
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x * x
    return torch.exp(x) - x - 1.0


def clipped_surrogate(log_ratio: Tensor, advantages: Tensor, clip_eps: float = 0.2,
                      clip_eps_high: Optional[float] = None,
                      max_log_ratio: float = MAX_LOG_RATIO) -> tuple[Tensor, Tensor]:
    """PPO/GRPO clipped surrogate ``min(ρ A, clip(ρ, 1-ε, 1+ε_high) A)`` (inside Eq. 20).

    Args:
        log_ratio: ``log ρ = log π_θ - log π_old``, any shape.
        advantages: broadcastable to ``log_ratio``.
        clip_eps: ε (lower and, by default, upper clip).
        clip_eps_high: optional separate upper ε ("clip-higher"); None = ``clip_eps``.
        max_log_ratio: ``log ρ`` is clamped to ``[-max, max]`` before ``exp`` so that a
            diverged sequence-level ratio cannot overflow to inf (no effect below e^20).

    Returns:
        (surrogate to maximise, same shape; bool mask of entries where the clipped branch is
        the active minimum, i.e. the gradient is cut).
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(log_ratio.clamp(-max_log_ratio, max_log_ratio))
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high) * advantages
    surrogate = torch.minimum(unclipped, clipped)
    is_clipped = (clipped < unclipped).detach()
    return surrogate, is_clipped


@dataclass
class GRPOOutput:
    """Result of :func:`grpo_loss`. ``loss`` has the graph; the rest are detached stats."""

    loss: Tensor  # scalar, = -J(θ)
    surrogate: Tensor  # scalar, mean clipped surrogate term
    kl: Tensor  # scalar, mean KL estimate
    clip_fraction: Tensor  # scalar, share of (sequences or tokens) on the clipped branch
    ratio_mean: Tensor  # scalar, mean ratio ρ


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Optional[Tensor],
    advantages: Tensor,
    mask: Optional[Tensor] = None,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: Optional[float] = None,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    level: str = "sequence",
    token_aggregation: str = "sample",
) -> GRPOOutput:
    """Negative of the GRPO objective of Eq. 20 (minimise it).

    Args:
        logprobs: ``[*, T]`` token log-probs of the rollouts under π_θ (with graph).
        old_logprobs: ``[*, T]`` same tokens under π_old (the sampling policy); detached here.
        ref_logprobs: ``[*, T]`` under the reference policy (the SFT model in STREAM-Rec), or
            None for no KL term; detached here.
        advantages: ``[*]`` one advantage per rollout (e.g. ``group_advantages(r).reshape(-1)``),
            or with ``level="token"`` ``[*, T]``, one per token (e.g. reasoning tokens credited by
            the thinking rewards, item tokens by the item rewards).
        mask: ``[*, T]`` 1 on action tokens; None = all tokens.
        clip_eps, clip_eps_high: ε of the clipped ratio (see :func:`clipped_surrogate`).
        beta: KL coefficient β (DeepSeekMath's 0.04 by default; the paper gives no value).
        kl_estimator: "k3" (default), "k1" or "k2", see :func:`kl_estimate`.
        level: "sequence" (Eq. 20 as written: one ratio per rollout from summed log-probs, KL on
            the summed log-ratio) or "token" (DeepSeekMath: per-token ratio and KL).
        token_aggregation: for ``level="token"`` only: "sample" averages each sequence's tokens
            then the sequences (DeepSeekMath's 1/|o_i|); "token" averages all valid tokens of the
            batch at once (DAPO-style).

    Returns:
        :class:`GRPOOutput`; ``loss = -mean_i[surrogate_i - β KL_i]``, the mean over all rollouts
        being the 1/G Σ_i of Eq. 20 averaged over prompts.
    """
    if logprobs.shape != old_logprobs.shape:
        raise ValueError("logprobs and old_logprobs must have the same [*, T] shape")
    per_token = level == "token" and advantages.shape == logprobs.shape
    if advantages.shape != logprobs.shape[:-1] and not per_token:
        raise ValueError(
            f"advantages must be [*] = {tuple(logprobs.shape[:-1])} (or [*, T] with level='token'), "
            f"got {tuple(advantages.shape)}"
        )
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ValueError("ref_logprobs must have the same [*, T] shape as logprobs")
    m = _as_mask(mask, logprobs)  # [*, T]
    adv = advantages.detach().to(logprobs.dtype)  # [*]
    old = old_logprobs.detach()
    use_kl = ref_logprobs is not None and beta != 0.0

    if level == "sequence":
        seq_lp = sequence_logprob(logprobs, m)  # [*]
        seq_old = sequence_logprob(old, m)  # [*]
        surrogate, is_clipped = clipped_surrogate(seq_lp - seq_old, adv, clip_eps, clip_eps_high)
        if use_kl:
            kl = kl_estimate(seq_lp, sequence_logprob(ref_logprobs.detach(), m), kl_estimator)
        else:
            kl = torch.zeros_like(seq_lp)
        objective = surrogate - beta * kl  # [*]
        loss = -objective.mean()
        ratio = torch.exp((seq_lp - seq_old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)).detach()
        stats = (surrogate.mean(), kl.mean(), is_clipped.float().mean(), ratio.mean())
    elif level == "token":
        lr = torch.where(m > 0, logprobs - old, torch.zeros_like(logprobs))  # [*, T]
        surrogate, is_clipped = clipped_surrogate(lr, adv if per_token else adv.unsqueeze(-1), clip_eps,
                                                  clip_eps_high)
        if use_kl:
            ref = torch.where(m > 0, ref_logprobs.detach(), logprobs.detach())
            kl = kl_estimate(logprobs, ref, kl_estimator)  # [*, T]
        else:
            kl = torch.zeros_like(logprobs)
        objective = surrogate - beta * kl  # [*, T]
        if token_aggregation == "sample":
            per_seq = masked_mean(objective, m, dim=-1)  # [*]
            loss = -per_seq.mean()
        elif token_aggregation == "token":
            loss = -masked_sum(objective, m, dim=-1).sum() / m.sum().clamp(min=1.0)
        else:
            raise ValueError(f"token_aggregation must be 'sample' or 'token', got {token_aggregation!r}")
        n_tok = m.sum().clamp(min=1.0)
        stats = (
            masked_sum(surrogate, m, dim=-1).sum() / n_tok,
            masked_sum(kl, m, dim=-1).sum() / n_tok,
            masked_sum(is_clipped.float(), m, dim=-1).sum() / n_tok,
            masked_sum(torch.exp(lr.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)).detach(), m, dim=-1).sum() / n_tok,
        )
    else:
        raise ValueError(f"level must be 'sequence' or 'token', got {level!r}")

    surr, kl_mean, clip_frac, ratio_mean = (s.detach() for s in stats)
    return GRPOOutput(loss=loss, surrogate=surr, kl=kl_mean, clip_fraction=clip_frac,
                      ratio_mean=ratio_mean)
