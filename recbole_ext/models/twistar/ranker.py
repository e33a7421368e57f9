"""TwiSTAR's Lightweight Candidate Ranker: a DIN-style target-attention model that re-scores the
fast retriever's top-50 down to a top-10.

DIN (Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate Prediction"): for each
candidate c, an activation unit (an MLP over ``[h, c, h - c, h * c]``) gives every history item h a
weight, and the user vector is the weighted *sum* of the history embeddings; the weights are not
normalised by a softmax, so the vector's size keeps how much of the history is relevant. The
official TwiSTAR ranker (``train/scripts/train_din_ranking.py``) softmax-normalises them and trains
point-wise with BCE; here ``attention_norm`` switches between the two ("none" = DIN, default) and
the loss is listwise (softmax cross-entropy of the target against the other candidates of the same
fast list), which matches how the ranker is used: to order one list.

Inputs per candidate: the user vector over the last 20 history items, the candidate's embedding (the
ranker's own item table) and the fast model's score of the candidate, into an MLP -> one score.
Training lists come from the trained fast model's own beams (:func:`ranker_batch`): the target is
the positive and the other beams its negatives; a target the fast model missed may be injected in
training only, with its fast score computed the same way as the other candidates'.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_ext.models.twistar.features import recent_mask

logger = logging.getLogger(__name__)

__all__ = ["DINRanker", "RankerBatch", "listwise_loss", "ranker_batch", "rerank"]

#: (rows [M], target ids [M]) -> the fast model's score of each target [M], for the missed rows.
TargetScorer = Callable[[Tensor, Tensor], Tensor]


def _mlp(sizes: Sequence[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers over ``sizes`` with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _compact_recent(history: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The last ``n`` real items of each row, in order, left-aligned: ([B, n'] ids, [B, n'] mask), n' = min(n, L)."""
    keep = recent_mask(history, n)  # [B, L]
    length = history.shape[1]
    pos = torch.arange(length, device=history.device).expand_as(history)  # [B, L]
    order = torch.where(keep, pos, pos + length).argsort(dim=1)[:, : min(n, length)]  # [B, n'] kept first
    mask = keep.gather(1, order)  # [B, n']
    return history.gather(1, order) * mask, mask


class DINRanker(nn.Module):
    """DIN-style re-ranker: ``forward(history [B, L], candidates [B, C], fast_scores [B, C]) -> [B, C]``.

    Candidates < 0 (dead beams) score -inf. History ids 0 are padding (either side) and never change
    a score; only the last ``max_history`` real items are attended.
    """

    def __init__(self, n_items: int, embedding_size: int = 32, attention_hidden: int = 36,
                 mlp_hidden: Sequence[int] = (64, 16), max_history: int = 20, attention_norm: str = "none"):
        super().__init__()
        if attention_norm not in ("none", "softmax"):
            raise ValueError(f"attention_norm must be 'none' (DIN) or 'softmax' (official TwiSTAR), got {attention_norm!r}")
        self.max_history = max_history
        self.attention_norm = attention_norm
        d = embedding_size
        self.item_embedding = nn.Embedding(n_items, d, padding_idx=0)
        self.activation_unit = _mlp([4 * d, attention_hidden, 1], nn.PReLU)  # [h, c, h-c, h*c] -> weight
        self.mlp = _mlp([2 * d + 1, *mlp_hidden, 1], nn.ReLU)  # [user, candidate, fast score] -> score
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def attention_weights(self, hist_emb: Tensor, hist_mask: Tensor, cand_emb: Tensor) -> Tensor:
        """Per-candidate weight of each history item: [B, n, d], [B, n], [B, C, d] -> [B, C, n] (0 on padding)."""
        c, n = cand_emb.shape[1], hist_emb.shape[1]
        h = hist_emb[:, None].expand(-1, c, -1, -1)  # [B, C, n, d]
        q = cand_emb[:, :, None].expand(-1, -1, n, -1)  # [B, C, n, d]
        w = self.activation_unit(torch.cat([h, q, h - q, h * q], dim=-1)).squeeze(-1)  # [B, C, n]
        mask = hist_mask[:, None, :]  # [B, 1, n]
        if self.attention_norm == "softmax":
            w = torch.softmax(w.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)  # empty history -> 0
        return w * mask

    def forward(self, history: Tensor, candidates: Tensor, fast_scores: Tensor) -> Tensor:
        """history [B, L] (0 = pad), candidates [B, C] (-1 = dead), fast_scores [B, C] -> scores [B, C]."""
        if candidates.shape != fast_scores.shape or candidates.shape[0] != history.shape[0]:
            raise ValueError(f"expected history [B, L], candidates [B, C], fast_scores [B, C]; got "
                             f"{tuple(history.shape)}, {tuple(candidates.shape)}, {tuple(fast_scores.shape)}")
        hist, hist_mask = _compact_recent(history, self.max_history)  # [B, n], [B, n]
        hist_emb = self.item_embedding(hist)  # [B, n, d]
        valid = candidates >= 0  # [B, C]
        cand_emb = self.item_embedding(candidates.clamp(min=0))  # [B, C, d]
        w = self.attention_weights(hist_emb, hist_mask, cand_emb)  # [B, C, n]
        user = torch.einsum("bcn,bnd->bcd", w, hist_emb)  # [B, C, d]
        score_in = fast_scores.float()
        score_in = torch.where(valid & torch.isfinite(score_in), score_in, torch.zeros_like(score_in))  # [B, C]
        x = torch.cat([user, cand_emb, score_in[..., None]], dim=-1)  # [B, C, 2d + 1]
        out = self.mlp(x).squeeze(-1)  # [B, C]
        return out.masked_fill(~valid, float("-inf"))

    @torch.no_grad()
    def rank(self, history: Tensor, candidates: Tensor, fast_scores: Tensor, k: int = 10) -> Tensor:
        """Re-rank the fast list: [B, L], [B, C], [B, C] -> top-k items [B, k] (best first, -1 padding)."""
        return rerank(candidates, self(history, candidates, fast_scores), k)


def rerank(candidates: Tensor, scores: Tensor, k: int = 10) -> Tensor:
    """The ``k`` candidates [B, C] with the highest ranker ``scores`` [B, C], best first -> [B, k].

    Ties keep the fast order (stable sort); dead candidates (-1 or score -inf) go last, as -1.
    """
    if candidates.shape != scores.shape:
        raise ValueError(f"candidates {tuple(candidates.shape)} and scores {tuple(scores.shape)} differ")
    valid = (candidates >= 0) & ~torch.isneginf(scores) & ~torch.isnan(scores)  # [B, C]
    key = torch.where(valid, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float))
    order = key.argsort(dim=1, descending=True, stable=True)[:, :k]  # [B, k']
    top = torch.where(valid.gather(1, order), candidates.gather(1, order), torch.full_like(order, -1))
    if top.shape[1] < k:  # fewer candidates than k
        top = torch.cat([top, top.new_full((top.shape[0], k - top.shape[1]), -1)], dim=1)
    return top  # [B, k]


class RankerBatch(NamedTuple):
    """One batch of ranker training lists."""

    candidates: Tensor  # [B, C] item ids (-1 dead), the target injected where asked
    scores: Tensor  # [B, C] fast-model scores of the candidates
    label: Tensor  # [B] the target's position in its list, -1 where dropped
    keep: Tensor  # [B] bool, rows that hold their target


def ranker_batch(target: Tensor, fast_items: Tensor, fast_scores: Tensor, inject_target: bool,
                 target_scores: Tensor | TargetScorer | None = None) -> RankerBatch:
    """Listwise training lists from the fast model's own beams; the target is the one positive.

    target: [B]; fast_items, fast_scores: [B, C] the fast beams (best first, -1 / -inf dead).
    Where the target is among the candidates, ``label`` is its first position. Where the fast model
    missed it: with ``inject_target`` (training only) the target replaces the last (lowest, or dead)
    candidate with the fast model's score of the target, taken from ``target_scores`` (a tensor [B],
    read at those rows, or a callable ``(rows [M], targets [M]) -> [M]`` called only for them),
    which must be computed the same way as the beams' scores (e.g. the summed log-probs of the
    target's SID under the same model and normalisation); without it the sample is dropped
    (``keep`` False, ``label`` -1). The inputs are not modified.
    """
    if fast_items.shape != fast_scores.shape or fast_items.dim() != 2 or target.shape != fast_items.shape[:1]:
        raise ValueError(f"expected target [B], fast_items [B, C], fast_scores [B, C]; got {tuple(target.shape)}, "
                         f"{tuple(fast_items.shape)}, {tuple(fast_scores.shape)}")
    candidates, scores = fast_items.clone(), fast_scores.clone()
    hit = (candidates == target[:, None]) & (candidates >= 0)  # [B, C]
    found = hit.any(dim=1)  # [B]
    label = torch.where(found, hit.long().argmax(dim=1), torch.full_like(target, -1, dtype=torch.long))
    keep = found.clone()
    missed = (~found).nonzero(as_tuple=True)[0]  # [M]
    if inject_target and missed.numel():
        if target_scores is None:
            raise ValueError("inject_target needs target_scores: the fast model's score of each missed target")
        if callable(target_scores):
            injected = target_scores(missed, target[missed])  # [M]
        else:
            injected = target_scores.to(scores.device)[missed]  # [M]
        last = candidates.shape[1] - 1
        candidates[missed, last] = target[missed].to(candidates.dtype)
        scores[missed, last] = injected.to(scores.dtype)
        label[missed] = last
        keep[missed] = True
    if logger.isEnabledFor(logging.DEBUG):  # avoid a device sync per batch otherwise
        logger.debug("ranker batch: %d of %d targets in the fast list, %d injected", int(found.sum()), len(target),
                     int(keep.sum() - found.sum()))
    return RankerBatch(candidates, scores, label, keep)


def listwise_loss(logits: Tensor, label: Tensor, keep: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy of the target over its candidate list, mean over kept rows.

    logits: [B, C] ranker scores (-inf for dead candidates); label: [B] target position; keep: [B]
    bool (rows without a target are left out). A batch with no kept row gives a zero that still
    carries the graph.
    """
    if keep is not None:
        logits, label = logits[keep], label[keep]
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), label.long())
