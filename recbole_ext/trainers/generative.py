"""Trainer for the semantic-ID generators: RecBole's Trainer plus bf16 on GPU and loud NaN stops.

RecBole's own ``_train_epoch`` only says "Training loss is nan". Ours names the epoch and step and
where the best checkpoint so far is kept, uses bf16 autocast on CUDA (``bf16: True``) and, with
``data_on_device: True``, cuts training batches from interactions kept on the training device
(:mod:`recbole_ext.trainers.device_batches`). It adds a per-step learning-rate schedule
(``warmup_steps`` or ``warmup_ratio``, ``lr_decay``; :mod:`recbole_ext.trainers.lr_schedule`; its
horizon is set at the start of each ``fit``: epochs x batches per epoch) and a wall-clock budget
per ``fit`` (``train_time_budget_s``): once spent, training stops after the current epoch's
validation and the best checkpoint so far is what gets tested; the record says so.

Validation runs every ``eval_step`` epochs (RecBole's key) and early stopping waits
``stopping_step`` validations (RecBole's patience). With ``valid_loss_stopping: True`` (TIGER;
a staged trainer refuses it: each stage selects on its own decoding) a validation is the
teacher-forced loss of the validation targets (the model's ``calculate_loss``, eval mode, no beam
search), lower is better; after training, the best checkpoint is validated once by ranking
(NDCG@10 ...) so the record's ``valid`` holds the protocol's metrics, and ``extra.best_valid_loss``
the selecting loss.

Distributed (:mod:`recbole_ext.distributed`): each rank trains on its shard of every epoch (RecBole's
``DistributedSampler``, reshuffled per epoch with the same seed on every rank) and gradients are averaged
explicitly after ``backward`` (our models call submodules directly, which a DDP wrapper would not see);
the validation loss and the time budget are decided once for all ranks.
"""

from __future__ import annotations

import logging
import math
import os
import time

import torch
from recbole.data.dataloader import AbstractDataLoader

from recbole_ext import distributed
from recbole_ext.progress import track
from recbole_ext.trainers.device_batches import device_batches_for
from recbole_ext.trainers.lr_schedule import StepSchedule
from recbole_ext.trainers.reporting import ReportingTrainer

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class _TimeBudgetSpent(Exception):
    """Raised at the start of an epoch once ``train_time_budget_s`` is spent; caught by ``fit``."""


class GenerativeTrainer(ReportingTrainer):
    explicit_grad_sync = True

    def __init__(self, config, model):
        super().__init__(config, model)
        ratio = config["warmup_ratio"]
        self.warmup_ratio = None if ratio is None else float(ratio)
        self.schedule = StepSchedule(int(config["warmup_steps"] or 0), str(config["lr_decay"] or "constant"),
                                     self.warmup_ratio)
        self.valid_loss_stopping = bool(config["valid_loss_stopping"])
        if self.valid_loss_stopping:
            if callable(getattr(type(model), "build_stages", None)):
                raise ValueError(f"valid_loss_stopping is not supported for {type(model).__name__}: its stages "
                                 "select on their own decoding (set valid_loss_stopping: False)")
            self.valid_metric, self.valid_metric_bigger = "valid_loss", False
            self.best_valid_score = math.inf
        self.best_valid_loss: float | None = None
        budget = config["train_time_budget_s"]
        self.time_budget_s = float(budget) if budget is not None else None
        self.time_budget_hit = False
        self._fit_started = 0.0
        self.use_bf16 = bool(config["bf16"]) and torch.device(self.device).type == "cuda"
        self.data_on_device = bool(config["data_on_device"])
        self._device_batches: dict[int, object] = {}  # id(loader) -> its DeviceBatches (or the loader)

    def training_batches(self, train_data):
        """What an epoch iterates: the loader itself, or its rows kept on the device."""
        if not self.data_on_device or not isinstance(train_data, AbstractDataLoader):
            return train_data
        key = id(train_data)
        if key not in self._device_batches:
            batches, why = device_batches_for(train_data, self.device)
            if batches is None:
                logger.info("data_on_device: using RecBole's loader (%s)", why)
            else:
                logger.info("data_on_device: %d training rows kept on %s", batches.n, batches.device)
            self._device_batches[key] = (train_data, batches or train_data)  # the loader is kept alive
        return self._device_batches[key][1]

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's fit, ended early (best checkpoint kept) once the time budget is spent."""
        self._fit_started = time.perf_counter()
        self._set_schedule_horizon(train_data)
        try:
            score, result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        except _TimeBudgetSpent:
            score, result = self.best_valid_score, self.best_valid_result
        if self.valid_loss_stopping and result is not None:
            score, result = self._rank_best_on_valid(valid_data, score, saved, show_progress)
        return score, result

    def _set_schedule_horizon(self, train_data) -> None:
        """Horizon of the current schedule: (epochs left) x (batches per epoch)."""
        try:
            per_epoch = len(self.training_batches(train_data))
        except TypeError:  # an iterable without a length: no horizon (cosine then refuses to step)
            return
        self.schedule.set_horizon(max(0, self.epochs - self.start_epoch) * per_epoch)
        if self.warmup_ratio is not None and self.schedule.warmup_ratio is None:
            logger.warning("warmup_ratio=%g is not applied to this schedule (%s builds its own from "
                           "warmup_steps)", self.warmup_ratio, type(self).__name__)

    @torch.no_grad()
    def validation_loss(self, valid_data) -> float:
        """Mean teacher-forced loss (``calculate_loss``, eval mode) over the validation users."""
        was_training = self.model.training
        self.model.eval()
        total, n = 0.0, 0
        try:
            for batch in valid_data:
                interaction = (batch[0] if isinstance(batch, tuple) else batch).to(self.device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16):
                    loss = self.model.calculate_loss(interaction)
                total += float(loss) * len(interaction)
                n += len(interaction)
        finally:
            self.model.train(was_training)
        if distributed.current() is not None:  # every rank's shard (a few repeated samples: the loader pads)
            total, n = distributed.all_reduce_sum([total, n])
        return total / max(1, n)

    def _valid_epoch(self, valid_data, show_progress=False):
        if not self.valid_loss_stopping:
            return super()._valid_epoch(valid_data, show_progress=show_progress)
        loss = self.validation_loss(valid_data)
        return loss, {"valid_loss": loss}

    def _rank_best_on_valid(self, valid_data, best_loss: float, saved: bool, show_progress: bool):
        """Validate the checkpoint the loss selected by ranking, for the record's protocol metrics."""
        self.best_valid_loss = float(best_loss)
        load = saved and os.path.isfile(self.saved_model_file)
        result = dict(self.evaluate(valid_data, load_best_model=load, show_progress=show_progress))
        logger.info("valid_loss_stopping: best valid loss %.6f; its ranking on validation: %s", best_loss, result)
        result["valid_loss"] = self.best_valid_loss
        self.best_valid_result = result
        return best_loss, result

    def _check_time_budget(self, epoch_idx: int) -> None:
        if self.time_budget_s is None or self.best_valid_result is None:  # always validate once
            return
        spent = distributed.broadcast_object(time.perf_counter() - self._fit_started)  # rank 0's clock decides
        if spent >= self.time_budget_s:
            self.time_budget_hit = True
            logger.warning("train_time_budget_s=%g spent (%.0f s) before epoch %d: stopping; the best "
                           "checkpoint so far (valid %s) is kept", self.time_budget_s, spent, epoch_idx,
                           self.best_valid_score)
            raise _TimeBudgetSpent

    def record_extra(self) -> dict:
        """The model's decoding statistics (last evaluation) and this trainer's schedule and budget."""
        return {
            **super().record_extra(),
            "lr_schedule": self.schedule.describe(),
            "time_budget_s": self.time_budget_s,
            "stopped_by_time_budget": self.time_budget_hit,
            "valid_loss_stopping": self.valid_loss_stopping,
            **({"best_valid_loss": self.best_valid_loss} if self.best_valid_loss is not None else {}),
        }

    def epoch_batches(self, train_data, epoch_idx: int):
        """What one epoch iterates: the loader, or its rows kept on the device (:meth:`training_batches`)."""
        return self.training_batches(train_data)

    def set_train_mode(self) -> None:
        self.model.train()

    def run_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._check_time_budget(epoch_idx)
        distributed.set_sampler_epoch(train_data, epoch_idx)
        self.set_train_mode()
        loss_func = loss_func or self.model.calculate_loss
        total_loss = None
        batches = self._progress(self.epoch_batches(train_data, epoch_idx), epoch_idx, show_progress)
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
            distributed.average_gradients(self.model.parameters())
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            if self.schedule.active:
                self.schedule.before_step(self.optimizer)
            self.optimizer.step()
        return total_loss

    def _progress(self, train_data, epoch_idx, show_progress):
        """The epoch's batches with signs of life: a bar on a terminal (or with ``show_progress``),
        else a log line every ~30 s (:mod:`recbole_ext.progress`)."""
        return track(train_data, len(train_data), f"train epoch {epoch_idx}", bar=True if show_progress else None)

    def evaluate(self, eval_data, *args, **kwargs):
        self.model.reset_decode_stats()
        return super().evaluate(eval_data, *args, **kwargs)
