"""Beams -> RecBole's full-sort score matrix [B, n_items]."""

from __future__ import annotations

import torch


def beams_to_scores(
    items: torch.Tensor,  # [B, K] item id per beam, best first; -1 = invalid / dead
    n_items: int,
    fallback: torch.Tensor | None = None,  # [B, n_items] scores ranking items after the beams
    min_items: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [B, n_items] and the number of invalid beams (a 0-d tensor, no host sync).

    The distinct valid items in beam order get scores K, K-1, ... (finite, strictly decreasing,
    so any top-k follows beam order); repeated items keep their best beam; every other item gets
    -inf. RecBole's metrics use torch.topk, which fills slots beyond the finite scores with
    arbitrary low-id items: to rank at least ``min_items`` items, pass ``fallback`` scores (e.g.
    popularity); the best fallback items not already ranked fill the missing slots, below all beam
    items. Without a fallback, users short of ``min_items`` finite scores are simply left short.
    """
    b, k = items.shape
    valid = items >= 0  # [B, K]
    same = items[:, :, None] == items[:, None, :]  # [B, K, K]
    earlier = torch.ones(k, k, dtype=torch.bool, device=items.device).tril(-1)  # [K, K] j < i
    dup = (same & earlier).any(dim=2)  # [B, K] item seen in a better beam
    keep = valid & ~dup
    rank = keep.long().cumsum(dim=1) - 1  # [B, K] rank among kept beams
    score = (k - rank).float()
    # non-kept beams write into an extra dump column n_items, dropped afterwards
    col = torch.where(keep, items, torch.full_like(items, n_items))
    out = torch.full((b, n_items + 1), float("-inf"), device=items.device)
    out = out.scatter(1, col, score)[:, :n_items].contiguous()
    if fallback is not None and min_items > 0:
        n_kept = keep.sum(dim=1, keepdim=True)  # [B, 1]
        need = min(min_items, n_items)
        fb = fallback.float().masked_fill(torch.isfinite(out), float("-inf"))  # exclude beam items
        fb_val, fb_idx = fb.topk(need, dim=1)  # [B, need]
        slot = torch.arange(need, device=items.device)[None, :]  # [1, need]
        use = (slot < need - n_kept) & torch.isfinite(fb_val)
        fb_score = -slot.float() - 1.0  # below every beam score (>= 1)
        fb_score = fb_score.expand(b, need)
        cur = out.gather(1, fb_idx)
        out.scatter_(1, fb_idx, torch.where(use, fb_score, cur))
    n_invalid = (~valid).sum()
    return out, n_invalid


def path_sum_scores(
    items: torch.Tensor,  # [B, K] item id per beam; -1 = invalid / dead
    beam_scores: torch.Tensor,  # [B, K] log-probability of each beam (reasoning path + item)
    n_items: int,
) -> torch.Tensor:
    """Scores [B, n_items]: each item's log of the summed probability of its beams (logsumexp over
    the reasoning paths that end in it), -inf for items no valid beam reached."""
    b, _ = items.shape
    valid = (items >= 0) & torch.isfinite(beam_scores)
    col = torch.where(valid, items, torch.full_like(items, n_items))  # invalid beams -> dump column
    s = torch.where(valid, beam_scores.float(), torch.zeros_like(beam_scores, dtype=torch.float))
    top = torch.full((b, n_items + 1), float("-inf"), device=items.device).scatter_reduce(
        1, col, torch.where(valid, s, torch.full_like(s, float("-inf"))), reduce="amax")  # per-item max
    shift = top.gather(1, col)  # [B, K]
    total = torch.zeros(b, n_items + 1, device=items.device).scatter_add(1, col, torch.where(valid, (s - shift).exp(), 0.0))
    out = top + total.log()
    return out[:, :n_items].contiguous()
