"""The semantic-ID seq2seq module: a T5 over a SID vocabulary, the items' token table and the trie.

Every semantic-ID generator is this module plus its own losses: TIGER trains it with plain CE,
STREAM-Rec adds reasoning tokens, LASAR feeds hidden states back as input embeddings, TwiSTAR uses a
trained one as its fast retriever. What it offers:

* inputs: :meth:`history_tokens` (each history item as its m code tokens, then EOS when built with
  ``history_eos``: every model's encoder input goes through it, so all generators see one format),
  :meth:`shift`, :meth:`append_eos`;
* training: :meth:`encode`, :meth:`decode` from token ids *or* input embeddings (with any decoder
  stack that shares the encoder, e.g. STREAM-Rec's direct decoder), :meth:`logits` (T5's output
  scaling for tied embeddings), :meth:`token_logprobs` (teacher forced), :meth:`lm_loss` (T5's own
  CE, TIGER's loss);
* decoding: :meth:`beam_search` (trie-constrained, batched), :meth:`sample` (rollouts from the
  same restricted policy) and :meth:`score_continuations` (items after a sampled prefix).

Tensor names: B users, L history tokens, T decoded tokens, D d_model, V vocabulary, m levels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recbole_ext.generation.beam_search import BeamSearchOutput, t5_beam_search
from recbole_ext.generation.constraints import sequence_mask
from recbole_ext.generation.sampling import sample_sequences, score_continuations
from recbole_ext.generation.t5_decoder import encode as bucketed_encode
from recbole_ext.modules.t5_backbone import build_t5, decoder_output_scale
from recbole_ext.rl.grpo import token_logprobs
from recbole_ext.sid.trie import SIDTrie
from recbole_ext.sid.vocab import SIDVocab

#: Backbone keys of the YAML (properties/family/sid_generative.yaml) -> build_t5 arguments.
BACKBONE_KEYS = {"num_layers": "num_layers", "num_decoder_layers": "num_decoder_layers", "d_model": "d_model",
                 "d_ff": "d_ff", "num_heads": "num_heads", "d_kv": "d_kv", "dropout_prob": "dropout"}


def backbone_settings(config) -> dict:
    """build_t5 keyword arguments from a config (every key required; defaults live in the YAML)."""
    return {arg: config[key] for key, arg in BACKBONE_KEYS.items()}


class SIDSeq2Seq(nn.Module):
    """T5 + SID vocabulary + item token table + trie; see the module docstring.

    ``item_codes`` [n_items, m] are the items' codes by item id, row 0 (padding) all -1.
    ``history_eos``: append EOS after the history's last item token (the references' input format).
    """

    def __init__(self, vocab: SIDVocab, item_codes: Tensor, backbone: dict, history_eos: bool = False):
        super().__init__()
        self.vocab = vocab
        self.history_eos = bool(history_eos)
        self.register_buffer("item_codes", item_codes, persistent=False)  # [n_items, m]
        self.register_buffer("item_tokens", vocab.encode(item_codes), persistent=False)  # [n_items, m]
        n_items = item_codes.shape[0]
        self._trie = SIDTrie.from_codes(item_codes[1:], vocab.codebook_sizes, item_ids=torch.arange(1, n_items))
        self._trie_device: torch.device | None = None
        self.t5 = build_t5(vocab.vocab_size, **backbone)

    # --- inputs --------------------------------------------------------------------------------
    def history_tokens(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """items [B, L] (0 = padding) -> encoder ids [B, L*m] and their mask [B, L*m]; with
        ``history_eos`` [B, L*m + 1], EOS right after the last history token (padding stays after it)."""
        tokens = self.item_tokens[items].flatten(1)
        if self.history_eos:
            tokens = torch.cat([tokens, tokens.new_full((tokens.shape[0], 1), self.vocab.pad)], dim=1)
            position = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)  # [L*m + 1]
            end = torch.where(tokens != self.vocab.pad, position, 0).amax(dim=1, keepdim=True)  # [B, 1]
            tokens = tokens.scatter(1, end, self.vocab.eos)
        return tokens, (tokens != self.vocab.pad).long()

    def append_eos(self, labels: Tensor) -> Tensor:
        """Target tokens [B, T] -> [B, T + 1] ending in EOS."""
        return torch.cat([labels, labels.new_full((labels.shape[0], 1), self.vocab.eos)], dim=1)

    def shift(self, labels: Tensor) -> Tensor:
        """Decoder inputs [B, T]: [bos, labels[:, :-1]]."""
        bos = labels.new_full((labels.shape[0], 1), self.vocab.bos)
        return torch.cat([bos, labels[:, :-1]], dim=1)

    def trie(self, device: torch.device) -> SIDTrie:
        if self._trie_device != device:
            self._trie = self._trie.to(device)
            self._trie_device = device
        return self._trie

    # --- teacher-forced passes -----------------------------------------------------------------
    def encode(self, ids: Tensor, mask: Tensor, t5=None) -> Tensor:
        """Encoder states [B, L, D] of ``t5`` (default: this module's)."""
        return (t5 or self.t5).encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def decode(self, enc: Tensor, mask: Tensor, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
               decoder=None, self_mask: Tensor | None = None) -> Tensor:
        """Decoder states [B, T, D] after the final norm, from token ids [B, T] or embeddings
        [B, T, D]; ``decoder``: another stack over the same encoder (default: the T5's);
        ``self_mask`` [B, T] (1 = real): left padding of rows whose prefixes differ in length."""
        return (decoder or self.t5.decoder)(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=self_mask, encoder_hidden_states=enc,
            encoder_attention_mask=mask, use_cache=False).last_hidden_state

    def logits(self, hidden: Tensor, t5=None) -> Tensor:
        """[B, T, D] -> [B, T, V], with T5's output rescaling where the model applies it."""
        t5 = t5 or self.t5
        scale = decoder_output_scale(t5.config)
        return t5.lm_head(hidden if scale is None else hidden * scale)

    def token_logprobs(self, enc: Tensor, mask: Tensor, labels: Tensor, decoder=None, t5=None,
                       temperature: float = 1.0, allowed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced log p of each label token [B, T] (restricted by the additive mask
        ``allowed`` [B, T, V] when given) and the decoder states [B, T, D]."""
        t5 = t5 or self.t5
        hidden = self.decode(enc, mask, input_ids=self.shift(labels), decoder=decoder or t5.decoder)
        logits = self.logits(hidden, t5)
        if allowed is not None:
            logits = logits + allowed
        return token_logprobs(logits, labels, temperature), hidden

    def lm_loss(self, ids: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        """T5's own mean token cross-entropy of ``labels`` [B, T] (TIGER's loss)."""
        return self.t5(input_ids=ids, attention_mask=mask, labels=labels).loss

    # --- decoding ------------------------------------------------------------------------------
    def beam_search(self, ids: Tensor, mask: Tensor, n_beams: int, prefix: Tensor | None = None,
                    free_steps: int = 0, free_range: tuple[int, int] | None = None,
                    constrain: bool = True, item_levels: bool = True) -> BeamSearchOutput:
        """Trie-constrained beam search for a batch of users (items [B, K], best first);
        ``item_levels=False``: the K best free (reasoning) sequences only."""
        return t5_beam_search(self.t5, ids, mask, self.trie(ids.device), self.vocab, n_beams, prefix=prefix,
                              free_steps=free_steps, free_range=free_range, constrain=constrain,
                              item_levels=item_levels)

    def encode_for_decoding(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder states and mask for step-wise decoding (length buckets on CPU, as beam search)."""
        return bucketed_encode(self.t5, ids, mask, 1 if ids.is_cuda else 4)

    def sample(self, enc: Tensor, mask: Tensor, group: int, free_steps: int = 0, temperature: float = 1.0,
               constrained: bool = True) -> Tensor:
        """G sequences per user [B, G, free_steps + m] from the restricted policy."""
        return sample_sequences(self.t5, enc, mask, self.vocab, self.trie(enc.device), group, free_steps,
                                temperature, constrained)

    def policy_mask(self, tokens: Tensor, free_steps: int = 0, constrained: bool = True) -> Tensor:
        """Additive mask [N, T, V] of the restricted policy that :meth:`sample` draws ``tokens`` [N, T] from."""
        return sequence_mask(self.vocab, self.trie(tokens.device), tokens, free_steps, constrained)

    def score_continuations(self, enc: Tensor, mask: Tensor, prefix: Tensor, candidates: Tensor, t5=None) -> Tensor:
        """log p(candidate items | prefix) [B, G, C] for prefix [B, G, p], candidates [B, G, C, m]."""
        return score_continuations(t5 or self.t5, enc, mask, self.vocab.bos, prefix, candidates)
