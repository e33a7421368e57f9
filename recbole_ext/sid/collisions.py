"""Unique semantic IDs from colliding codes, two ways (``sid_collision``):

* ``append`` (:func:`add_collision_code`): one more level, 0..k-1 among the items sharing an ID, in
  input order (TIGER's);
* ``reassign`` (:func:`reassign_last_level`): zero-collision reassignment of the last level, no
  extra level: within each group of items sharing the earlier levels' codes, the last-level codes
  are a minimum-cost assignment of distinct codewords (scipy's ``linear_sum_assignment``; cost =
  squared distance of the item's last residual to each codeword), so a colliding item moves to the
  nearest free codeword the group can afford (the ``*_zcr`` indexes of shared/datasets are built so).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


class CollisionError(ValueError):
    """More items share one ID prefix than the collision level has codes."""


def add_collision_code(
    codes: torch.Tensor | np.ndarray, codebook_size: int
) -> tuple[torch.Tensor, dict[str, float | int]]:
    """Codes [N, m'] -> codes [N, m'+1] whose last column is 0..k-1 among items sharing a row.

    Items keep their input order inside a group (the first gets 0). Raises CollisionError when a
    group has more than ``codebook_size`` items. Returns (codes, stats) with stats:
    ``n_items``, ``n_unique_prefixes``, ``n_colliding_items`` (items in a group of size > 1),
    ``collision_rate`` (= 1 - n_unique_prefixes / n_items, the share of items given a code > 0),
    ``max_group_size``.
    """
    c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64)
    if c.ndim != 2:
        raise ValueError(f"codes must be [N, m], got shape {c.shape}")
    n = c.shape[0]
    _, inv, counts = np.unique(c, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")  # items grouped, input order kept inside a group
    group_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start[inv[order]]
    max_group = int(counts.max()) if n else 0
    if max_group > codebook_size:
        worst = int(np.argmax(counts))
        raise CollisionError(
            f"{max_group} items share the ID prefix {c[order[group_start[worst]]].tolist()} but the "
            f"collision level has only {codebook_size} codes: raise its codebook size or improve the "
            "tokenizer (codebook usage)"
        )
    stats = {
        "n_items": int(n),
        "n_unique_prefixes": int(len(counts)),
        "n_colliding_items": int(counts[counts > 1].sum()),
        "collision_rate": float(1.0 - len(counts) / n) if n else 0.0,
        "max_group_size": max_group,
    }
    logger.info("collision code: %s", stats)
    return torch.from_numpy(np.concatenate([c, rank[:, None]], axis=1)), stats


def reassign_last_level(
    codes: torch.Tensor | np.ndarray, cost: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, dict[str, float | int]]:
    """Codes [N, L] -> codes [N, L] with unique rows: the last column re-chosen per prefix group.

    ``cost`` [N, K]: the cost of giving item i the last-level code k (K = the last level's codebook
    size). Groups (items sharing ``codes[:, :-1]``) whose last codes are already distinct are kept;
    in every other group the last codes become the assignment of distinct codes with the least total
    cost (items of the group may move to free a cheaper solution). Raises CollisionError when a group
    has more items than K. Stats: ``n_items``, ``n_colliding_items`` and ``max_group_size`` (of the
    codes given, as :func:`add_collision_code`), ``collision_rate`` (of the codes given),
    ``n_groups_reassigned``, ``n_reassigned_items`` (last code changed), ``added_cost`` (total cost
    after minus before, over the reassigned groups).
    """
    from scipy.optimize import linear_sum_assignment  # lazy: only this option needs scipy

    c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64)
    w = np.asarray(cost.cpu() if isinstance(cost, torch.Tensor) else cost, dtype=np.float64)
    if c.ndim != 2 or w.ndim != 2 or w.shape[0] != c.shape[0]:
        raise ValueError(f"codes [N, L] and cost [N, K] must share N, got {c.shape} and {w.shape}")
    n, k = c.shape[0], w.shape[1]
    if n and int(c[:, -1].max()) >= k:
        raise ValueError(f"last-level code {int(c[:, -1].max())} out of range for a cost of {k} codes")
    _, full_counts = np.unique(c, axis=0, return_counts=True)
    _, group_of = np.unique(c[:, :-1], axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    out = c.copy()
    n_groups = n_moved = 0
    added = 0.0
    for g in np.unique(group_of):
        members = np.flatnonzero(group_of == g)
        last = c[members, -1]
        if len(np.unique(last)) == len(members):
            continue  # no collision in this group
        if len(members) > k:
            raise CollisionError(
                f"{len(members)} items share the ID prefix {c[members[0], :-1].tolist()} but the last level has "
                f"only {k} codes: zero-collision reassignment is impossible (raise the codebook size or the levels)"
            )
        rows, cols = linear_sum_assignment(w[members])
        new_last = np.empty(len(members), dtype=np.int64)
        new_last[rows] = cols
        out[members, -1] = new_last
        n_groups += 1
        n_moved += int((new_last != last).sum())
        added += float(w[members, new_last].sum() - w[members, last].sum())
    stats = {
        "n_items": int(n),
        "n_colliding_items": int(full_counts[full_counts > 1].sum()),
        "collision_rate": float(1.0 - len(full_counts) / n) if n else 0.0,
        "max_group_size": int(full_counts.max()) if n else 0,
        "n_groups_reassigned": n_groups,
        "n_reassigned_items": n_moved,
        "added_cost": added,
    }
    logger.info("zero-collision reassignment: %s", stats)
    return torch.from_numpy(out), stats


def resolve_collisions(
    codes: torch.Tensor, mode: str | None, collision_codebook_size: int, last_cost: np.ndarray | None
) -> tuple[torch.Tensor, int | None, dict]:
    """Unique IDs from a tokenizer's codes [N, L] by ``mode`` (``append`` / None or ``reassign``):
    (codes, size of the appended level or None, stats)."""
    mode = mode or "append"
    if mode == "append":
        out, stats = add_collision_code(codes, collision_codebook_size)
        return out, collision_codebook_size, stats
    if mode == "reassign":
        if last_cost is None:
            if len(np.unique(np.asarray(codes), axis=0)) != len(codes):
                raise ValueError("sid_collision=reassign needs a tokenizer with codeword distances (rqvae, rkmeans)")
            last_cost = np.zeros((len(codes), int(np.asarray(codes)[:, -1].max()) + 1))
        out, stats = reassign_last_level(codes, last_cost)
        return out, None, {"mode": "reassign", **stats}
    raise ValueError(f"sid_collision={mode!r}: choose append or reassign")
