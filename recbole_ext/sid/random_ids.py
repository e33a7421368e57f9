"""Random tokenizer (the paper's ablation): unique random codes of the RQ-VAE's shape."""

from __future__ import annotations

import math

import numpy as np
import torch


def random_codes(n_items: int, codebook_sizes: tuple[int, ...] | list[int], seed: int = 0) -> torch.Tensor:
    """Codes [n_items, len(codebook_sizes)], rows distinct, drawn uniformly without replacement."""
    sizes = [int(s) for s in codebook_sizes]
    total = math.prod(sizes)
    if n_items > total:
        raise ValueError(f"{n_items} items do not fit in {total} distinct codes {sizes}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=n_items, replace=False)  # [N] mixed-radix numbers
    codes = np.empty((n_items, len(sizes)), dtype=np.int64)
    for level in range(len(sizes) - 1, -1, -1):
        codes[:, level] = flat % sizes[level]
        flat = flat // sizes[level]
    return torch.from_numpy(codes)
