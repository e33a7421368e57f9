"""A tiny plugin model for the foundation tests: mean of the history's item embeddings."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_ext.trainers.reporting import RecordsExtras


class MeanPoolRec(RecordsExtras, SequentialRecommender):
    """Scores every item by the dot product with the mean embedding of the history."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding = nn.Embedding(self.n_items, config["embedding_size"], padding_idx=0)
        self.loss = nn.CrossEntropyLoss()

    def _user(self, interaction):
        items = interaction[self.ITEM_SEQ]  # [B, L]
        mask = (items > 0).float().unsqueeze(-1)  # [B, L, 1]
        return (self.embedding(items) * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, H]

    def calculate_loss(self, interaction):
        logits = self._user(interaction) @ self.embedding.weight.T  # [B, n_items]
        return self.loss(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        return (self._user(interaction) * self.embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return self._user(interaction) @ self.embedding.weight.T  # [B, n_items]

    def record_extra(self):
        return {"pooling": "mean"}


class ExplodingRec(MeanPoolRec):
    """Fails during training: a crashed run must leave no record behind."""

    def calculate_loss(self, interaction):
        raise RuntimeError("boom in calculate_loss")


class EarlyPeakRec(MeanPoolRec):
    """Scores items by a learned bias that its first training step sets to the items' popularity and
    every later step turns into anti-popularity: validation peaks after the first epoch, then collapses
    (with ``learner: sgd``, ``learning_rate: 1`` and one batch per epoch)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.bias = nn.Parameter(torch.zeros(self.n_items))
        self.steps = 0

    def calculate_loss(self, interaction):
        sign = -1.0 if self.steps == 0 else 3.0  # step 1: bias += count; later: bias -= 3 * count
        self.steps += 1
        return sign * self.bias[interaction[self.POS_ITEM_ID]].sum() + 0.0 * self.embedding.weight.sum()

    def full_sort_predict(self, interaction):
        return self.bias.unsqueeze(0).expand(len(interaction), -1).clone()

    def predict(self, interaction):
        return self.bias[interaction[self.ITEM_ID]]
