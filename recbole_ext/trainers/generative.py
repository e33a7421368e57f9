"""Trainer for the semantic-ID generators: RecBole's Trainer plus bf16 on GPU and loud NaN stops.

RecBole's own ``_train_epoch`` only says "Training loss is nan". Ours names the epoch and step and
where the best checkpoint so far is kept, and uses bf16 autocast on CUDA (``bf16: True``).
"""

from __future__ import annotations

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class GenerativeTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.use_bf16 = bool(config["bf16"]) and torch.device(self.device).type == "cuda"

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        total_loss = None
        batches = self._progress(train_data, epoch_idx, show_progress)
        for step, interaction in enumerate(batches):
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16):
                loss = loss_func(interaction)
            value = loss.item()
            if not torch.isfinite(torch.tensor(value)):
                raise NonFiniteLossError(
                    f"training loss is {value} at epoch {epoch_idx}, step {step}; the best checkpoint so far "
                    f"is kept at {self.saved_model_file}. Lower learning_rate or set clip_grad_norm."
                )
            total_loss = value if total_loss is None else total_loss + value
            loss.backward()
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
        return total_loss

    def _progress(self, train_data, epoch_idx, show_progress):
        if not show_progress:
            return train_data
        from tqdm import tqdm

        return tqdm(train_data, total=len(train_data), ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))

    def evaluate(self, eval_data, *args, **kwargs):
        if hasattr(self.model, "reset_decode_stats"):
            self.model.reset_decode_stats()
        return super().evaluate(eval_data, *args, **kwargs)
