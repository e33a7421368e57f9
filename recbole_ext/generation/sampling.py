"""Sampling from the restricted decoding policy, and scoring candidate continuations.

Both step a :class:`~recbole_ext.generation.t5_decoder.T5CachedDecoder` (cross-attention keys and
values once per user, shared by the user's G rollouts) and take their masks from
:mod:`recbole_ext.generation.constraints`, as beam search does. RL stages use them for rollouts
(:func:`sample_sequences`) and for rewards that score items after a sampled prefix
(:func:`score_continuations`).
"""

from __future__ import annotations

import torch

from recbole_ext.generation.constraints import mask_off_trie_, position_mask
from recbole_ext.generation.t5_decoder import T5CachedDecoder
from recbole_ext.sid.trie import SIDTrie
from recbole_ext.sid.vocab import SIDVocab


@torch.no_grad()
def sample_sequences(
    t5,
    encoder_out: torch.Tensor,  # [B, L, D]
    encoder_mask: torch.Tensor,  # [B, L]
    vocab: SIDVocab,
    trie: SIDTrie,
    group: int,
    free_steps: int = 0,
    temperature: float = 1.0,
    constrained: bool = True,
    free_range: tuple[int, int] | None = None,
    step_decoder=None,
) -> torch.Tensor:
    """G sampled sequences per user [B, G, free_steps + m]: ``free_steps`` tokens from
    ``free_range`` (default: every code token), then the item's m tokens, level d from its codes
    and, when ``constrained``, only along valid trie paths. Each token is drawn from the softmax
    of the restricted log-probabilities divided by ``temperature``. ``step_decoder``: decode with
    it instead of a fresh decoder from bos (e.g. a
    :class:`~recbole_ext.generation.latent.PrefixedDecoder` after a latent prefix)."""
    b, device = encoder_out.shape[0], encoder_out.device
    length = free_steps + vocab.n_levels
    dec = step_decoder if step_decoder is not None else T5CachedDecoder(t5, encoder_out, encoder_mask, length)
    allowed = position_mask(vocab, free_steps, device, free_range)  # [T, V]
    node = torch.zeros(b, group, dtype=torch.long, device=device)  # trie root
    cur = torch.full((b, group), vocab.bos, dtype=torch.long, device=device)
    out = []
    for pos in range(length):
        logp = dec.step(cur) + allowed[pos]  # [B, G, V]
        d = pos - free_steps
        if constrained and d >= 0:
            mask_off_trie_(logp, vocab, trie, d, node)
        probs = torch.softmax(logp / temperature, dim=-1)
        cur = torch.multinomial(probs.reshape(b * group, -1), 1).view(b, group)
        if d >= 0:
            node = trie.advance(d, node, cur - vocab.level_range(d)[0])
        out.append(cur)
    return torch.stack(out, dim=-1)  # [B, G, T]


@torch.no_grad()
def score_continuations(
    t5,
    encoder_out: torch.Tensor,  # [B, L, D]
    encoder_mask: torch.Tensor,  # [B, L]
    bos: int,
    prefix: torch.Tensor,  # [B, G, p]
    candidates: torch.Tensor,  # [B, G, C, m]
) -> torch.Tensor:
    """log p(candidate | prefix, history) summed over the candidate's m tokens (full softmax):
    -> [B, G, C]. Each prefix is decoded once and forked into its C candidates (shared caches);
    each token's log-probability is its logit minus the row's logsumexp (no [*, V] log-softmax).
    Rows of one user with the same prefix and candidates (a peaked policy samples the same
    reasoning often) are scored once."""
    b, g, c, m = candidates.shape
    if g > 1:
        user = torch.arange(b, device=prefix.device).repeat_interleave(g)[:, None]  # [B*G, 1]
        key = torch.cat([user, prefix.reshape(b * g, -1), candidates.reshape(b * g, -1)], dim=1)
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)  # [U, 1 + p + C*m], [B*G]
        if unique.shape[0] <= 0.9 * b * g:  # else the per-row cross-attention cache costs more than it saves
            p = prefix.shape[-1]
            rows = unique[:, 0]  # [U] user of each distinct row
            scores = score_continuations(t5, encoder_out[rows], encoder_mask[rows], bos,
                                         unique[:, None, 1 : 1 + p], unique[:, None, 1 + p :].view(-1, 1, c, m))
            return scores[:, 0][inverse].view(b, g, c)
    device = encoder_out.device
    dec = T5CachedDecoder(t5, encoder_out, encoder_mask, prefix.shape[-1] + m)
    logits = dec.step(torch.full((b, g), bos, dtype=torch.long, device=device), log_probs=False)
    for i in range(prefix.shape[-1]):
        logits = dec.step(prefix[..., i], log_probs=False)  # [B, G, V]
    flat = candidates.reshape(b, g * c, m)
    first = flat[..., 0].view(b, g, c)  # [B, G, C] each candidate's first token, gathered before forking
    score = (logits.gather(-1, first) - logits.logsumexp(-1, keepdim=True)).reshape(b, g * c)  # [B, G*C]
    dec.reorder(torch.arange(g, device=device).repeat_interleave(c)[None].expand(b, -1))
    for d in range(1, m):
        logits = dec.step(flat[..., d - 1], log_probs=False)  # [B, G*C, V]
        score = score + logits.gather(-1, flat[..., d : d + 1]).squeeze(-1) - logits.logsumexp(-1)
    return score.view(b, g, c)
