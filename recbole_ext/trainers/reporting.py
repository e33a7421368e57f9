"""What a trainer hands the runner for the run record: :class:`ReportingTrainer`.

Every trainer the runner uses is a :class:`ReportingTrainer` (our trainers inherit it; RecBole's
own trainers are given it by :func:`reporting_trainer`). It times training epochs and keeps the
last evaluation's per-user metric values, and declares the three things a record may add:
``per_user()``, ``record_extra()`` and ``record_stages()`` (one row per training stage; [] for a
single-stage trainer). A model adds its own facts by mixing in :class:`RecordsExtras`.

In a distributed run (:mod:`recbole_ext.distributed`) each rank evaluates its shard of the users (RecBole's
``DistributedSampler``); the collected per-user rows are gathered into single-process order before
RecBole's evaluator runs, so every rank gets the exact metrics and per-user values of a single-process
pass (RecBole's own ``_map_reduce`` averages rounded per-rank metrics, counting repeated samples). Rank 0
writes checkpoints, the others wait for them; RecBole's trainers keep their DDP gradient hook, ours
(``explicit_grad_sync``) average gradients themselves.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch
from recbole.trainer import Trainer

from recbole_ext import distributed
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


#: Collected evaluation tensors with one row per evaluated sample (RecBole's ``Collector``).
ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


class ReportingTrainer(Trainer):
    """A RecBole trainer that reports epoch times, per-user values, record extras and stage rows."""

    #: True for trainers that average gradients themselves (:func:`~recbole_ext.distributed.average_gradients`)
    #: rather than through RecBole's ``DistributedDataParallel`` hook in its ``_train_epoch``.
    explicit_grad_sync = False

    def __init__(self, config, model):
        if distributed.current() is None:
            super().__init__(config, model)
        else:
            self._init_distributed(config, model)
        self._eval_positions: list[int] | None = None
        self._eval_gathered = False
        self.epoch_seconds: list[float] = []
        self.last_eval_users: list[int] = []
        self.last_eval_struct = None
        self._eval_progress: Progress | None = None
        evaluate_struct = self.evaluator.evaluate

        def keep_struct(struct):
            struct = self._gather_struct(struct)
            self.last_eval_struct = struct
            return evaluate_struct(struct)

        self.evaluator.evaluate = keep_struct

    def _init_distributed(self, config, model) -> None:
        """RecBole's ``__init__`` without its DDP wrapper (it passes ``device_ids=[local_rank]``, which DDP
        refuses for a CPU module), then the wrapper its ``_train_epoch`` needs (RecBole's trainers) or rank
        0's weights on every rank (ours); one checkpoint path for all ranks (RecBole names it by the second)."""
        config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = False
        if self.explicit_grad_sync:
            distributed.broadcast_module(self.model)
        else:
            self.distributed_model = distributed.wrap_for_recbole(self.model)
        self.saved_model_file = distributed.broadcast_object(self.saved_model_file)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's (rank 0 writes); every rank waits until the file is there."""
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        distributed.barrier()

    def _gather_struct(self, struct):
        """In a distributed evaluation, every rank's collected rows and user ids in single-process order."""
        positions = self._eval_positions
        if positions is None:
            return struct
        rows = {k: struct[k] for k in ROW_KEYS if k in struct and torch.is_tensor(struct[k])}
        ok = len(self.last_eval_users) == len(positions) and all(len(v) == len(positions) for v in rows.values())
        if not distributed.all_agree(ok):  # e.g. sampled-negative evaluation: RecBole's own reduction
            return struct
        _, gathered = distributed.gather_rows(positions, {**rows, "user_ids": list(self.last_eval_users)})
        for key in rows:
            struct[key] = gathered[key]
        self.last_eval_users = [int(u) for u in gathered["user_ids"]]
        self._eval_gathered = True
        return struct

    def _map_reduce(self, result, num_sample):
        """RecBole's reduction of per-rank metrics, unless the rows were gathered (then ``result`` is exact)."""
        if self._eval_gathered:
            return result
        return super()._map_reduce(result, num_sample)

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

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self.last_eval_users = []
        self._eval_positions = distributed.loader_positions(eval_data)
        self._eval_gathered = False
        if load_best_model and eval_data and not distributed.is_main():  # rank 0's checkpoint (see load_checkpoint)
            checkpoint = distributed.load_checkpoint(model_file or self.saved_model_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            load_best_model, model_file = False, None
        self._eval_progress = Progress(len(eval_data), "evaluate", bar=False if show_progress else None)
        try:
            return super().evaluate(eval_data, load_best_model=load_best_model, model_file=model_file,
                                    show_progress=show_progress)
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
