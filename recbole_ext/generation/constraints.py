"""The restricted policies of semantic-ID decoding: which token may come at which position.

A decoded sequence is ``free_steps`` free tokens (reasoning, drawn from a token range), then the m
item tokens, level d from its own vocabulary slice and, when constrained, only along valid paths
of the trie. Beam search, rollout sampling and the log-probabilities of sampled rollouts all take
their masks from here, so what a rollout may contain and what the policy scores are the same set.
"""

from __future__ import annotations

import torch

from recbole_ext.sid.trie import SIDTrie
from recbole_ext.sid.vocab import SIDVocab


def off_trie(trie: SIDTrie, depth: int, node: torch.Tensor) -> torch.Tensor:
    """Bool [..., K_d]: True for the level-``depth`` codes that are no child of ``node`` [...]."""
    return trie.children(depth, node) < 0


def mask_off_trie_(scores: torch.Tensor, vocab: SIDVocab, trie: SIDTrie, depth: int, node: torch.Tensor) -> None:
    """In place: -inf on the level-``depth`` tokens of ``scores`` [..., V] that leave the trie at ``node``."""
    lo, hi = vocab.level_range(depth)
    scores[..., lo:hi] = scores[..., lo:hi].masked_fill(off_trie(trie, depth, node), float("-inf"))


def position_mask(vocab: SIDVocab, free_steps: int, device=None, free_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Additive mask [free_steps + m, V]: free positions may take ``free_range`` (default: every code
    token), item position d only level d's codes."""
    m = vocab.n_levels
    mask = torch.full((free_steps + m, vocab.vocab_size), float("-inf"), device=device)
    lo, hi = free_range if free_range is not None else vocab.code_range()
    mask[:free_steps, lo:hi] = 0.0
    for d in range(m):
        a, b = vocab.level_range(d)
        mask[free_steps + d, a:b] = 0.0
    return mask


def sequence_mask(vocab: SIDVocab, trie: SIDTrie, tokens: torch.Tensor, free_steps: int, constrained: bool = True,
                  free_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Additive mask [N, T, V] of the restricted policy at each position of ``tokens`` [N, T]
    (T = free_steps + m): the position's token range and, when ``constrained``, the trie below the
    item prefix."""
    n = tokens.shape[0]
    mask = position_mask(vocab, free_steps, tokens.device, free_range).expand(n, -1, -1).clone()  # [N, T, V]
    if constrained:
        codes = vocab.decode(tokens[:, free_steps:])  # [N, m]
        node = torch.zeros(n, dtype=torch.long, device=tokens.device)  # trie root
        for d in range(vocab.n_levels):
            mask_off_trie_(mask[:, free_steps + d], vocab, trie, d, node)
            node = trie.advance(d, node, codes[:, d])
    return mask
