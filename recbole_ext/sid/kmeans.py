"""faiss k-means, shared by the RQ-VAE's codebook initialisation and the residual k-means tokenizer."""

from __future__ import annotations

import numpy as np


def kmeans(data: np.ndarray, k: int, niter: int, seed: int, threads: int | None = None, nredo: int = 1) -> np.ndarray:
    """faiss k-means centroids [k, d] of ``data`` [n, d]; with fewer points than k, sampled points
    plus tiny noise. ``threads``: faiss's OpenMP threads (default: torch's intra-op threads);
    ``nredo``: runs from different initialisations, the one with the lowest objective kept."""
    import faiss  # lazy: only training needs it

    data = np.ascontiguousarray(data, dtype=np.float32)
    n, d = data.shape
    if n < k:
        rng = np.random.default_rng(seed)
        pick = data[rng.choice(n, size=k, replace=True)]
        scale = 1e-3 * (float(data.std()) + 1e-8)
        return (pick + scale * rng.standard_normal(pick.shape)).astype(np.float32)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, nredo=int(nredo), verbose=False, min_points_per_centroid=1)
    km.train(data)
    return km.centroids.copy()
