"""One trainer for multi-stage methods: runs the model's stages in order, each a RecBole fit.

The model declares its stages (:class:`StagedModel.build_stages`, a list of
:class:`~recbole_ext.trainers.stages.Stage`); the ``stages`` key picks an ordered subset
(``--stages=pt,sft``). Each stage gets its own learning rate, epoch budget and per-step schedule
(:class:`~recbole_ext.trainers.stages.StageSchedule`), a fresh optimizer, fresh early-stopping
counters and its own best checkpoint; RecBole's ``fit`` does the rest, selecting on validation
NDCG@10 with the stage's own decoding. After a stage its best weights are loaded and the next
stage starts from them.

Stage cache (:mod:`recbole_ext.trainers.stage_cache`): each stage's best weights are stored under
``stage_cache_dir`` (~ = ``<recbole_ext cache>/stages/<dataset>``), keyed by the stage's own
typed config and schedule (``Stage.key_config``), the previous stage's key and the data key. The
data key hashes the dataset and split sizes, the semantic IDs, and every config key that no stage
claims, except those that cannot change training (:data:`NOT_TRAINING_KEYS`): a key nobody
declared makes stages retrain, never reuse a stale stage. A later run with the same keys loads the
stage instead of training it, and still validates and tests it. ``stage_cache: False`` turns the
cache off. In a distributed run rank 0 writes the cache and the other ranks wait for it; a stage is taken
from the cache only when every rank finds it.

Incumbent (``stage_incumbent``, default on): every stage after the first starts with the incoming
weights validated in its own decoding as the best so far, so early stopping can only return weights
at least as good on validation as those it started from (without it, RL once returned weights
worse than the SFT weights it started from); the stage row keeps both (``incoming_valid``,
``kept_incoming``).

Testing: the runner calls ``evaluate(test_data, load_best_model=True)`` once; this trainer tests
every stage in turn and returns the last stage's result, so the record's top-level valid/test are
the last stage's, and ``record_stages()`` gives one row per stage (the paper's PT / SFT / RL rows)
with its per-user test values, decoding statistics and training statistics.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from recbole_ext import distributed
from recbole_ext.config import RUN_LOCAL_KEYS
from recbole_ext.metrics import metric_values
from recbole_ext.trainers.generative import GenerativeTrainer
from recbole_ext.trainers.lr_schedule import StepSchedule
from recbole_ext.trainers.stage_cache import StageCache, canonical, stage_key
from recbole_ext.trainers.stages import Stage, read_config, select_stages

logger = logging.getLogger(__name__)

#: Bump when a change of the code changes what a stage trains (invalidates every cached stage; a change
#: to one model's stages bumps that model class's ``STAGE_CACHE_REVISION`` instead).
STAGE_CACHE_VERSION = 2
#: Config keys that cannot change what a stage trains: where things are written, which device and
#: logging (:data:`~recbole_ext.config.RUN_LOCAL_KEYS`), the stage selection and cache switch, and
#: the evaluation batch size.
NOT_TRAINING_KEYS = RUN_LOCAL_KEYS | {"stages", "stage_cache", "eval_batch_size"}


class StagedModel(Protocol):
    """A model trained by :class:`StagedTrainer`."""

    free_steps: int

    def build_stages(self, config) -> list[Stage]:
        """Every stage of the method, in training order."""
        ...


@dataclass(frozen=True)
class StagedSettings:
    """The trainer's own keys (defaults in the model's YAML)."""

    stage_cache: bool
    stage_cache_dir: str | None
    stage_incumbent: bool


@dataclass
class StageRun:
    """What one stage produced (for the test pass and the run record)."""

    stage: Stage
    key: str
    state: dict[str, torch.Tensor]
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    per_user: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StagedTrainer(GenerativeTrainer):
    """Runs the model's stages in order; see the module docstring."""

    def __init__(self, config, model):
        super().__init__(config, model)
        if not callable(getattr(type(model), "build_stages", None)):
            raise TypeError(f"{type(model).__name__} declares no stages (build_stages); train it with GenerativeTrainer")
        self.all_stages = model.build_stages(config)  # every stage: their keys define the data key
        self.stages = select_stages(self.all_stages, config["stages"])
        settings = read_config(StagedSettings, config)
        root = settings.stage_cache_dir
        if not root:
            from recbole_ext.data import default_cache_dir

            root = default_cache_dir() / "stages" / str(config["dataset"])
        self.cache = StageCache(root, enabled=settings.stage_cache)
        self.incumbent = settings.stage_incumbent
        self.stage_runs: list[StageRun] = []
        self.stage: Stage | None = None
        self._n_train = None

    # --- keys ----------------------------------------------------------------------------------
    def data_key(self) -> str:
        """Dataset, split, semantic IDs and every config key no stage claims, hashed."""
        claimed = set().union(*(s.claimed_keys() for s in self.all_stages))
        # keys that only change how the test set is decoded (validation, hence training, ignores them)
        claimed |= set(getattr(type(self.model), "TEST_ONLY_KEYS", ()))
        cfg = distributed.single_process_config(self.config.final_config_dict)
        shared = {k: v for k, v in cfg.items() if k not in claimed and k not in NOT_TRAINING_KEYS}
        h = hashlib.sha256()
        h.update(repr((STAGE_CACHE_VERSION, canonical(shared))).encode())
        revision = getattr(type(self.model), "STAGE_CACHE_REVISION", 0)  # one model's own bumps (0: none yet)
        if revision:  # enters only when set, so the other models' cached stages stay valid
            h.update(repr(("model revision", revision)).encode())
        h.update(self.model.seq2seq.item_codes.detach().cpu().numpy().tobytes())
        h.update(repr((self.model.n_items, self._n_train)).encode())
        return h.hexdigest()[:20]

    # --- stages --------------------------------------------------------------------------------
    def start_stage(self, stage: Stage) -> None:
        """Fresh optimizer (stage learning rate), epoch budget, schedule and early-stopping state."""
        sched = stage.schedule
        self.stage = stage
        self.epochs = sched.epochs
        eval_step = int(self.config["eval_step"])
        self.eval_step = min(eval_step, self.epochs) if self.epochs > 0 else eval_step
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.model.free_steps = stage.decode_free_steps(self.model)
        self.optimizer = self._build_optimizer(params=self.model.parameters(), learning_rate=sched.learning_rate)
        self.schedule = StepSchedule(sched.warmup_steps, sched.lr_decay)
        self.time_budget_s = sched.train_time_budget_s
        self.saved_model_file = os.path.join(
            self.checkpoint_dir, f"{self.config['model']}-{stage.name}-{time.strftime('%b-%d-%Y_%H-%M-%S')}.pth")
        self.saved_model_file = distributed.broadcast_object(self.saved_model_file)  # one file for all ranks
        logger.info("stage %s: learning rate %g, at most %d epochs", stage.name, sched.learning_rate, self.epochs)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._n_train = getattr(train_data, "sample_size", None)
        data_key = self.data_key()
        previous = None
        score, result = -1.0, None
        for stage in self.stages:
            key = stage_key(stage.name, stage.key_config(), previous, data_key)
            self.start_stage(stage)
            hit = self.cache.load(stage.name, key)
            if not distributed.all_agree(hit is not None):
                hit = None
            start = time.perf_counter()
            stage.reset_statistics()
            stage.notes = {}
            incoming = None
            if hit is not None:
                self.model.load_state_dict(hit[0], strict=True)
                logger.info("stage %s loaded from cache (key %s): not retrained", stage.name, key)
                score, result = self._valid_epoch(valid_data, show_progress=show_progress)
                epochs, s_per_epoch = 0, None
            else:
                stage.begin(self.model)
                incoming = self.set_incumbent(valid_data, saved, show_progress) if previous is not None else None
                n_before = len(self.epoch_seconds)
                score, result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
                epochs = len(self.epoch_seconds) - n_before
                s_per_epoch = round(sum(self.epoch_seconds[n_before:]) / epochs, 3) if epochs else None
                if saved and os.path.isfile(self.saved_model_file):
                    best = distributed.load_checkpoint(self.saved_model_file, self.device)
                    self.model.load_state_dict(best["state_dict"])
                if result is None:  # no validation ran (epochs = 0): validate what we have
                    score, result = self._valid_epoch(valid_data, show_progress=show_progress)
                if distributed.is_main():
                    self.cache.save(stage.name, key, self.model.state_dict(),
                                    {"config": stage.key_config(), "previous": previous, "data_key": data_key,
                                     "valid": metric_values(result)})
                distributed.barrier()
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            extra: dict[str, Any] = {"cached": hit is not None, "cache_key": key,
                                     "train_s": round(time.perf_counter() - start, 3), "epochs": epochs,
                                     "s_per_epoch": s_per_epoch,  # this stage's training epochs only
                                     "lr_schedule": {"warmup_steps": stage.schedule.warmup_steps,
                                                     "decay": stage.schedule.lr_decay}}
            if hit is None and incoming is not None:
                extra["incoming_valid"] = metric_values(incoming)  # the incumbent: the weights the stage started from
                extra["kept_incoming"] = result is incoming  # no epoch beat them
            if hit is None and stage.statistics():
                extra[f"{stage.name}_stats"] = stage.statistics()  # over the stage's last epoch
            if hit is None and stage.notes:
                extra.update(stage.notes)
            self.stage_runs.append(StageRun(stage, key, state, valid=metric_values(result), extra=extra))
            logger.info("stage %s done: valid %s", stage.name, metric_values(result))
            previous = key
        self.best_valid_score, self.best_valid_result = score, result
        return score, result

    def set_incumbent(self, valid_data, saved: bool, show_progress: bool) -> dict | None:
        """With ``stage_incumbent``, validate the incoming weights in this stage's decoding and make
        them the best so far: the stage returns them unless an epoch matches or beats them. Returns
        their validation result (None when off)."""
        if not self.incumbent or not valid_data:
            return None
        score, result = self._valid_epoch(valid_data, show_progress=show_progress)
        self.best_valid_score, self.best_valid_result = score, result
        if saved:
            self._save_checkpoint(-1, verbose=False)
        logger.info("stage %s starts from validated incumbent: %s", self.stage.name, metric_values(result))
        return result

    def epoch_batches(self, train_data, epoch_idx: int):
        """The stage's batches over the (possibly device-resident) training rows."""
        return self.stage.batches(self.training_batches(train_data), epoch_idx)

    def set_train_mode(self) -> None:
        self.stage.train_mode(self.model)

    def run_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        stage = self.stage
        stage.reset_statistics()
        distributed.set_sampler_epoch(train_data, epoch_idx)  # relabelling sees this epoch's shard
        stage.begin_epoch(self.model, train_data, epoch_idx)
        loss = super().run_epoch(train_data, epoch_idx, loss_func=functools.partial(stage.loss, self.model),
                                 show_progress=show_progress)
        if stage.statistics():
            logger.info("%s epoch %d: %s", stage.name, epoch_idx, stage.statistics())
        return loss

    # --- testing -------------------------------------------------------------------------------
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """Validation inside ``fit`` as usual; the final test (``load_best_model``) tests each stage."""
        if not load_best_model or not self.stage_runs or model_file is not None:
            return super().evaluate(eval_data, load_best_model=load_best_model, model_file=model_file,
                                    show_progress=show_progress)
        result = None
        # a model may decode its test set differently from validation (LASAR's test_decoding)
        self.model.evaluating_test = True
        try:
            for run in self.stage_runs:
                self.model.load_state_dict(run.state)
                self.model.free_steps = run.stage.decode_free_steps(self.model)
                result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
                run.test = metric_values(result)
                run.per_user = self.per_user()
                run.extra.update(self.model.record_extra())
                logger.info("stage %s test: %s", run.stage.name, run.test)
                self.test_variants(run, eval_data, show_progress)
        finally:
            self.model.evaluating_test = False
        return result

    def test_variants(self, run: StageRun, eval_data, show_progress: bool) -> None:
        """Other decodings of the same weights on the same test users (``model.test_variants(stage)``,
        e.g. LASAR's explicit CoT and no-reasoning decodings), each into ``extra.test_variants``: its
        metrics and the model's statistics that differ from the stage's own (decoding time, depth, ...).
        The stage's own test row is unchanged."""
        variants = getattr(self.model, "test_variants", None)
        for name in variants(run.stage) if variants is not None else ():
            self.model.test_variant = name
            try:
                result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
            finally:
                self.model.test_variant = None
            changed = {k: v for k, v in self.model.record_extra().items() if run.extra.get(k) != v}
            run.extra.setdefault("test_variants", {})[name] = {"test": metric_values(result), "extra": changed}
            logger.info("stage %s test, %s decoding: %s", run.stage.name, name, metric_values(result))

    def record_extra(self) -> dict:
        extra = super().record_extra()
        extra["lr_schedule"] = {s.name: {"warmup_steps": s.schedule.warmup_steps, "decay": s.schedule.lr_decay}
                                for s in self.stages}
        return extra

    def record_stages(self) -> list[dict]:
        out = []
        for run in self.stage_runs:
            entry: dict[str, Any] = {"name": run.stage.name, "valid": run.valid, "test": run.test, "extra": run.extra}
            if run.per_user is not None:
                entry["per_user"] = {"test": run.per_user}
            out.append(entry)
        return out
