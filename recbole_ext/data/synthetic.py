"""Seeded synthetic catalogues: users, items, interaction sequences and semantic IDs, at any size.

Used to measure how costs grow with the catalogue (``benchmarks/speed/catalogue_scaling.py``) and
to feed RecBole runs of a chosen size without downloading anything. Everything is vectorised numpy:
a million items and a million interactions take about a second (plus the IDs' own cost).

* **Sequence lengths**: ``min_len`` plus a lognormal (default) or geometric excess whose mean makes
  the lengths' mean ``mean_len``; the defaults (min 5, mean 8.9, lognormal sigma 1) give the
  heavy-tailed shape of an Amazon 5-core category (Beauty: 198,502 actions over 22,363 users, mean
  8.9, median about 6). Lengths are capped at ``max_len``.
* **Popularity**: item i is drawn with probability proportional to ``rank_i ** -zipf_exponent``,
  ranks a seeded permutation of the items (so popularity is not tied to the item index). Items of
  a sequence are drawn independently (repeats are possible, there is no sequential signal): the
  catalogue has the shape of real data, not its learnable structure.
* **Timestamps**: per user a start time, then exponential gaps, so every sequence is in time order.
* **Semantic IDs** (``sid``): ``random`` draws every level's code uniformly (as a random tokenizer
  would, so IDs may collide), ``rkmeans`` runs the project's residual k-means
  (:mod:`recbole_ext.sid.rkmeans`) over random item embeddings; either way colliding items get one
  more level, 0..k-1 in item order (:func:`recbole_ext.sid.collisions.add_collision_code`, TIGER's
  ``append``), so every item's ID is unique. ``none`` skips them.

Items are numbered 0..n_items-1 (row i of ``codes`` is item i) and users 0..n_users-1; a model
that reserves id 0 for padding (RecBole) uses ``item + 1``. :func:`write_atomic_files` writes the
interactions as RecBole atomic files (``user_id:token item_id:token timestamp:float``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: header of the ``.inter`` file (the same columns as the prepared real datasets).
INTER_COLUMNS = ("user_id:token", "item_id:token", "timestamp:float")
SID_MODES = ("random", "rkmeans", "none")
LENGTH_DISTS = ("lognormal", "geometric")


@dataclass
class CatalogueConfig:
    """Sizes and shape of a synthetic catalogue (every field has a default; ``seed`` fixes all draws)."""

    n_users: int = 10_000
    n_items: int = 10_000
    min_len: int = 5  # shortest sequence (a 5-core keeps users with >= 5 actions)
    mean_len: float = 8.9  # target mean sequence length (Amazon 5-core categories: 8-10)
    max_len: int = 500  # longest sequence (the tail is clipped here)
    length_dist: str = "lognormal"  # lognormal | geometric: the distribution of length - min_len
    length_sigma: float = 1.0  # lognormal shape (larger: heavier tail, smaller median)
    zipf_exponent: float = 1.0  # item popularity ~ rank ** -zipf_exponent (0 = uniform)
    sid: str = "random"  # random | rkmeans | none
    sid_levels: int = 3  # tokenizer levels before the collision level
    codebook_size: int = 256  # codes per tokenizer level
    collision_codebook_size: int | None = None  # size of the appended level; None = codebook_size
    embedding_dim: int = 64  # item embedding size for sid=rkmeans
    rkmeans_niter: int = 20  # k-means iterations per level for sid=rkmeans
    start_time: float = 1_500_000_000.0  # unix seconds of the earliest possible first action
    time_span: float = 3.0e7  # users' first actions are spread over this many seconds
    mean_gap: float = 86_400.0  # mean seconds between a user's consecutive actions
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError(f"n_users and n_items must be >= 1, got {self.n_users} and {self.n_items}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")
        if not self.min_len <= self.mean_len <= self.max_len:
            raise ValueError(f"mean_len={self.mean_len} must lie in [min_len, max_len] = [{self.min_len}, "
                             f"{self.max_len}]")
        if self.length_dist not in LENGTH_DISTS:
            raise ValueError(f"length_dist={self.length_dist!r}: choose one of {LENGTH_DISTS}")
        if self.sid not in SID_MODES:
            raise ValueError(f"sid={self.sid!r}: choose one of {SID_MODES}")
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")


@dataclass
class SyntheticCatalogue:
    """Interactions sorted by user, then time; ``offsets`` [n_users + 1] delimit each user's rows."""

    config: CatalogueConfig
    users: np.ndarray  # [n_inter] int64, 0..n_users-1, non-decreasing
    items: np.ndarray  # [n_inter] int64, 0..n_items-1
    timestamps: np.ndarray  # [n_inter] float64 whole seconds, non-decreasing within a user
    lengths: np.ndarray  # [n_users] int64, >= min_len
    offsets: np.ndarray  # [n_users + 1] int64, user u's rows are offsets[u]:offsets[u + 1]
    popularity: np.ndarray  # [n_items] float64, the probability each item was drawn with (sums to 1)
    codes: np.ndarray | None = None  # [n_items, sid_levels + 1] int64, unique rows; None for sid=none
    codebook_sizes: tuple[int, ...] | None = None  # per level of ``codes``
    stats: dict = field(default_factory=dict)  # generation times and the IDs' collision statistics

    @property
    def n_interactions(self) -> int:
        return int(self.items.shape[0])

    def sequence(self, user: int) -> np.ndarray:
        """Items of one user in time order [length]."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def item_counts(self) -> np.ndarray:
        """Interactions per item [n_items]."""
        return np.bincount(self.items, minlength=self.config.n_items)

    def windows(self, n: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random (history, next item) samples of full ``length``, cut from the interaction log.

        Returns histories [n, length] and targets [n] as item *indices* (0-based). Windows may cross
        user boundaries: they serve cost measurements that want fixed-length inputs with the
        catalogue's popularity, not training data with a signal.
        """
        if self.n_interactions <= length:
            raise ValueError(f"{self.n_interactions} interactions cannot give windows of {length} + 1 items")
        rng = np.random.default_rng(seed)
        start = rng.integers(0, self.n_interactions - length, size=n)  # [n]
        rows = self.items[start[:, None] + np.arange(length + 1)[None, :]]  # [n, length + 1]
        return rows[:, :length], rows[:, length]


def sequence_lengths(cfg: CatalogueConfig, rng: np.random.Generator) -> np.ndarray:
    """Lengths [n_users] >= min_len with mean close to ``mean_len`` (before the cap at ``max_len``)."""
    excess = cfg.mean_len - cfg.min_len  # wanted mean of length - min_len
    if excess <= 0:
        return np.full(cfg.n_users, cfg.min_len, dtype=np.int64)
    if cfg.length_dist == "geometric":
        # numpy's geometric counts trials (>= 1): mean 1/p, so the excess k - 1 has mean 1/p - 1
        extra = rng.geometric(1.0 / (excess + 1.0), size=cfg.n_users) - 1
    else:
        # floor(X), X lognormal with E[X] = exp(mu + sigma^2 / 2); flooring takes about 0.5 off the mean
        mu = math.log(excess + 0.5) - cfg.length_sigma**2 / 2
        extra = np.floor(rng.lognormal(mu, cfg.length_sigma, size=cfg.n_users))
    return np.minimum(cfg.min_len + extra.astype(np.int64), cfg.max_len)


def zipf_popularity(n_items: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities [n_items] ~ rank ** -exponent, ranks a random permutation of 1..n_items."""
    ranks = rng.permutation(n_items).astype(np.float64) + 1.0
    weights = ranks**-exponent
    return weights / weights.sum()


def item_embeddings(n_items: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random item embeddings [n_items, dim] (float32, standard normal): the input of a tokenizer
    whose cost, not whose IDs' meaning, is being measured."""
    return np.random.default_rng(seed).standard_normal((n_items, dim), dtype=np.float32)


def random_sid_codes(n_items: int, levels: int, codebook_size: int, seed: int = 0) -> np.ndarray:
    """Codes [n_items, levels], every level uniform in 0..codebook_size-1 (rows may collide)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, codebook_size, size=(n_items, levels), dtype=np.int64)


def semantic_ids(cfg: CatalogueConfig) -> tuple[np.ndarray, tuple[int, ...], dict]:
    """Unique IDs [n_items, sid_levels + 1] by ``cfg.sid``, their codebook sizes and statistics
    (``sid_s``: seconds, ``collision_rate``, ``max_group_size``, ... of the collision code)."""
    from recbole_ext.sid.collisions import add_collision_code  # lazy: imports torch

    start = time.perf_counter()
    if cfg.sid == "random":
        base = random_sid_codes(cfg.n_items, cfg.sid_levels, cfg.codebook_size, cfg.seed + 1)
    elif cfg.sid == "rkmeans":
        from recbole_ext.sid.rkmeans import RKMeansConfig, train_rkmeans  # lazy: faiss

        emb = item_embeddings(cfg.n_items, cfg.embedding_dim, cfg.seed + 2)
        km = RKMeansConfig(n_levels=cfg.sid_levels, codebook_size=cfg.codebook_size, niter=cfg.rkmeans_niter,
                           seed=cfg.seed)
        base = train_rkmeans(emb, km).codes.numpy()
    else:
        raise ValueError(f"sid={cfg.sid!r} makes no IDs")
    collision_size = cfg.collision_codebook_size or cfg.codebook_size
    codes, stats = add_collision_code(base, collision_size)
    sizes = (cfg.codebook_size,) * cfg.sid_levels + (collision_size,)
    return codes.numpy(), sizes, {**stats, "sid_s": time.perf_counter() - start}


def generate_catalogue(cfg: CatalogueConfig | None = None, **overrides) -> SyntheticCatalogue:
    """A synthetic catalogue from ``cfg`` (default :class:`CatalogueConfig`) with ``overrides`` applied."""
    cfg = cfg or CatalogueConfig()
    if overrides:
        cfg = CatalogueConfig(**{**asdict(cfg), **overrides})
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    lengths = sequence_lengths(cfg, rng)  # [U]
    offsets = np.zeros(cfg.n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n_inter = int(offsets[-1])
    users = np.repeat(np.arange(cfg.n_users, dtype=np.int64), lengths)  # [I]
    popularity = zipf_popularity(cfg.n_items, cfg.zipf_exponent, rng)  # [n_items]
    # inverse-CDF sampling (what rng.choice(p=...) does, without its O(n_items) checks per call)
    cdf = np.cumsum(popularity)
    items = np.searchsorted(cdf, rng.random(n_inter) * cdf[-1], side="right")  # [I]
    items = np.minimum(items, cfg.n_items - 1).astype(np.int64)
    gaps = rng.exponential(cfg.mean_gap, size=n_inter)  # [I]
    clock = np.cumsum(gaps)
    before = np.concatenate([[0.0], clock])[offsets[:-1]]  # [U] clock just before each user's first row
    first = cfg.start_time + rng.random(cfg.n_users) * cfg.time_span  # [U]
    timestamps = np.floor(first[users] + clock - before[users])  # [I] whole seconds, increasing per user
    stats = {"n_interactions": n_inter, "mean_len": float(lengths.mean()), "median_len": float(np.median(lengths)),
             "max_len": int(lengths.max()), "interactions_s": time.perf_counter() - start}
    cat = SyntheticCatalogue(cfg, users, items, timestamps, lengths, offsets, popularity, stats=stats)
    if cfg.sid != "none":
        cat.codes, cat.codebook_sizes, sid_stats = semantic_ids(cfg)
        cat.stats.update(sid_stats)
    logger.info("synthetic catalogue: %d users, %d items, %d interactions (mean length %.2f), ids %s: %s",
                cfg.n_users, cfg.n_items, n_inter, stats["mean_len"], cfg.sid,
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cat.stats.items()})
    return cat


def write_atomic_files(cat: SyntheticCatalogue, data_path: str | os.PathLike, name: str = "synthetic") -> Path:
    """Write ``<data_path>/<name>/<name>.inter`` (tab-separated, RecBole's atomic format, rows by user
    then time) and return the file's path. Tokens are the integer user and item indices."""
    from recbole_ext.atomic import atomic_write

    path = Path(data_path) / name / f"{name}.inter"
    stamps = cat.timestamps.astype(np.int64)  # whole seconds: written without a fraction

    def write(handle) -> None:
        handle.write(("\t".join(INTER_COLUMNS) + "\n").encode())
        rows = np.stack([cat.users, cat.items, stamps], axis=1)  # [I, 3]
        step = 1 << 18
        for i in range(0, len(rows), step):  # chunks keep the formatted text small
            np.savetxt(handle, rows[i : i + step], fmt="%d", delimiter="\t")

    atomic_write(path, write)
    logger.info("wrote %d interactions to %s", cat.n_interactions, path)
    return path


def read_atomic_inter(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse an ``.inter`` file back: ``{column name without its type: values}`` (token columns as
    strings, float columns as float64), the way RecBole reads the typed header."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    out: dict[str, np.ndarray] = {}
    for column in frame.columns:
        name, kind = column.split(":", 1)
        out[name] = frame[column].to_numpy(dtype=np.float64 if kind == "float" else object)
    return out
