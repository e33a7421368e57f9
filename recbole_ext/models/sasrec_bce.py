"""SASRec trained with the SASRec paper's loss: binary cross-entropy on one sampled negative.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, Eq. 6:
``-log sigma(r_pos) - log(1 - sigma(r_neg))`` with one uniformly drawn negative per positive.
RecBole's SASRec offers CE (all items) and BPR (``-log sigma(r_pos - r_neg)``) only; which loss a
baseline uses decides many published comparisons, so this row exists beside RecBole's CE one.
Everything else (architecture, scoring, full-ranking evaluation) is RecBole's SASRec unchanged;
the negative sampler is RecBole's (``train_neg_sample_args``, properties/model/SASRecBCE.yaml).
"""

from __future__ import annotations

import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch.nn import functional as F


class SASRecBCE(SASRec):
    """RecBole's SASRec with the paper's BCE loss (``loss_type: BCE``)."""

    input_type = InputType.PAIRWISE  # RecBole's sampler pairs every positive with NEG_ITEM_ID

    def __init__(self, config, dataset):
        if config["loss_type"] != "BCE":
            raise ValueError(f"SASRecBCE trains with loss_type BCE, got {config['loss_type']!r} (use SASRec for CE)")
        config["loss_type"] = "BPR"  # SASRec's constructor knows BPR and CE only; the loss is ours
        try:
            super().__init__(config, dataset)
        finally:
            config["loss_type"] = "BCE"
        self.loss_type = "BCE"
        self.loss_fct = None

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, H]
        pos = (seq_output * self.item_embedding(interaction[self.POS_ITEM_ID])).sum(-1)  # [B]
        neg = (seq_output * self.item_embedding(interaction[self.NEG_ITEM_ID])).sum(-1)  # [B]
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg))
