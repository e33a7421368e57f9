"""TwiSTAR's slow reasoning model: inputs, justification decoding, self-filtering and the RL reward.

The slow model is a second :class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq` over the same
semantic IDs whose vocabulary adds text tokens (:class:`~recbole_ext.models.item_text.ItemText`).

* input: the history's SID tokens, then the collaborative sentences
  (:mod:`recbole_ext.models.twistar.knowledge`) as text tokens, compacted (:func:`compact_tokens`);
* output: ``[bos, justification, SID]``; the justification is the rationale generator's sentences
  (:mod:`recbole_ext.rationale`, as LASAR's CoT), or empty where self-filtering dropped it;
* decoding: a greedy justification (:func:`~recbole_ext.models.item_text.text_prefix`), then a
  trie-constrained SID beam after it (:func:`sid_beams_after_prefix`);
* self-filtering (:func:`self_filter`): a sample keeps its rationale target only where one of the
  model's sampled justifications (:func:`~recbole_ext.models.item_text.text_prefix` with a temperature) led to a hit;
* RL: GRPO on the SID tokens after the greedy justification, rewarded by the prefix ladder
  (:func:`ladder_rewards`: hit + the share of the target's codes matched from the start).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recbole_ext.generation.beam_search import BeamSearchOutput, beam_search
from recbole_ext.generation.latent import PrefixedDecoder, token_prefix_steps
from recbole_ext.generation.t5_decoder import T5CachedDecoder
from recbole_ext.rl.grpo import token_logprobs
from recbole_ext.trainers.grpo_stage import RewardSet, sid_match_rewards

__all__ = ["REWARDS", "compact_tokens", "ladder_rewards", "self_filter",
           "sid_beams_after_prefix", "sid_logprobs_after_prefix"]

#: the slow model's RL rewards; a weight of 0 turns one off
REWARDS = ("hit", "prefix_match")


def compact_tokens(first: Tensor, second: Tensor, pad: int) -> Tensor:
    """The real (non-``pad``) tokens of ``[first, second]`` ([B, T1], [B, T2]) moved to the front in
    order, right-padded -> [B, T'] (T' = the longest row), so relative positions have no gap."""
    both = torch.cat([first, second], dim=1)  # [B, T1 + T2]
    real = both != pad
    pos = torch.arange(both.shape[1], device=both.device).expand_as(both)
    order = torch.where(real, pos, pos + both.shape[1]).argsort(dim=1)  # real tokens first, in order
    out = both.gather(1, order)
    width = max(1, int(real.sum(dim=1).max()) if both.numel() else 1)
    return out[:, :width]


def self_filter(text: Tensor, ends: Tensor, hits: Tensor, pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a sample's rationale only where a sampled justification led to a hit.

    text [B, T] rationale tokens (right-padded), ends [B, S] sentence ends (-1 absent), hits [B, G]
    bool (did sample g of row b hit?) -> (text, ends, keep [B]): rows without a hit get an empty
    rationale (all ``pad``, ends -1), so they are trained to write the SID straight away."""
    keep = hits.bool().any(dim=1)  # [B]
    return text.masked_fill(~keep[:, None], pad), ends.masked_fill(~keep[:, None], -1), keep


@torch.no_grad()
def sid_beams_after_prefix(s2s, enc: Tensor, mask: Tensor, prefix: Tensor, real: Tensor, n_beams: int,
                           constrain: bool = True) -> BeamSearchOutput:
    """Trie-constrained SID beam search after a left-padded token prefix [B, P] (bos included; ``real``
    False on padding); ``enc``/``mask`` from ``s2s.encode_for_decoding``."""
    t5 = s2s.t5
    dec = T5CachedDecoder(t5, enc, mask, prefix.shape[1] + s2s.vocab.n_levels)

    def first(log_probs: bool) -> Tensor:
        return token_prefix_steps(dec, t5.shared, prefix, real, log_probs)

    return beam_search(PrefixedDecoder(dec, first), s2s.trie(enc.device), s2s.vocab, enc.shape[0], n_beams,
                       enc.device, constrain=constrain)


def sid_logprobs_after_prefix(s2s, enc: Tensor, mask: Tensor, prefix: Tensor, real: Tensor, sid: Tensor,
                              allowed: Tensor | None = None, t5=None, temperature: float = 1.0) -> Tensor:
    """Teacher-forced log p of the SID tokens ``sid`` [N, m] after the left-padded prefix [N, P]
    (``real`` [N, P]), restricted by the additive mask ``allowed`` [N, m, V] -> [N, m]."""
    t5 = t5 or s2s.t5
    p = prefix.shape[1]
    inputs = torch.cat([prefix, sid[:, :-1]], dim=1)  # [N, P + m - 1]
    self_mask = torch.cat([real, real.new_ones(sid.shape[0], sid.shape[1] - 1)], dim=1).long()
    hidden = s2s.decode(enc, mask, input_ids=inputs, decoder=t5.decoder, self_mask=self_mask)
    logits = s2s.logits(hidden[:, p - 1 :], t5)  # [N, m, V]
    if allowed is not None:
        logits = logits + allowed
    return token_logprobs(logits, sid, temperature)


def ladder_rewards(item_codes: Tensor, target_item: Tensor, tokens: Tensor, vocab, weights: dict) -> RewardSet:
    """Prefix-ladder rewards of rollouts ``tokens`` [N, m] for targets [B] (N = B*G, user-major):
    ``hit`` (1 for the target's SID) and ``prefix_match`` (share of its codes matched from the start)."""
    unknown = set(weights) - set(REWARDS)
    if unknown:
        raise ValueError(f"unknown slow_rl_reward_weights {sorted(unknown)}; known: {REWARDS}")
    return sid_match_rewards(item_codes, target_item, tokens, vocab, weights)
