"""Batched beam search constrained by a semantic-ID trie.

Decoding runs, per user, ``len(prefix)`` forced tokens, then ``free_steps`` unconstrained steps
(STREAM-Rec's reasoning tokens, drawn from ``free_range``), then the m item tokens, level l from
its vocabulary slice and (``constrain=True``) only along valid trie paths. All users and beams
advance together with tensor ops only: no per-beam Python callback and no host synchronisation per
step, so it runs the same on CPU and GPU. A beam's score is the sum of the log-probabilities
(full-vocabulary log-softmax) of its free and item tokens.

A beam that cannot continue (fewer valid continuations than beams) is *dead*: score -inf, item -1.
With ``constrain=False`` a beam whose tokens are not a valid ID also gets item -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recbole_ext.generation.constraints import off_trie
from recbole_ext.sid.trie import SIDTrie
from recbole_ext.sid.vocab import SIDVocab


@dataclass
class BeamSearchOutput:
    items: torch.Tensor  # [B, K] item id per beam (trie leaf value), -1 if dead / invalid
    scores: torch.Tensor  # [B, K] summed log-probabilities, best first; -inf for dead beams
    tokens: torch.Tensor  # [B, K, p + free_steps + m] generated tokens (no bos)


def _top(cand: torch.Tensor, n_beams: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cand [B, k, V] -> (values [B, K], parent [B, K], token index [B, K]) of the K best.

    When k*V < K the missing slots get -inf, parent 0 and token index -1.
    """
    b, k, v = cand.shape
    flat = cand.reshape(b, k * v)
    if k * v < n_beams:
        flat = torch.cat([flat, flat.new_full((b, n_beams - k * v), float("-inf"))], dim=1)
    values, idx = flat.topk(n_beams, dim=1)  # sorted, best first
    real = idx < k * v
    parent = torch.where(real, idx // v, torch.zeros_like(idx))
    token = torch.where(real, idx % v, torch.full_like(idx, -1))
    return values, parent, token


def beam_search(
    step_decoder,
    trie: SIDTrie,
    vocab: SIDVocab,
    batch_size: int,
    n_beams: int,
    device: torch.device | str,
    prefix: torch.Tensor | None = None,
    free_steps: int = 0,
    free_range: tuple[int, int] | None = None,
    constrain: bool = True,
    item_levels: bool = True,
) -> BeamSearchOutput:
    """Search with any step decoder (``step(tokens [B, k]) -> log-probs [B, k, V]``, ``reorder``).

    prefix: forced tokens [B, p] decoded after bos (their probabilities are not scored: they are
    the same for all of a user's beams). free_range: [start, end) token ids allowed in free steps
    (default: all code tokens). ``item_levels=False`` stops after the free steps: the K best free
    sequences (e.g. reasoning paths) by their own score, items all -1.
    """
    b, m = batch_size, vocab.n_levels
    if trie.depth != m:
        raise ValueError(f"trie depth {trie.depth} != vocab levels {m}")
    cur = torch.full((b, 1), vocab.bos, dtype=torch.long, device=device)  # [B, k=1]
    scores = torch.zeros(b, 1, device=device)  # [B, k]
    out_tokens: list[torch.Tensor] = []  # each [B, k]

    if prefix is not None:
        for j in range(prefix.shape[1]):
            step_decoder.step(cur)
            cur = prefix[:, j : j + 1].to(device=device, dtype=torch.long)
            out_tokens.append(cur)

    lo, hi = free_range if free_range is not None else vocab.code_range()
    for _ in range(free_steps):
        logp = step_decoder.step(cur)[..., lo:hi]  # [B, k, Vf]
        scores, parent, tok = _top(scores[..., None] + logp, n_beams)
        step_decoder.reorder(parent)
        out_tokens = [t.gather(1, parent) for t in out_tokens]
        cur = torch.where(tok >= 0, tok + lo, torch.full_like(tok, vocab.pad))
        out_tokens.append(cur)

    if not item_levels:
        tokens = torch.stack(out_tokens, dim=-1) if out_tokens else cur.new_zeros(b, cur.shape[1], 0)
        return BeamSearchOutput(torch.full_like(cur, -1), scores, tokens)

    node = torch.zeros_like(cur)  # trie root, [B, k]
    for d in range(m):
        lo_d, hi_d = vocab.level_range(d)
        logp = step_decoder.step(cur)[..., lo_d:hi_d]  # [B, k, K_d]
        cand = scores[..., None] + logp
        if constrain:
            cand = cand.masked_fill(off_trie(trie, d, node), float("-inf"))  # [B, k, K_d]
        scores, parent, code = _top(cand, n_beams)  # [B, K]
        if d + 1 < m:
            step_decoder.reorder(parent)
        out_tokens = [t.gather(1, parent) for t in out_tokens]
        node = trie.advance(d, node.gather(1, parent), code)  # [B, K]
        cur = torch.where(code >= 0, code + lo_d, torch.full_like(code, vocab.pad))
        out_tokens.append(cur)

    items = torch.where(torch.isfinite(scores), node, torch.full_like(node, -1))
    return BeamSearchOutput(items, scores, torch.stack(out_tokens, dim=-1))


@torch.no_grad()
def t5_beam_search(
    model: nn.Module,
    input_ids: torch.Tensor,  # [B, L]
    attention_mask: torch.Tensor | None,  # [B, L]
    trie: SIDTrie,
    vocab: SIDVocab,
    n_beams: int,
    prefix: torch.Tensor | None = None,  # [B, p]
    free_steps: int = 0,
    free_range: tuple[int, int] | None = None,
    constrain: bool = True,
    encoder_out: torch.Tensor | None = None,  # [B, L', D] from generation.encode, with its mask
    n_buckets: int | None = None,
    item_levels: bool = True,
) -> BeamSearchOutput:
    """Encode once per user (in ``n_buckets`` length buckets, see :func:`encode`), then
    :func:`beam_search` with a :class:`T5CachedDecoder`.

    ``n_buckets=None`` picks 4 on CPU (padding is compute there) and 1 on GPU (kernel launches
    are the cost there): measured on an H100 (T5 4+4, d_model 256, batch 256, beam 20), buckets
    made the search slower, 0.11 vs 0.08 ms/user (results/gpu_scientific2018/README.md).

    Pass ``encoder_out`` together with the mask it was computed with as ``attention_mask`` to
    reuse an encoder pass. The model should be in eval mode (the decoder steps apply no dropout).
    """
    from recbole_ext.generation.t5_decoder import T5CachedDecoder, encode

    if attention_mask is None:
        attention_mask = (input_ids != vocab.pad).long()
    if encoder_out is None:
        if n_buckets is None:
            n_buckets = 1 if input_ids.is_cuda else 4
        encoder_out, attention_mask = encode(model, input_ids, attention_mask, n_buckets)
    n_steps = (0 if prefix is None else prefix.shape[1]) + free_steps + (vocab.n_levels if item_levels else 0)
    dec = T5CachedDecoder(model, encoder_out, attention_mask, max(1, n_steps))
    return beam_search(
        dec, trie, vocab, input_ids.shape[0], n_beams, input_ids.device,
        prefix=prefix, free_steps=free_steps, free_range=free_range, constrain=constrain, item_levels=item_levels,
    )
