"""How good are a set of semantic IDs, before any generator is trained on them?

:func:`tokenizer_report` takes the items' *semantic* codes [N, L] (the tokenizer's levels, without
an appended collision level, which only numbers items sharing an ID) and, optionally, pairs of
items that follow each other in training sequences. It returns, as plain JSON-able values:

* ``levels``: per level, ``used`` codes, ``usage`` (used / codebook size) and ``perplexity``
  ``exp(H)`` of the level's code distribution over items (K for a uniform level, 1 for one code);
* ``collision_rate`` (1 - distinct IDs / N), ``n_colliding_items`` (items sharing their full ID
  with another) and ``largest_group`` (most items on one ID);
* ``fanout``: per prefix depth d = 0..L-1, the number of distinct prefixes of length d and the
  mean / max number of distinct next codes below them (depth 0: the root);
* ``cooccurrence`` (with pairs): per depth d = 1..L, the share of consecutive training pairs
  (a, b), a != b, whose IDs share the first d codes, beside ``random``: the same share for two
  distinct items drawn uniformly (sum_g n_g (n_g - 1) / (N (N - 1)) over the prefix groups g), and
  their ratio ``lift``: IDs that place co-consumed items under one prefix have lift > 1.

``python -m recbole_ext.sid report --dataset=...`` prints it for a dataset's configured tokenizer
(:mod:`recbole_ext.sid.__main__`); every generative run record holds it (``extra.sid.report``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _as_numpy(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty [N, L] matrix, got shape {c.shape}")
    return c


def _prefix_groups(c: np.ndarray, depth: int) -> np.ndarray:
    """Group index [N] of each item's prefix of length ``depth`` (0: one group)."""
    if depth == 0:
        return np.zeros(c.shape[0], dtype=np.int64)
    return np.unique(c[:, :depth], axis=0, return_inverse=True)[1].reshape(-1)


def tokenizer_report(
    codes: torch.Tensor | np.ndarray,
    codebook_sizes: Sequence[int],
    pairs: torch.Tensor | np.ndarray | None = None,
    digits: int = 6,
) -> dict:
    """The report described in the module docstring. ``codes`` [N, L] (row i = item i),
    ``codebook_sizes`` (L,), ``pairs`` [P, 2] of item rows (consecutive items of training sequences)."""
    c = _as_numpy(codes)
    n, depth = c.shape
    sizes = [int(s) for s in codebook_sizes]
    if len(sizes) != depth:
        raise ValueError(f"{len(sizes)} codebook sizes for {depth} levels")

    def r(x: float) -> float:
        return round(float(x), digits)

    levels = []
    for level in range(depth):
        counts = np.bincount(c[:, level], minlength=sizes[level])
        p = counts[counts > 0] / n
        levels.append({"used": int((counts > 0).sum()), "usage": r((counts > 0).sum() / sizes[level]),
                       "perplexity": r(math.exp(float(-(p * np.log(p)).sum())))})
    _, full_counts = np.unique(c, axis=0, return_counts=True)
    fanout = []
    for d in range(depth):
        group = _prefix_groups(c, d)
        n_groups = int(group.max()) + 1
        children = np.unique(np.stack([group, c[:, d]], axis=1), axis=0)[:, 0]  # one row per (prefix, next code)
        per_prefix = np.bincount(children, minlength=n_groups)
        fanout.append({"depth": d, "prefixes": n_groups, "mean": r(per_prefix.mean()), "max": int(per_prefix.max())})
    report: dict = {
        "n_items": int(n),
        "levels": levels,
        "collision_rate": r(1.0 - len(full_counts) / n),
        "n_colliding_items": int(full_counts[full_counts > 1].sum()),
        "largest_group": int(full_counts.max()),
        "fanout": fanout,
    }
    if pairs is not None:
        report["cooccurrence"] = _cooccurrence(c, pairs, r)
    return report


def _cooccurrence(c: np.ndarray, pairs: torch.Tensor | np.ndarray, r) -> dict:
    p = np.asarray(pairs.cpu() if isinstance(pairs, torch.Tensor) else pairs, dtype=np.int64).reshape(-1, 2)
    p = p[p[:, 0] != p[:, 1]]  # a repeated item trivially shares its whole ID
    n = c.shape[0]
    rows = []
    for d in range(1, c.shape[1] + 1):
        same = (c[p[:, 0], :d] == c[p[:, 1], :d]).all(axis=1).mean() if len(p) else 0.0
        sizes = np.bincount(_prefix_groups(c, d))
        chance = float((sizes * (sizes - 1)).sum()) / (n * (n - 1)) if n > 1 else 0.0
        rows.append({"depth": d, "shared": r(same), "random": r(chance), "lift": r(same / chance) if chance else None})
    return {"n_pairs": int(len(p)), "by_depth": rows}


def semantic_codes(codes: torch.Tensor, stats: dict) -> torch.Tensor:
    """The tokenizer's own levels of a :class:`~recbole_ext.sid.cache.SemanticIDs` code table: the
    appended collision level (``stats['collision']`` from :func:`~recbole_ext.sid.collisions.add_collision_code`)
    is dropped; reassigned or external IDs are kept whole."""
    collision = stats.get("collision") or {}
    appended = bool(collision) and collision.get("mode", "append") == "append"
    return codes[:, :-1] if appended else codes


def format_report(report: dict) -> str:
    """A few readable lines of a report (the CLI's output)."""
    lines = [f"items: {report['n_items']}; collision rate {report['collision_rate']:.4f} "
             f"({report['n_colliding_items']} items share an ID; largest group {report['largest_group']})"]
    for i, lv in enumerate(report["levels"]):
        lines.append(f"level {i}: {lv['used']} codes used (usage {lv['usage']:.3f}), perplexity {lv['perplexity']:.1f}")
    for f in report["fanout"]:
        lines.append(f"depth {f['depth']}: {f['prefixes']} prefixes, fan-out mean {f['mean']:.2f}, max {f['max']}")
    co = report.get("cooccurrence")
    if co:
        lines.append(f"consecutive training pairs: {co['n_pairs']}")
        for row in co["by_depth"]:
            lift = "n/a" if row["lift"] is None else f"{row['lift']:.1f}x"
            lines.append(f"  share a {row['depth']}-code prefix: {row['shared']:.4f} (random pair {row['random']:.4f}, "
                         f"lift {lift})")
    text = report.get("text")
    if text:
        lines.append(f"item text over the encoder's {text.get('max_seq_length')}-token limit: "
                     f"{text.get('n_over_length')} items ({100 * text.get('over_length_share', 0):.1f} %)")
    return "\n".join(lines)
