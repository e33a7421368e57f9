"""What a trainer hands the runner for the run record: :class:`ReportingTrainer`.

Every trainer the runner uses is a :class:`ReportingTrainer` (our trainers inherit it; RecBole's
own trainers are given it by :func:`reporting_trainer`). It times training epochs and keeps the
last evaluation's per-user metric values, and declares the three things a record may add:
``per_user()``, ``record_extra()`` and ``record_stages()`` (one row per training stage; [] for a
single-stage trainer). A model adds its own facts by mixing in :class:`RecordsExtras`.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from recbole.trainer import Trainer

from recbole_ext.progress import Progress, ProgressLoader


class RecordsExtras:
    """A model that adds facts to its run record (mix in and override ``record_extra``)."""

    def record_extra(self) -> dict:
        """Facts of the last evaluation (decoding time, invalid rate, ...) for the run record."""
        return {}


def per_user_metrics(struct: Any, config: Any) -> dict[str, list[float]]:
    """Per-user metric values from RecBole's collected ``rec.topk``, via RecBole's own metrics."""
    from recbole.evaluator.metrics import NDCG, Hit

    out: dict[str, list[float]] = {}
    for name, metric_class in (("hit", Hit), ("ndcg", NDCG)):
        metric = metric_class(config)
        pos_index, pos_len = metric.used_info(struct)
        values = metric.metric_info(pos_index, pos_len) if name == "ndcg" else metric.metric_info(pos_index)
        for k in config["topk"]:
            out[f"{name}@{k}"] = [float(v) for v in values[:, k - 1]]
    return out


class ReportingTrainer(Trainer):
    """A RecBole trainer that reports epoch times, per-user values, record extras and stage rows."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_seconds: list[float] = []
        self.last_eval_users: list[int] = []
        self.last_eval_struct = None
        self._eval_progress: Progress | None = None
        evaluate_struct = self.evaluator.evaluate

        def keep_struct(struct):
            self.last_eval_struct = struct
            return evaluate_struct(struct)

        self.evaluator.evaluate = keep_struct

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        start = time.perf_counter()
        loss = self.run_epoch(train_data, epoch_idx, *args, **kwargs)
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    def run_epoch(self, train_data, epoch_idx, *args, **kwargs):
        """One training epoch (timed by ``_train_epoch``); subclasses override this, not ``_train_epoch``.
        RecBole's loop sees the loader wrapped so that it logs progress (RecBole's own bar, when
        ``show_progress`` asks for it, stays the only bar)."""
        quiet = bool(kwargs.get("show_progress"))
        loader = ProgressLoader(train_data, f"train epoch {epoch_idx}", bar=False if quiet else None)
        return super()._train_epoch(loader, epoch_idx, *args, **kwargs)

    def evaluate(self, eval_data, *args, **kwargs):
        self.last_eval_users = []
        self._eval_progress = Progress(len(eval_data), "evaluate", bar=False if kwargs.get("show_progress") else None)
        try:
            return super().evaluate(eval_data, *args, **kwargs)
        finally:
            self._eval_progress.close()
            self._eval_progress = None

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        self.last_eval_users.extend(int(u) for u in interaction[self.config["USER_ID_FIELD"]].tolist())
        if self._eval_progress is not None:
            self._eval_progress.tick()
        return interaction, scores, positive_u, positive_i

    # --- what the record gets --------------------------------------------------------------------
    def per_user(self) -> dict | None:
        """{"user_ids": [...], "hit@5": [...], ...} of the last evaluation (internal user ids), or None."""
        if self.last_eval_struct is None or not self.last_eval_users:
            return None
        values = per_user_metrics(self.last_eval_struct, self.config)
        if len(self.last_eval_users) != len(next(iter(values.values()))):
            return None
        return {"user_ids": list(self.last_eval_users), **values}

    def record_extra(self) -> dict:
        """Method-specific facts of the run: the model's (:class:`RecordsExtras`), then the trainer's."""
        return self.model.record_extra() if isinstance(self.model, RecordsExtras) else {}

    def record_stages(self) -> list[dict]:
        """One entry per training stage: name, valid, test, per_user ({"test": ...}), extra."""
        return []


@functools.cache
def reporting_trainer(trainer_class: type) -> type:
    """``trainer_class`` itself when it reports, else RecBole's trainer with :class:`ReportingTrainer` mixed in."""
    if issubclass(trainer_class, ReportingTrainer):
        return trainer_class
    if trainer_class is Trainer:
        return ReportingTrainer
    return type(trainer_class.__name__, (ReportingTrainer, trainer_class), {"__module__": __name__})
