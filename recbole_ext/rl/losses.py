"""STREAM-Rec training losses (arXiv 2504.09627, sections 2.2.2 and 2.3.2) as pure functions.

* :func:`pretrain_targets` / :func:`temperature_nll` - Eq. 9-11, the lengthened pretraining
  target and its temperature-softmax likelihood (also Eq. 19's L_SFT with τ = 1).
* :func:`state_target_infonce` - Eq. 14, state-target contrastive loss.
* :func:`quantization_loss` - Eq. 15, residual-to-token commitment.
* :func:`dpo_loss` - Eq. 16-18, DPO against the direct (one-step) reference decoder.
* :func:`sft_objective` - Eq. 19, the weighted sum.

Reductions: the paper writes sums over the batch (and over steps / tokens); every loss here takes
``reduction`` in {"mean", "sum", "none"} and defaults to "mean" over samples (and over valid
tokens or steps where the paper sums them), so that λ, μ, δ of Eq. 19 do not change meaning with
the batch size; "sum" gives the literal equations.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "pretrain_targets",
    "temperature_nll",
    "step_weights",
    "state_target_infonce",
    "quantization_loss",
    "dpo_loss",
    "sft_objective",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------- Eq. 9-11


def pretrain_targets(neighbor_codes: Tensor, target_codes: Tensor) -> Tensor:
    """Eq. 9: ``Y = [c'_1..c'_q ; c_1..c_m]``, the codes of the retrieved similar items (nearest
    first, in the order given) followed by the target's codes.

    Args:
        neighbor_codes: ``[B, n, m]`` codes of the n retrieved items (n = 2 in the paper).
        target_codes: ``[B, m]``.

    Returns:
        ``[B, (n + 1) * m]`` (q = n * m). Eq. 9 indexes the target as c_{p+1..p+m+1} (m + 1
        symbols) while Eq. 10 sums over q + m: read as m codes plus the decoder's EOS, which is
        the caller's to append (as for TIGER's target).
    """
    if neighbor_codes.dim() != 3 or target_codes.dim() != 2:
        raise ValueError("neighbor_codes must be [B, n, m] and target_codes [B, m]")
    b = neighbor_codes.size(0)
    return torch.cat([neighbor_codes.reshape(b, -1), target_codes], dim=1)


def temperature_nll(
    logits: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Eq. 10-11: ``-Σ_t log softmax(p / τ)[y_t]`` over the label sequence.

    Eq. 11's ``P(y_t) = exp(p(y_t)/τ) / Σ_c exp(p(c)/τ)`` is a softmax of the decoder logits
    divided by τ during training (τ is a training-time sharpening/smoothing knob; the sampling
    temperature of RL rollouts is a separate setting).

    Args:
        logits: ``[B, T, V]`` decoder logits p(·).
        labels: ``[B, T]`` target ids, ``ignore_index`` on padding.
        temperature: τ > 0.
        reduction: "mean" over non-ignored tokens (default), "sum" (Eq. 10 summed over tokens
            and batch), "none" (``[B]`` per-sequence sums).

    Returns:
        scalar, or ``[B]`` for "none".
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    tok = F.cross_entropy(
        (logits.float() / temperature).transpose(1, 2),  # [B, V, T]
        labels,
        ignore_index=ignore_index,
        reduction="none",
    )  # [B, T], 0 on ignored positions
    if reduction == "none":
        return tok.sum(dim=1)
    if reduction == "sum":
        return tok.sum()
    if reduction == "mean":
        return tok.sum() / (labels != ignore_index).sum().clamp(min=1)
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------- Eq. 14


def step_weights(
    num_steps: int, schedule: str = "linear", gamma: float = 2.0, normalize: bool = True
) -> Tensor:
    """The w_j of Eq. 14, "a weight coefficient that increases with the number of reasoning
    steps" (the paper gives no formula).

    Schedules (j = 1..l):
        "linear" (default): w_j = j; "exp": w_j = gamma ** (j - 1); "uniform": w_j = 1.
    With ``normalize`` (default) the weights sum to 1, so the loss scale (and δ) does not depend
    on l, which the l in {2, 4, 6, 8} ablation varies. E.g. l = 4, linear: [0.1, 0.2, 0.3, 0.4].

    Returns:
        ``[l]`` float (empty for l = 0).
    """
    if num_steps < 0:
        raise ValueError("num_steps must be >= 0")
    j = torch.arange(1, num_steps + 1, dtype=torch.float32)
    if schedule == "linear":
        w = j
    elif schedule == "exp":
        w = gamma ** (j - 1)
    elif schedule == "uniform":
        w = torch.ones_like(j)
    else:
        raise ValueError(f"schedule must be 'linear', 'exp' or 'uniform', got {schedule!r}")
    if normalize and num_steps > 0:
        w = w / w.sum()
    return w


def state_target_infonce(
    states: Tensor,
    targets: Tensor,
    weights: Union[Tensor, Sequence[float], str, None] = "linear",
    temperature: float = 1.0,
    reduction: str = "mean",
    normalize: bool = False,
    detach_targets: bool = False,
) -> Tensor:
    """Eq. 14: ``-Σ_j w_j Σ_i log( exp(s_ij·t_i) / Σ_j' exp(s_ij·t_j') )``.

    In-batch InfoNCE between each reasoning step's state and the target representations: for
    step j, row i's positive is t_i, the other B - 1 targets of the batch are negatives
    (similarity = dot product, as written; ``temperature`` divides it, 1 = the paper).

    Args:
        states: ``[B, l, H]`` s_{i,j} (the labeller's states after step j = 1..l).
        targets: ``[B, H]`` t_i (mean of the target's token embeddings).
        weights: ``[l]`` tensor/sequence, a schedule name for :func:`step_weights`
            (normalised; "linear" default), or None for all ones (unnormalised).
        temperature: divides the logits.
        reduction: over the batch: "mean" (default), "sum" (as written), "none" (``[B]``).
        normalize: L2-normalise states and targets first (cosine similarity; not in the paper,
            off by default; useful when raw dot products of H = 256 vectors saturate).
        detach_targets: stop the gradient into t (False = the paper: t is built from the
            shared token embeddings, which this loss then also trains).

    Returns:
        scalar (or ``[B]``); 0 (with graph) for l = 0.
    """
    if states.dim() != 3 or targets.dim() != 2:
        raise ValueError("states must be [B, l, H] and targets [B, H]")
    b, l, _ = states.shape
    if l == 0:
        zero = states.sum() * 0.0 + targets.sum() * 0.0
        return zero if reduction != "none" else zero.expand(b).clone()
    if isinstance(weights, str):
        w = step_weights(l, weights)
    elif weights is None:
        w = torch.ones(l)
    else:
        w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (l,):
        raise ValueError(f"weights must have shape [{l}], got {tuple(w.shape)}")
    w = w.to(states.device, states.dtype)
    if detach_targets:
        targets = targets.detach()
    if normalize:
        states = F.normalize(states, dim=-1)
        targets = F.normalize(targets, dim=-1)
    logits = torch.einsum("ijh,kh->ijk", states, targets) / temperature  # [B, l, B]
    labels = torch.arange(b, device=states.device).unsqueeze(1).expand(b, l)  # [B, l]
    nll = F.cross_entropy(logits.reshape(b * l, b), labels.reshape(-1), reduction="none")
    per_sample = (nll.view(b, l) * w).sum(dim=1)  # [B]
    return _reduce(per_sample, reduction)


# --------------------------------------------------------------------------- Eq. 15


def quantization_loss(
    residuals: Tensor,
    token_embeddings: Tensor,
    beta: float = 0.25,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Eq. 15: ``Σ_i Σ_j ||sg[r_ij] - o_ij||^2 + β ||r_ij - sg[o_ij]||^2``.

    The first (codebook) term moves the chosen token's embedding toward the residual, the
    second (commitment, weight β) moves the residual-MLP output toward the token. The paper
    prints a leading minus sign, which would push them apart; it is read as a typo (the same
    loss without the sign is Eq. 6 for the RQ-VAE), so this returns the positive VQ loss.
    ``|·|^2`` is the squared L2 norm over H. β is not given for Eq. 15; 0.25 (the RQ-VAE β) by
    default. The straight-through estimator for the forward pass lives in
    :func:`recbole_ext.rl.reasoning.straight_through`.

    Args:
        residuals: ``[B, l, H]`` r_ij (with graph to the residual MLP).
        token_embeddings: ``[B, l, H]`` embeddings of the chosen tokens o_ij (with graph to the
            embedding table if it should learn).
        beta: commitment weight.
        mask: optional ``[B, l]`` valid steps.
        reduction: "mean" over valid (i, j) (default), "sum" (as written), "none" (``[B, l]``).

    Returns:
        scalar (or ``[B, l]``); 0 with graph for l = 0.
    """
    if residuals.shape != token_embeddings.shape:
        raise ValueError("residuals and token_embeddings must both be [B, l, H]")
    codebook = (residuals.detach() - token_embeddings).pow(2).sum(-1)  # [B, l]
    commit = (residuals - token_embeddings.detach()).pow(2).sum(-1)  # [B, l]
    per = codebook + beta * commit  # [B, l]
    if mask is not None:
        per = per * mask.to(per.dtype)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    if reduction == "mean":
        n = mask.to(per.dtype).sum() if mask is not None else per.new_tensor(float(per.numel()))
        return per.sum() / n.clamp(min=1.0)
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------- Eq. 16-18


def dpo_loss(
    policy_pos_logprob: Tensor,
    policy_neg_logprob: Tensor,
    ref_pos_logprob: Tensor,
    ref_neg_logprob: Tensor,
    beta: float = 0.1,
    detach_ref: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Eq. 16-18: ``-log σ(β (logit+ - logit-))`` with
    ``logit± = log π_θ(y± | x, y_think) - log π_ref(y± | x)``.

    Eq. 18's ``-log(exp(β l+) / (exp(β l+) + exp(β l-)))`` equals
    ``softplus(-β (l+ - l-))``, computed that way for stability.

    In STREAM-Rec, y+ is the target item, y- an item similar to it (text-embedding neighbour),
    π_θ's log-prob is the sum over the item's m tokens teacher-forced after the sample's
    reasoning tokens y_think, and π_ref is the one-step direct decoder (no reasoning).

    Args:
        policy_pos_logprob, policy_neg_logprob: ``[B]`` log π_θ(y±|x, y_think).
        ref_pos_logprob, ref_neg_logprob: ``[B]`` log π_ref(y±|x).
        beta: DPO β (not given in the paper; 0.1 as in the DPO paper).
        detach_ref: True (default) treats the reference as frozen, as in DPO. The direct
            decoder shares the encoder with π_θ, so False would also push the shared encoder
            through the reference terms.
        reduction: "mean" (default), "sum", "none" (``[B]``).
    """
    if detach_ref:
        ref_pos_logprob = ref_pos_logprob.detach()
        ref_neg_logprob = ref_neg_logprob.detach()
    logit_pos = policy_pos_logprob - ref_pos_logprob  # [B]
    logit_neg = policy_neg_logprob - ref_neg_logprob  # [B]
    per = F.softplus(-beta * (logit_pos - logit_neg))  # [B]
    return _reduce(per, reduction)


# --------------------------------------------------------------------------- Eq. 19


def sft_objective(
    sft: Tensor,
    dpo: Optional[Tensor] = None,
    quant: Optional[Tensor] = None,
    state: Optional[Tensor] = None,
    lam: float = 1.0,
    mu: float = 1.0,
    delta: float = 1.0,
) -> Tensor:
    """Eq. 19: ``L = L_SFT + λ L_DPO + μ L_Quant + δ L_State``.

    A term that is None or whose weight is 0 is skipped (the loss-term ablation switches).
    """
    total = sft
    for term, weight in ((dpo, lam), (quant, mu), (state, delta)):
        if term is not None and weight != 0.0:
            total = total + weight * term
    return total
