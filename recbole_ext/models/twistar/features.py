"""The planner's cheap per-user features and their standardiser.

The planner must decide before any expensive tool runs, so it reads only the user's history and
the fast retriever's beam scores (which the fast tool produces anyway). Following the paper and
the official lite router (history diversity, the fast top-1 confidence and the top-1/top-2 gap),
the features are, in :data:`FEATURE_NAMES` order:

- ``log_history_length``: log1p of the history length (short histories are hard for the fast model);
- ``history_diversity``: distinct item groups / items among the last 20 history items (0 if empty);
  a group is e.g. an item's first semantic-ID code, so a scattered history scores near 1;
- ``top1_prob``, ``top12_margin``, ``beam_entropy``: of the softmax over the K alive beam scores
  (optionally length-normalised: divided by the SID length m, as the fast retriever's
  length-normalised beam scores), i.e. how peaked the fast model is among its own candidates;
- ``top1_logprob``: the best beam's (normalised) log-probability itself, floored at
  :data:`LOGPROB_FLOOR` (the softmax features are relative; this one is absolute confidence);
- ``topn_mass``: the softmax mass of the first 10 beams (how much the fast top-10 already holds
  compared with the top-K the ranker would see);
- ``alive_share``: the share of beams that are alive (few valid continuations = sparse trie region).

Dead beams (score -inf) get probability 0; with no alive beam every beam feature is 0 except
``top1_logprob`` = the floor. Everything is finite for empty histories and dead beams.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_NAMES", "LOGPROB_FLOOR", "FeatureScaler", "planner_features", "recent_mask"]

FEATURE_NAMES = (
    "log_history_length",
    "history_diversity",
    "top1_prob",
    "top12_margin",
    "beam_entropy",
    "top1_logprob",
    "topn_mass",
    "alive_share",
)
#: ``top1_logprob`` never goes below this (and takes it when every beam is dead).
LOGPROB_FLOOR = -20.0


def recent_mask(history: Tensor, n: int = 20) -> Tensor:
    """[B, L] bool: the last ``n`` non-padding items (0 = pad) of each row, wherever the padding sits."""
    real = history != 0  # [B, L]
    from_end = real.flip(1).long().cumsum(1).flip(1)  # [B, L] real items at or after each position
    return real & (from_end <= n)


def _history_features(history: Tensor, lengths: Tensor, item_groups: Tensor, max_recent: int) -> Tensor:
    """[B, 2]: log1p(length), distinct groups / items over the last ``max_recent`` items (0 if none)."""
    mask = recent_mask(history, max_recent)  # [B, L]
    groups = item_groups.to(history.device)[history.clamp(min=0)]  # [B, L]
    groups = torch.where(mask, groups.long(), torch.full_like(groups, -1, dtype=torch.long))
    srt = groups.sort(dim=1).values  # [B, L], the -1 padding first
    new = srt >= 0
    new[:, 1:] &= srt[:, 1:] != srt[:, :-1]  # first occurrence of each group value
    n_items = mask.sum(dim=1).float()  # [B]
    diversity = new.sum(dim=1).float() / n_items.clamp(min=1.0)  # [B], 0 for an empty history
    log_len = torch.log1p(lengths.to(history.device).float().clamp(min=0))  # [B]
    return torch.stack([log_len, diversity], dim=1)


def _beam_features(fast_scores: Tensor, sid_length: int | None, top_n: int) -> Tensor:
    """[B, 6]: top1_prob, top12_margin, beam_entropy, top1_logprob, topn_mass, alive_share."""
    scores = fast_scores.float()
    if sid_length is not None:
        scores = scores / float(sid_length)
    alive = torch.isfinite(scores)  # [B, K]
    logits = scores.masked_fill(~alive, float("-inf"))
    any_alive = alive.any(dim=1, keepdim=True)  # [B, 1]
    logp = torch.log_softmax(torch.where(any_alive, logits, torch.zeros_like(logits)), dim=1)  # [B, K]
    logp = logp.masked_fill(~alive, float("-inf"))
    p = logp.exp()  # [B, K], 0 on dead beams and on all-dead rows
    top2 = p.topk(min(2, p.shape[1]), dim=1).values  # [B, <=2]
    top1 = top2[:, 0]
    second = top2[:, 1] if top2.shape[1] > 1 else torch.zeros_like(top1)
    entropy = -(p * logp.masked_fill(~alive, 0.0)).sum(dim=1)  # [B] nats
    best = torch.where(alive, scores, torch.full_like(scores, float("-inf"))).max(dim=1).values  # [B]
    best = torch.where(torch.isfinite(best), best, torch.full_like(best, LOGPROB_FLOOR)).clamp(min=LOGPROB_FLOOR)
    mass = p[:, :top_n].sum(dim=1)
    alive_share = alive.float().mean(dim=1)
    return torch.stack([top1, top1 - second, entropy, best, mass, alive_share], dim=1)


def planner_features(history: Tensor, lengths: Tensor, fast_scores: Tensor, item_groups: Tensor,
                     sid_length: int | None = None, max_recent: int = 20, top_n: int = 10) -> Tensor:
    """Per-user planner features [B, F] (F = len(FEATURE_NAMES)), in :data:`FEATURE_NAMES` order.

    history: [B, L] item ids (0 = pad); lengths: [B] history lengths; fast_scores: [B, K] the fast
    retriever's summed beam log-probs, best first, -inf for dead beams; item_groups: [n_items] a
    group id per item (e.g. its first SID code) for the diversity feature; sid_length: divide the
    beam scores by it (length normalisation) before the softmax; max_recent: the diversity window;
    top_n: the beams counted in ``topn_mass``.
    """
    if history.dim() != 2 or lengths.shape != history.shape[:1] or fast_scores.dim() != 2 \
            or fast_scores.shape[0] != history.shape[0]:
        raise ValueError(f"expected history [B, L], lengths [B], fast_scores [B, K]; got {tuple(history.shape)}, "
                         f"{tuple(lengths.shape)}, {tuple(fast_scores.shape)}")
    hist = _history_features(history, lengths, item_groups, max_recent)  # [B, 2]
    beam = _beam_features(fast_scores.to(history.device), sid_length, top_n)  # [B, 6]
    return torch.cat([hist, beam], dim=1)  # [B, F]


class FeatureScaler(nn.Module):
    """Standardiser ``(x - mean) / std`` fitted on training features; mean and std are buffers, so they
    travel in the state_dict. Identity until fitted; a constant feature (std ~ 0) gets std 1."""

    def __init__(self, n_features: int = len(FEATURE_NAMES), eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_features))  # [F]
        self.register_buffer("std", torch.ones(n_features))  # [F]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, features: Tensor) -> FeatureScaler:
        """Set mean and std from training features [N, F] (population std); returns self."""
        if features.dim() != 2 or features.shape[1] != self.mean.numel() or features.shape[0] == 0:
            raise ValueError(f"expected features [N > 0, {self.mean.numel()}], got {tuple(features.shape)}")
        x = features.float()
        if not torch.isfinite(x).all():
            raise ValueError("planner features contain NaN or inf; fix the extraction before fitting the scaler")
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(torch.where(std > self.eps, std, torch.ones_like(std)))
        self.fitted.fill_(True)
        logger.debug("feature scaler fitted on %d rows", x.shape[0])
        return self

    def forward(self, features: Tensor) -> Tensor:
        """[N, F] -> [N, F] standardised."""
        return (features.float() - self.mean) / self.std
