"""Residual k-means item tokenizer (as in GRID, OpenOneRec and MiniOneRec): faiss k-means per level.

Level 0 clusters the item embeddings x into K centroids C_0; each later level clusters what the
earlier levels left over::

    r_0 = x,   c_l = argmin_k ||r_l - C_l[k]||^2,   r_{l+1} = r_l - C_l[c_l]

No network is trained, so the IDs depend only on the embeddings, K, the levels, the k-means
iterations and the seed. ``standardize`` z-scores every input dimension first (as the RQ-VAE does);
reconstruction is measured in the units the levels see (standardised when it is on).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from recbole_ext.sid.kmeans import kmeans

logger = logging.getLogger(__name__)


@dataclass
class RKMeansConfig:
    """Residual k-means settings (``rkmeans:`` in the YAML overrides any of them)."""

    n_levels: int = 3  # residual levels (before any collision code)
    codebook_size: int = 256  # centroids per level
    niter: int = 50  # k-means iterations per level
    nredo: int = 1  # k-means runs per level (different initialisations; the lowest objective is kept)
    standardize: bool = False  # z-score each input dimension before clustering
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> RKMeansConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown residual k-means options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class RKMeansResult:
    codes: torch.Tensor  # [N, n_levels]
    centroids: list[np.ndarray]  # n_levels x [K, D]
    stats: dict = field(default_factory=dict)
    last_cost: np.ndarray | None = None  # [N, K] squared distance of the last residual to each last-level centroid


def _nearest(data: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid [N] and all squared distances [N, K] (float64)."""
    d = data.astype(np.float64)
    c = centroids.astype(np.float64)
    dist = (d * d).sum(1)[:, None] - 2.0 * d @ c.T + (c * c).sum(1)[None, :]
    dist = np.maximum(dist, 0.0)
    return dist.argmin(1), dist


def train_rkmeans(embeddings: np.ndarray | torch.Tensor, cfg: RKMeansConfig | dict | None = None) -> RKMeansResult:
    """Residual k-means over embeddings [N, D] -> codes [N, n_levels], centroids, stats.

    stats: ``codebook_usage`` (per level), ``collision_rate`` (1 - distinct IDs / N),
    ``n_distinct_ids``, ``recon_mse`` (mean squared error of x against the sum of its centroids, per
    element), ``recon_rel`` (that error over the data's total variance: 1 - explained variance) and the config.
    """
    cfg = RKMeansConfig.from_dict(cfg) if isinstance(cfg, dict) else (cfg or RKMeansConfig())
    x = np.asarray(embeddings.cpu() if isinstance(embeddings, torch.Tensor) else embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] matrix, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    if cfg.standardize:
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    residual = x.copy()
    codes, centroids, dist = [], [], None
    for level in range(cfg.n_levels):
        cent = kmeans(residual, cfg.codebook_size, cfg.niter, cfg.seed + level, nredo=cfg.nredo)
        idx, dist = _nearest(residual, cent)
        residual = residual - cent[idx]
        codes.append(idx)
        centroids.append(cent)
    out = torch.from_numpy(np.stack(codes, axis=1).astype(np.int64))  # [N, L]
    n = x.shape[0]
    n_distinct = len(torch.unique(out, dim=0))
    total_var = float(((x - x.mean(0)) ** 2).sum())
    sq = float((residual.astype(np.float64) ** 2).sum())
    stats = {
        "codebook_usage": [len(np.unique(c)) / cfg.codebook_size for c in codes],
        "collision_rate": 1.0 - n_distinct / n,
        "n_distinct_ids": n_distinct,
        "recon_mse": sq / x.size,
        "recon_rel": sq / total_var if total_var > 0 else 0.0,
        "config": asdict(cfg),
    }
    logger.info("residual k-means: usage %s, collision rate %.4f, recon mse %.5f (relative %.4f)",
                [round(u, 3) for u in stats["codebook_usage"]], stats["collision_rate"], stats["recon_mse"],
                stats["recon_rel"])
    return RKMeansResult(out, centroids, stats, dist)
