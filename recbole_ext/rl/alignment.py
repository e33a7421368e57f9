"""Distribution alignment between two hidden states through a shared output head (LASAR).

LASAR (arXiv 2605.10207) ties latent reasoning step j to the hidden-state anchor j taken from
explicit chain-of-thought text with a step-wise *bidirectional* KL divergence of the two
next-token distributions the output head gives them::

    D(p, q) = KL(p || q) + KL(q || p),   p = softmax(logits_p), q = softmax(logits_q)

symmetric in its arguments and zero exactly when p = q. The caller detaches the anchor's logits
(the anchors are stop-gradient targets), so the gradient moves only the latent side. Pure tensor
functions: no models.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["anchor_index", "bidirectional_kl"]


def bidirectional_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p||q) + KL(q||p) per row: logits [..., V] twice -> [...] (nats, float32)."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"logits shapes differ: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}")
    log_p = torch.log_softmax(logits_p.float(), dim=-1)
    log_q = torch.log_softmax(logits_q.float(), dim=-1)
    # KL(p||q) + KL(q||p) = sum_v (p_v - q_v) (log p_v - log q_v)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)


def anchor_index(k_max: int, depth: Tensor, n_sentences: Tensor) -> tuple[Tensor, Tensor]:
    """Which anchor each latent output is tied to, for outputs laid out right-aligned in K = ``k_max``
    columns (row b's step j, 1-based, in column K - k_b + j - 1).

    Step j < k_b is tied to anchor j - 1 (0-based) when the CoT has a sentence after it (j < n_b);
    the last step k_b always to the last anchor n_b - 1 (so a depth other than the CoT's length still
    ends on the conclusion). (LASAR's RL ties only the last step: its rollouts' last states directly.)
    depth, n_sentences [B] (n_b >= 1) -> (keep [B, K] bool, anchor [B, K] long, 0 where not kept)."""
    col = torch.arange(k_max, device=depth.device)[None, :]  # [1, K]
    step = col - (k_max - depth)[:, None] + 1  # [B, K] 1-based step of each column (<= 0: padding)
    last = step == depth[:, None]
    keep = (step >= 1) & (last | (step < n_sentences[:, None]))
    anchor = torch.where(last, n_sentences[:, None] - 1, step - 1)
    return keep, torch.where(keep, anchor, torch.zeros_like(anchor))
