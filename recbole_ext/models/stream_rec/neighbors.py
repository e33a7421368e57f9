"""Nearest items of every item, for STREAM-Rec's PT targets, DPO negatives and RL hard negatives.

``text``: cosine over item text embeddings (faiss exact search); ``sid``: the longest shared
semantic-ID prefix (random tie-break), for datasets without item text. Row 0 (padding) is 0; the
first j neighbours do not depend on how many are asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from recbole_ext.models.sid_base import item_text_embeddings


def text_neighbors(config: Any, dataset: Any, k: int) -> Tensor:
    """[n_items, k] RecBole ids of each item's k nearest items by text embedding (cosine, exact
    faiss search, the item itself excluded); row 0 (padding) is 0."""
    import faiss

    id2token = list(dataset.field2id_token[dataset.iid_field])
    try:
        vectors = item_text_embeddings(config, [str(t) for t in id2token[1:]])
    except Exception as exc:  # missing .item text, no encoder, ...
        raise ValueError(
            f"STREAM-Rec needs item text embeddings for its nearest-item retrieval "
            f"(neighbor_source: text) but they are unavailable for {config['dataset']!r}: {exc}. "
            "Add item text to the .item file, or set neighbor_source: sid to rank neighbours by "
            "shared semantic-ID prefix."
        ) from exc
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, min(k + 1, x.shape[0]))  # [n, k+1]
    n = x.shape[0]
    out = np.zeros((n + 1, k), dtype=np.int64)
    for i in range(n):
        row = [j for j in found[i] if j != i and j >= 0][:k]
        out[i + 1, : len(row)] = np.asarray(row, dtype=np.int64) + 1
    return torch.from_numpy(out)


def sid_neighbors(codes: Tensor, k: int, seed: int = 0, chunk: int = 128) -> Tensor:
    """[n_items, k] nearest items by shared semantic-ID prefix length (ties broken at random with
    ``seed``); ``codes`` [n_items, m] in RecBole order with row 0 = padding (-1)."""
    real = codes[1:].long()  # [n, m]
    n = real.shape[0]
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(n + 1, k, dtype=torch.long)
    for start in range(0, n, chunk):
        block = real[start : start + chunk]  # [c, m]
        prefix = (block[:, None, :] == real[None, :, :]).long().cumprod(-1).sum(-1).float()  # [c, n]
        score = prefix + 0.5 * torch.rand(prefix.shape, generator=gen)
        rows = torch.arange(block.shape[0])
        score[rows, rows + start] = -1.0  # not itself
        out[start + 1 : start + 1 + block.shape[0]] = score.topk(k, dim=1).indices + 1
    return out
