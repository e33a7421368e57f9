"""Prefix trie over valid semantic IDs, stored as dense tensors for batched decoding.

For each depth d (prefix length d = 0..m-1) nodes are the distinct valid prefixes of length d,
numbered 0..n_nodes[d]-1 (depth 0 has one node, the root), plus one extra *sentinel* row
``n_nodes[d]`` that has no children (used for dead / invalid beams). The table
``next_node[d]`` [n_nodes[d] + 1, K_d] (int32) maps (node, code) to the child node at depth d+1,
or -1 when the code is not a valid continuation. At the last depth the "child" is the item id
(the row index of the codes, or ``item_ids[row]``). Decoding a step is pure tensor indexing::

    allowed = trie.next_node[d][node] >= 0          # [B, K, K_d]
    node = trie.next_node[d][node, code]            # [B, K]

Memory is sum_d (n_nodes[d] + 1) * K_d * 4 bytes (e.g. 10k items, 4 x 256 codes: ~25 MB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class SIDTrie:
    """Dense per-depth transition tables over a set of unique code sequences."""

    def __init__(self, next_node: list[torch.Tensor], codebook_sizes: tuple[int, ...], n_items: int):
        self.next_node = next_node  # depth d: [n_nodes[d] + 1, K_d] int32
        self.codebook_sizes = codebook_sizes
        self.n_items = n_items

    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor | np.ndarray,
        codebook_sizes: Sequence[int] | None = None,
        item_ids: torch.Tensor | np.ndarray | None = None,
        device: torch.device | str | None = None,
    ) -> SIDTrie:
        """Build from codes [N, m] (unique rows). Leaves hold ``item_ids`` [N] (default 0..N-1)."""
        c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64)
        if c.ndim != 2 or c.shape[0] == 0:
            raise ValueError(f"codes must be a non-empty [N, m] matrix, got shape {c.shape}")
        n, m = c.shape
        sizes = tuple(int(s) for s in (codebook_sizes if codebook_sizes is not None else c.max(0) + 1))
        if len(sizes) != m:
            raise ValueError(f"{len(sizes)} codebook sizes for {m} code levels")
        if (c < 0).any() or (c >= np.asarray(sizes)).any():
            raise ValueError(f"codes out of range for codebook sizes {sizes}")
        leaf = np.arange(n, dtype=np.int64) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
        if leaf.shape != (n,):
            raise ValueError(f"item_ids must have shape ({n},), got {leaf.shape}")
        if len(np.unique(c, axis=0)) != n:
            raise ValueError("codes are not unique: add the collision code first (sid.collisions)")

        # node id of every item's prefix at each depth: [N] per depth
        node_of = [np.zeros(n, dtype=np.int64)]
        for d in range(1, m):
            _, inv = np.unique(c[:, :d], axis=0, return_inverse=True)
            node_of.append(inv.reshape(-1))
        tables = []
        for d in range(m):
            n_nodes = int(node_of[d].max()) + 1
            table = np.full((n_nodes + 1, sizes[d]), -1, dtype=np.int32)
            child = node_of[d + 1] if d + 1 < m else leaf
            table[node_of[d], c[:, d]] = child
            tables.append(torch.from_numpy(table).to(device))
        return cls(tables, sizes, n)

    @property
    def depth(self) -> int:
        return len(self.next_node)

    def sentinel(self, depth: int) -> int:
        """Row index of the childless node at ``depth``."""
        return self.next_node[depth].shape[0] - 1

    def to(self, device: torch.device | str) -> SIDTrie:
        return SIDTrie([t.to(device) for t in self.next_node], self.codebook_sizes, self.n_items)

    def children(self, depth: int, node: torch.Tensor) -> torch.Tensor:
        """Child table rows for nodes [...] -> [..., K_d] (-1 = not allowed)."""
        return self.next_node[depth][node]

    def advance(self, depth: int, node: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """One step: node, code [...] -> next node [...] (sentinel when invalid).

        At the last depth returns the item id, or -1 when the full ID is not valid.
        """
        valid_code = (code >= 0) & (code < self.codebook_sizes[depth])
        nxt = self.next_node[depth][node, code.clamp(0, self.codebook_sizes[depth] - 1)].long()
        nxt = torch.where(valid_code, nxt, torch.full_like(nxt, -1))
        if depth + 1 < self.depth:
            nxt = torch.where(nxt < 0, torch.full_like(nxt, self.sentinel(depth + 1)), nxt)
        return nxt

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [..., m] -> item ids [...] (-1 for an invalid ID)."""
        node = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for d in range(self.depth):
            node = self.advance(d, node, codes[..., d].long())
        return node
