"""One entry point for semantic IDs: build (RQ-VAE / random / external file) once, cache on disk.

Config (a plain dict, e.g. the ``sid`` block of a model YAML)::

    method: rqvae              # rqvae | rkmeans | random | external
    n_levels: 3                # residual levels before the collision code (rqvae, random)
    codebook_size: 256         # codes per level (rqvae, random)
    collision_codebook_size:   # codes of the collision level (default: codebook_size)
    seed: 0
    rqvae: {epochs: 300, ...}  # any other RQVAEConfig field
    rkmeans: {niter: 50, ...}  # rkmeans only: any other RKMeansConfig field
    collision: append          # append (a collision level) | reassign (zero-collision last level; rqvae, rkmeans)
    path: items.index.json     # external only
    allow_extra_items: false   # external only: ignore file entries for items not in the dataset

The cache key hashes the item tokens (in order), the embedding bytes (shape and dtype included),
the config (except ``rqvae.device``: where the RQ-VAE trained is not what the IDs are, so a cache
built on a CPU serves GPU runs and vice versa, and every method on a dataset shares one set) and, for
``external``, the file's bytes. IDs are keyed by raw item tokens, never by
RecBole's remapped ids: use :meth:`SemanticIDs.codes_for_tokens` with
``dataset.field2id_token["item_id"]`` to get a table indexed by RecBole ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recbole_ext.atomic import atomic_write, atomic_write_text
from recbole_ext.locks import exclusive_lock

from recbole_ext.sid.collisions import resolve_collisions
from recbole_ext.sid.vocab import SIDVocab

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
METHODS = ("rqvae", "rkmeans", "random", "external")


@dataclass
class SemanticIDs:
    """Codes [n_items, m] in the order of ``item_tokens`` (raw dataset tokens)."""

    item_tokens: list[str]
    codes: torch.Tensor  # [N, m] long
    codebook_sizes: tuple[int, ...]
    stats: dict = field(default_factory=dict)
    cache_path: str | None = None

    @property
    def n_levels(self) -> int:
        return self.codes.shape[1]

    def vocab(self, n_extra: int = 0) -> SIDVocab:
        return SIDVocab(self.codebook_sizes, n_extra=n_extra)

    def codes_for_tokens(self, tokens: list[str] | np.ndarray, pad_token: str = "[PAD]") -> torch.Tensor:
        """Codes [len(tokens), m] for raw tokens (e.g. RecBole's id2token); pad_token -> row of -1."""
        row = {t: i for i, t in enumerate(self.item_tokens)}
        unknown = [t for t in tokens if t != pad_token and t not in row]
        if unknown:
            raise KeyError(f"{len(unknown)} items have no semantic ID, e.g. {unknown[:5]}")
        out = torch.full((len(tokens), self.n_levels), -1, dtype=torch.long)
        idx = [(i, row[t]) for i, t in enumerate(tokens) if t != pad_token]
        if idx:
            dst, src = torch.tensor(idx).T
            out[dst] = self.codes[src]
        return out

    def table_digest(self) -> str:
        """sha256 (16 hex digits) of the ID table itself: each item token with its codes, and the
        codebook sizes; independent of item order and of how the IDs were built. Two runs with one
        digest used the same semantic IDs."""
        rows = sorted(zip(self.item_tokens, self.codes.tolist()))
        canonical = json.dumps({"codebook_sizes": list(self.codebook_sizes), "ids": rows}, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "version": CACHE_VERSION,
            "item_tokens": list(self.item_tokens),
            "codes": self.codes,
            "codebook_sizes": list(self.codebook_sizes),
            "stats": self.stats,
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> SemanticIDs:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: cache version {d.get('version')} != {CACHE_VERSION}")
        return cls(d["item_tokens"], d["codes"].long(), tuple(d["codebook_sizes"]), d["stats"], os.fspath(path))


def _digest(item_tokens: list[str], embeddings: np.ndarray | None, cfg: dict) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}\n".encode())
    keyed = dict(cfg)
    if isinstance(keyed.get("rqvae"), dict):
        keyed["rqvae"] = {k: v for k, v in keyed["rqvae"].items() if k != "device"}
    h.update(json.dumps(keyed, sort_keys=True, default=str).encode())
    h.update(f"\n{len(item_tokens)}\n".encode())
    for t in item_tokens:
        h.update(t.encode() + b"\x00")
    if embeddings is not None:
        arr = np.ascontiguousarray(embeddings)
        h.update(f"{arr.shape}{arr.dtype.str}".encode())
        h.update(arr.tobytes())
    if cfg.get("method") == "external":
        with open(cfg["path"], "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _compute(item_tokens: list[str], embeddings: np.ndarray | None, cfg: dict) -> SemanticIDs:
    method = cfg.get("method", "rqvae")
    n_levels = int(cfg.get("n_levels", 3))
    k = int(cfg.get("codebook_size", 256))
    k_coll = int(cfg.get("collision_codebook_size") or k)
    seed = int(cfg.get("seed", 0))
    if method == "external":
        from recbole_ext.sid.external import load_index_json

        codes, sizes, stats = load_index_json(
            cfg["path"], item_tokens, cfg.get("codebook_sizes"), cfg.get("collision_codebook_size"),
            bool(cfg.get("allow_extra_items", False)),
        )
        return SemanticIDs(list(item_tokens), codes.long(), tuple(sizes), {"method": method, **stats})
    last_cost = None  # [N, K] cost of each last-level code (zero-collision reassignment)
    if method in ("rqvae", "rkmeans"):
        if embeddings is None:
            raise ValueError(f"the {method} tokenizer needs item embeddings")
        if len(embeddings) != len(item_tokens):
            raise ValueError(f"{len(embeddings)} embeddings for {len(item_tokens)} items")
    if method == "rqvae":
        from recbole_ext.sid.rqvae import train_rqvae

        rcfg = {"n_levels": n_levels, "codebook_size": k, "seed": seed, **cfg.get("rqvae", {})}
        res = train_rqvae(embeddings, rcfg)
        base, stats = res.codes, {"method": method, "rqvae": res.stats}
        last_cost = res.last_cost
    elif method == "rkmeans":
        from recbole_ext.sid.rkmeans import train_rkmeans

        res = train_rkmeans(embeddings, {"n_levels": n_levels, "codebook_size": k, "seed": seed,
                                         **cfg.get("rkmeans", {})})
        base, stats, last_cost = res.codes, {"method": method, "rkmeans": res.stats}, res.last_cost
    elif method == "random":
        from recbole_ext.sid.random_ids import random_codes

        base, stats = random_codes(len(item_tokens), [k] * n_levels, seed), {"method": method}
    else:
        raise ValueError(f"unknown semantic-ID method {method!r}; choose one of {METHODS}")
    codes, k_extra, cstats = resolve_collisions(base, cfg.get("collision"), k_coll, last_cost)
    stats["collision"] = cstats
    return SemanticIDs(list(item_tokens), codes.long(), (k,) * n_levels + ((k_extra,) if k_extra else ()), stats)


def build_semantic_ids(
    item_tokens: list[str],
    embeddings: np.ndarray | None,
    cfg: dict,
    cache_dir: str | os.PathLike | None,
) -> SemanticIDs:
    """Return semantic IDs for ``item_tokens``, computing them only on a cache miss.

    With ``cache_dir=None`` nothing is read or written.
    """
    item_tokens = [str(t) for t in item_tokens]  # e.g. numpy strings from RecBole's id2token
    cfg = dict(cfg)
    cfg.setdefault("method", "rqvae")
    if cfg["method"] not in METHODS:
        raise ValueError(f"unknown semantic-ID method {cfg['method']!r}; choose one of {METHODS}")
    if len(set(item_tokens)) != len(item_tokens):
        raise ValueError("item_tokens contain duplicates")
    if cache_dir is None:
        return _compute(item_tokens, embeddings, cfg)
    digest = _digest(item_tokens, embeddings, cfg)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"sid-{cfg['method']}-{digest[:24]}.pt"
    # One tokenizer training per key at a time: a concurrent run waits, then reads the cache.
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"building semantic IDs {path.name}"):
        sids = _read_cache(path, item_tokens)
        if sids is None:
            sids = _build_and_store(path, digest, item_tokens, embeddings, cfg)
    return sids


def _read_cache(path: Path, item_tokens: list[str]) -> SemanticIDs | None:
    """The cached IDs at ``path``, or None for a miss: absent, unreadable (truncated, corrupt, an
    older version: a warning names the file, which is rebuilt) or for other items."""
    if not path.exists():
        return None
    try:
        sids = SemanticIDs.load(path)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is rebuilt
        logger.warning("semantic IDs: cache file %s is unreadable (%s: %s); rebuilding it",
                       path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    if sids.item_tokens != list(item_tokens):
        logger.warning("semantic IDs: %s does not match the items, recomputing", path)
        return None
    logger.info("semantic IDs: cache hit %s", path)
    return sids


def _build_and_store(path: Path, digest: str, item_tokens: list[str], embeddings: np.ndarray | None,
                     cfg: dict) -> SemanticIDs:
    logger.info("semantic IDs: cache miss, computing %s", path)
    sids = _compute(item_tokens, embeddings, cfg)
    sids.stats["cache_key"] = digest
    sids.stats["config"] = cfg
    atomic_write(path, lambda handle: torch.save(sids.to_dict(), handle))
    stats_path = path.with_suffix(".json")
    text = json.dumps({"codebook_sizes": list(sids.codebook_sizes), **sids.stats}, indent=2, default=str)
    atomic_write_text(stats_path, text)
    sids.cache_path = os.fspath(path)
    return sids
