"""TIGER: generative retrieval over semantic IDs with a T5 encoder-decoder.

Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023. The encoder reads the
history's item tokens (m code tokens per item), the decoder generates the next item's m tokens;
ranking is trie-constrained beam search (:class:`~recbole_ext.models.sid_base.SIDGenerativeRecommender`).

Choices where the paper is open (its keys: properties/family/sid_generative.yaml):
* no user-id token in the encoder input (the paper hashes users into 2,000 tokens; with
  leave-one-out every user is seen in training, so it mostly adds a per-user bias);
* EOS after the history (``history_eos``, shared by every SID model) and after the target
  (``target_eos``, TIGER only) are options, off by default. The target's EOS is a training signal
  only: decoding always stops after exactly m constrained tokens, so beams are ranked by the m code
  tokens' log-probabilities with or without it.
"""

from __future__ import annotations

from recbole_ext.models.sid_base import SIDGenerativeRecommender


class TIGER(SIDGenerativeRecommender):
    """T5 trained from scratch to generate the next item's semantic ID."""

    supports_target_eos = True

    def calculate_loss(self, interaction):
        input_ids, mask = self.history_tokens(interaction)  # [B, L*m (+1 with history_eos)]
        labels = self.target_tokens(interaction)  # [B, m]
        if self.target_eos:
            labels = self.seq2seq.append_eos(labels)  # [B, m + 1]
        return self.seq2seq.lm_loss(input_ids, mask, labels)  # mean token CE
