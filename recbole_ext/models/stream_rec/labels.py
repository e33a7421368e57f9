"""STREAM-Rec's slow-thinking labels (section 2.3.1): collecting them with the current model, looking
them up per sample, and their diagnostics.

:class:`ThoughtLabels` is mixed into :class:`~recbole_ext.models.stream_rec.model.STREAMRec`; it
uses the model's ``seq2seq``, ``labeller``, ``reasoning_len``, ``num_beams``, ``history_tokens``,
``target_tokens`` and ``_target_repr``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def label_statistics(tokens: Tensor) -> dict[str, list]:
    """Per position of labels [N, l]: distinct tokens and the entropy (nats) of their distribution
    (a collapsed position shows 1 distinct token, entropy 0)."""
    distinct, entropy = [], []
    for j in range(tokens.shape[1]):
        _, counts = tokens[:, j].unique(return_counts=True)
        p = counts.double() / counts.sum()
        distinct.append(int(counts.numel()))
        entropy.append(round(float(-(p * p.log()).sum()), 4))
    return {"label_distinct": distinct, "label_entropy": entropy}



class ThoughtLabels:
    """Reasoning-token labels of the training samples, keyed by each sample's exact content."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._labels: dict[bytes, int] = {}  # sample content -> row of _label_tokens
        self._label_tokens: Tensor | None = None  # [N, l] on CPU
        self._warned_unlabelled = False

    def _keys(self, interaction) -> list[bytes]:
        """Exact content of each sample (history items, then the target) as compact bytes."""
        seqs = interaction[self.ITEM_SEQ].cpu().numpy().astype(np.int32)  # [B, L]
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy().astype(np.int32)
        return [seqs[i, :n].tobytes() + b"|" + targets[i].tobytes() for i, n in enumerate(lengths)]

    def clear_labels(self) -> None:
        self._labels, self._label_tokens = {}, None

    @torch.no_grad()
    def label_batch(self, interaction) -> Tensor:
        """Eq. 12-13 with the current model (eval mode): reasoning tokens [B, l]."""
        from recbole_ext.generation.t5_decoder import T5CachedDecoder

        l, s2s = self.reasoning_len, self.seq2seq
        ids, mask = self.history_tokens(interaction)
        if l == 0:
            return ids.new_zeros(ids.shape[0], 0)
        was_training = self.training
        self.eval()
        try:
            enc, emask = s2s.encode_for_decoding(ids, mask)
            dec = T5CachedDecoder(s2s.t5, enc, emask, l + 1)
            dec.step(ids.new_full((ids.shape[0], 1), self.vocab.bos))
            d0 = dec.last_hidden[:, 0]  # [B, D]

            def step(so_far: Tensor) -> Tensor:
                dec.step(so_far[:, -1:])
                return dec.last_hidden[:, 0]  # d_i [B, D]

            t = self._target_repr(self.target_tokens(interaction))  # [B, D]
            out = self.labeller(t.to(d0.dtype), d0, s2s.t5.shared.weight, step, l, allowed_ids=self.code_ids)
        finally:
            self.train(was_training)
        return out.tokens  # [B, l]

    @torch.no_grad()
    def collect_labels(self, batches) -> int:
        """Label every sample of ``batches`` (an iterable of interactions) with the current model."""
        keys: list[bytes] = []
        chunks: list[Tensor] = []
        for interaction in batches:
            interaction = interaction.to(self.seq2seq.item_tokens.device)
            chunks.append(self.label_batch(interaction).cpu())
            keys.extend(self._keys(interaction))
        tokens = torch.cat(chunks) if chunks else torch.zeros(0, self.reasoning_len, dtype=torch.long)
        self._labels = {k: i for i, k in enumerate(keys)}
        self._label_tokens = tokens
        return len(keys)

    def label_statistics(self) -> dict[str, list]:
        """:func:`label_statistics` of the collected labels ({} before any collection)."""
        tokens = self._label_tokens
        return {} if tokens is None or tokens.numel() == 0 else label_statistics(tokens)

    @torch.no_grad()
    def thought_diagnostics(self, interaction) -> dict[str, float]:
        """Mean target NLL after the collected (gold) thoughts and after the model's own best thoughts
        (a beam over the reasoning tokens) on one batch: the gap says whether inference finds the
        thoughts SFT trains on."""
        l, s2s = self.reasoning_len, self.seq2seq
        if l == 0:
            return {}
        interaction = interaction.to(s2s.item_tokens.device)
        was_training = self.training
        self.eval()
        try:
            ids, mask = self.history_tokens(interaction)
            gold = self.reasoning_labels(interaction)  # [B, l]
            own = s2s.beam_search(ids, mask, self.num_beams, free_steps=l, item_levels=False).tokens[:, 0]  # [B, l]
            enc, emask = s2s.encode_for_decoding(ids, mask)
            target = self.target_tokens(interaction)[:, None, None]  # [B, 1, 1, m]
            after = {name: -s2s.score_continuations(enc, emask, thought[:, None], target).mean().item()
                     for name, thought in (("gold", gold), ("own", own))}
        finally:
            self.train(was_training)
        return {"target_nll_after_gold_thoughts": round(after["gold"], 4),
                "target_nll_after_own_thoughts": round(after["own"], 4)}

    def reasoning_labels(self, interaction) -> Tensor:
        """Collected labels of a batch [B, l]; samples never collected are labelled now."""
        b = interaction[self.POS_ITEM_ID].shape[0]
        device = self.seq2seq.item_tokens.device
        if self.reasoning_len == 0:
            return torch.zeros(b, 0, dtype=torch.long, device=device)
        rows = [self._labels.get(k, -1) for k in self._keys(interaction)] if self._labels else [-1] * b
        rows_t = torch.tensor(rows, dtype=torch.long)
        missing = rows_t < 0
        if not missing.any():
            return self._label_tokens[rows_t].to(device)
        if not self._warned_unlabelled:
            logger.warning("SFT batch with %d/%d samples without collected labels: labelling them now",
                           int(missing.sum()), b)
            self._warned_unlabelled = True
        fresh = self.label_batch(interaction)  # [B, l]
        if missing.all():
            return fresh
        known = self._label_tokens[rows_t.clamp(min=0)].to(device)
        return torch.where(missing.to(device)[:, None], fresh, known)
