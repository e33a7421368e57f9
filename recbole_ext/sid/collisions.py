"""Collision code: append one level that makes every item's semantic ID unique."""

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
