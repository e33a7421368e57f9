"""The five STREAM-Rec rewards (arXiv 2504.09627, section 2.4.2, Eq. 21-27) as pure functions.

Every function maps tensors about N rollouts to an ``[N]`` float reward tensor, computed without
gradient (rewards are constants of the GRPO update). The model/trainer produces the inputs
(decoded codes, validity from the trie, hidden states, log-probabilities); nothing here knows
about T5 or RecBole. :func:`combine_rewards` sums them with weights read from the model YAML
(the paper's overall reward is the plain sum, i.e. all weights 1).

Reward names used as YAML keys (``reward_weights``): see :data:`REWARD_NAMES`.

Choices where the paper is ambiguous (each also stated in the function's docstring):

* Format (Eq. 21): the caller decides validity (the generated target's m codes form a known
  item); helper :func:`valid_item_mask` does the lookup against the item-code table.
* Exact match (Eq. 22-23): number of leading target codes that match, 0..m, unnormalised.
* Similarity (Eq. 24-25): ``S = pred @ target.T`` (dot product, the similarity Eq. 14 uses;
  cosine is a switch); the comparison set is every row of the rollout batch, the sample itself
  included (j = 1..B as written, so ``g_i >= 1/B``) and ties counted as ``<=`` (so duplicated
  targets from G rollouts of one user never lower g).
* Thinking likelihood (Eq. 26): LogProb = sum of the m target tokens' log-probs (the log of the
  item's probability, not a per-token mean); optional symmetric clipping, off by default.
* Thinking ranking (Eq. 27): ranks are 1-based (``p_i = 1`` is the top; the paper's aside
  "p_i = 0 indicating the highest rank" contradicts its own first case and is read as a typo);
  ties with a negative count against the positive (pessimistic, so a degenerate model scoring
  everything equally gets no bonus); ranks in ``[0.2K, 0.5K)``, which the paper leaves out,
  get 0.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "REWARD_NAMES",
    "DEFAULT_REWARD_WEIGHTS",
    "SIMILARITY_LEVELS",
    "valid_item_mask",
    "format_reward",
    "prefix_match_reward",
    "mean_pool",
    "batch_rank_fraction",
    "rank_fraction_reward",
    "similarity_reward",
    "thinking_likelihood_reward",
    "positive_rank",
    "thinking_ranking_reward",
    "combine_rewards",
]

#: YAML keys of the five rewards, in the paper's order.
REWARD_NAMES: tuple[str, ...] = (
    "format",
    "prefix_match",
    "similarity",
    "think_likelihood",
    "think_ranking",
)
#: The paper sums the five rewards: every weight is 1.
DEFAULT_REWARD_WEIGHTS: dict[str, float] = {name: 1.0 for name in REWARD_NAMES}
#: Eq. 24: (threshold on g, reward) from the highest threshold down; below all: -0.1.
SIMILARITY_LEVELS: tuple[tuple[float, float], ...] = ((0.99, 0.5), (0.95, 0.1), (0.50, 0.05))
SIMILARITY_OTHERWISE: float = -0.1


@torch.no_grad()
def valid_item_mask(codes: Tensor, item_codes: Tensor, chunk_size: int = 4096) -> Tensor:
    """Whether each generated code tuple is the semantic ID of a known item.

    Args:
        codes: ``[N, m]`` generated target codes.
        item_codes: ``[n_items, m]`` the code table of all valid items.
        chunk_size: items compared at once (memory ``N x chunk_size x m`` booleans).

    Returns:
        ``[N]`` bool.
    """
    if codes.dim() != 2 or item_codes.dim() != 2 or codes.size(1) != item_codes.size(1):
        raise ValueError(
            f"codes [N, m] and item_codes [n_items, m] must share m; got "
            f"{tuple(codes.shape)} and {tuple(item_codes.shape)}"
        )
    found = torch.zeros(codes.size(0), dtype=torch.bool, device=codes.device)  # [N]
    item_codes = item_codes.to(codes.device)
    for start in range(0, item_codes.size(0), chunk_size):
        block = item_codes[start : start + chunk_size]  # [C, m]
        found |= (codes.unsqueeze(1) == block.unsqueeze(0)).all(dim=-1).any(dim=-1)
    return found


@torch.no_grad()
def format_reward(valid: Tensor, penalty: float = -1.0) -> Tensor:
    """Eq. 21: 0 when the generation parses to a valid item, ``penalty`` (-1) otherwise.

    Args:
        valid: ``[N]`` bool, e.g. from :func:`valid_item_mask` or the decoding trie.
    """
    valid = valid.bool()
    return torch.where(valid, torch.zeros(valid.shape, device=valid.device),
                       torch.full(valid.shape, float(penalty), device=valid.device))


@torch.no_grad()
def prefix_match_reward(generated: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Eq. 22-23: number of leading target codes reproduced exactly.

    ``γ_EM = Σ_j 1[c_j = ĉ_j and c_k = ĉ_k for all k < j]`` = length of the common prefix.

    Args:
        generated: ``[N, m]`` generated target codes (reasoning tokens excluded).
        target: ``[N, m]`` ground-truth codes.
        mask: optional ``[N, m]``; a position with mask 0 counts as a mismatch (use it when a
            generation stopped early).

    Returns:
        ``[N]`` float in {0, ..., m}.
    """
    if generated.shape != target.shape:
        raise ValueError(f"generated {tuple(generated.shape)} != target {tuple(target.shape)}")
    eq = generated == target  # [N, m]
    if mask is not None:
        eq = eq & mask.bool()
    return torch.cumprod(eq.long(), dim=-1).sum(dim=-1).float()  # [N]


@torch.no_grad()
def mean_pool(hidden: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Masked mean over positions, ``[N, T, H] -> [N, H]`` (the "mean pooling of the decoder's
    hidden states" that Eq. 24-25 compare; an all-masked row gives 0)."""
    if mask is None:
        return hidden.float().mean(dim=1)
    m = mask.to(torch.float32).unsqueeze(-1)  # [N, T, 1]
    summed = torch.where(m > 0, hidden.float() * m, torch.zeros_like(hidden, dtype=torch.float32)).sum(dim=1)
    return summed / m.sum(dim=1).clamp(min=1.0)  # [N, H]


@torch.no_grad()
def batch_rank_fraction(pred: Tensor, target: Tensor, similarity: str = "dot") -> Tensor:
    """Eq. 25: ``g_i = 1/B Σ_j 1[S_ij <= S_ii]`` with ``S = sim(pred, target)`` ``[B, B]``.

    Args:
        pred: ``[B, H]`` the mean-pooled decoder hidden states of each rollout.
        target: ``[B, H]`` the mean of the target item's token embeddings for each rollout's
            user (rows repeat across the G rollouts of a user; ties count as ``<=``).
        similarity: "dot" (default, as in Eq. 14) or "cosine".

    Returns:
        ``[B]`` float in [1/B, 1].
    """
    pred = pred.float()
    target = target.float()
    if similarity == "cosine":
        pred = torch.nn.functional.normalize(pred, dim=-1)
        target = torch.nn.functional.normalize(target, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    sim = pred @ target.t()  # [B, B]
    own = sim.diagonal().unsqueeze(1)  # [B, 1]
    return (sim <= own).float().mean(dim=1)  # [B]


@torch.no_grad()
def similarity_reward(
    pred: Tensor,
    target: Tensor,
    similarity: str = "dot",
    levels: Sequence[tuple[float, float]] = SIMILARITY_LEVELS,
    otherwise: float = SIMILARITY_OTHERWISE,
) -> Tensor:
    """Eq. 24-25, batch-rank similarity reward.

    ``0.5 if g >= 0.99; 0.1 elif g >= 0.95; 0.05 elif g >= 0.50; -0.1 otherwise`` with g from
    :func:`batch_rank_fraction`. ``levels`` lists (threshold, reward) from the highest threshold.

    Args:
        pred: ``[B, H]``; target: ``[B, H]`` (see :func:`batch_rank_fraction`).

    Returns:
        ``[B]`` float.
    """
    g = batch_rank_fraction(pred, target, similarity)  # [B]
    return rank_fraction_reward(g, levels, otherwise)


@torch.no_grad()
def rank_fraction_reward(
    g: Tensor,
    levels: Sequence[tuple[float, float]] = SIMILARITY_LEVELS,
    otherwise: float = SIMILARITY_OTHERWISE,
) -> Tensor:
    """Eq. 24's step function of g: the reward of the highest threshold that ``g >=``, else
    ``otherwise``. ``g``: ``[B]`` -> ``[B]`` float."""
    x = g.float()
    out = torch.full_like(x, float(otherwise))
    # walk from the lowest threshold up so that the highest satisfied one wins
    for threshold, value in sorted(levels, key=lambda tv: tv[0]):
        out = torch.where(x >= threshold, torch.full_like(x, float(value)), out)
    return out


@torch.no_grad()
def thinking_likelihood_reward(
    policy_target_logprob: Tensor, ref_target_logprob: Tensor, clip: Optional[float] = None
) -> Tensor:
    """Eq. 26: ``log p_θ(Y_target | Y_think, s_u) - log p_ref(Y_target | s_u)``.

    Args:
        policy_target_logprob: ``[N]`` sum over the m target tokens of the policy's
            log-probs, teacher-forced after the rollout's own reasoning tokens.
        ref_target_logprob: ``[N]`` same sum under the one-step direct decoder (no reasoning).
        clip: if set, the reward is clamped to ``[-clip, clip]`` (not in the paper; off).

    Returns:
        ``[N]`` float.
    """
    r = policy_target_logprob.float() - ref_target_logprob.float()
    if clip is not None:
        r = r.clamp(-clip, clip)
    return r


@torch.no_grad()
def positive_rank(pos_score: Tensor, neg_scores: Tensor) -> Tensor:
    """1-based rank of the positive among itself and K negatives (ties rank it lower).

    ``p = 1 + #{k : neg_k >= pos}``, in 1..K+1.

    Args:
        pos_score: ``[N]``; neg_scores: ``[N, K]``.

    Returns:
        ``[N]`` long.
    """
    return 1 + (neg_scores >= pos_score.unsqueeze(-1)).sum(dim=-1)


@torch.no_grad()
def thinking_ranking_reward(
    pos_logprob: Tensor,
    neg_logprob: Tensor,
    rewards: tuple[float, float, float, float] = (0.2, 0.1, 0.05, -0.1),
) -> Tensor:
    """Eq. 27, ranking of the target's likelihood against K hard negatives.

    Scores are ``log p_θ(item | Y_think, s_u)`` (sum over the item's m tokens) of the target and
    of K negatives (items nearest to the target in text embedding, K = 50 in the paper), all
    conditioned on the rollout's reasoning tokens. With p the 1-based rank of
    :func:`positive_rank`::

        0.2   if p = 1
        0.1   if 1 < p < 0.1K
        0.05  if 0.1K <= p < 0.2K
        0     if 0.2K <= p < 0.5K   (left out by the paper)
        -0.1  if p >= 0.5K

    Args:
        pos_logprob: ``[N]``; neg_logprob: ``[N, K]``.
        rewards: the four values (top, top-10 %, top-20 %, penalty).

    Returns:
        ``[N]`` float.
    """
    if neg_logprob.dim() != 2 or neg_logprob.size(0) != pos_logprob.size(0):
        raise ValueError("neg_logprob must be [N, K] with N = len(pos_logprob)")
    k = neg_logprob.size(1)
    p = positive_rank(pos_logprob.float(), neg_logprob.float()).float()  # [N]
    top, tier1, tier2, penalty = (float(v) for v in rewards)
    out = torch.zeros_like(p)
    out = torch.where(p >= 0.5 * k, torch.full_like(p, penalty), out)
    out = torch.where((p >= 0.1 * k) & (p < 0.2 * k), torch.full_like(p, tier2), out)
    out = torch.where((p > 1) & (p < 0.1 * k), torch.full_like(p, tier1), out)
    out = torch.where(p == 1, torch.full_like(p, top), out)
    return out


def combine_rewards(
    components: Mapping[str, Tensor], weights: Optional[Mapping[str, float]] = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of reward components (the paper: plain sum, "the overall reward is the sum").

    Args:
        components: name -> ``[N]`` reward. Names are free (see :data:`REWARD_NAMES`).
        weights: name -> weight, e.g. the YAML's ``reward_weights``; a component without a
            weight gets 1.0; weight 0 switches a reward off. A non-zero weight for a component
            that was not computed is an error (the caller forgot an enabled reward).

    Returns:
        (total ``[N]``, the weighted components by name).
    """
    weights = dict(weights or {})
    missing = [n for n, w in weights.items() if w != 0 and n not in components]
    if missing:
        raise KeyError(
            f"reward(s) {missing} have non-zero weights but were not computed; computed: "
            f"{sorted(components)}. Set their weight to 0 to disable them."
        )
    if not components:
        raise ValueError("no reward components given")
    total: Optional[Tensor] = None
    weighted: dict[str, Tensor] = {}
    for name, value in components.items():
        w = float(weights.get(name, 1.0))
        term = value.detach().float() * w
        weighted[name] = term
        total = term if total is None else total + term
    assert total is not None
    return total, weighted
