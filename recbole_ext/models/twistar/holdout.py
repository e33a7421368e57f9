"""TwiSTAR's held-out training rows: a fixed share of the training rows, never used to train the fast (or
slow) model, from which the ranker's and the planner's labels come (never from validation or test
targets). A row is picked by a hash of its content (user id, visible history, target), so the same rows
are held out for every seed and batch order, row by row even where RecBole caps the history length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["holdout_rows", "row_hash"]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 values (elementwise)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_hash(user_ids: Tensor, history: Tensor, target: Tensor) -> np.ndarray:
    """[R] uint64: a hash of each training row's content (user id, its visible history [R, L], target
    item). Rows differ in content even where RecBole caps the history length (every row past
    ``MAX_ITEM_LIST_LENGTH`` has the same length); rows of equal content are the same sample."""
    x = _mix(user_ids.detach().cpu().numpy().astype(np.uint64))
    with np.errstate(over="ignore"):
        for column in history.detach().cpu().numpy().astype(np.uint64).T:  # [R] per history position
            x = _mix(x ^ column)
        return _mix(x ^ target.detach().cpu().numpy().astype(np.uint64))


def holdout_rows(user_ids: Tensor, history: Tensor, target: Tensor, ratio: float) -> Tensor:
    """[R] bool: the training rows held out from the fast model, by :func:`row_hash` (no RNG: the same
    rows for every seed and batch order; about ``ratio`` of them)."""
    share = (row_hash(user_ids, history, target) >> np.uint64(11)).astype(np.float64) / float(2**53)  # [0, 1)
    return torch.from_numpy(share < ratio).to(user_ids.device)
