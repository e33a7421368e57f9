"""STREAM-Rec's three-stage trainer: PT → SFT → RL, each a RecBole fit with early stopping.

Each stage of ``stages`` (default ``[pt, sft, rl]``) gets its own learning rate and epoch budget
(``<stage>_learning_rate``, ``<stage>_epochs``; ~ = ``learning_rate`` / ``epochs``), a fresh
optimizer, fresh early-stopping counters and its own best checkpoint; RecBole's ``fit`` loop does
the rest, selecting on validation NDCG@10 with the stage's own decoding. After a stage its best
weights are loaded and the next stage starts from them.

Stage cache (:mod:`recbole_ext.trainers.stage_cache`): the best weights of each stage are stored
under ``stage_cache_dir`` (~ = ``<recbole_ext cache>/stages/<dataset>``), keyed by the stage's own
config keys (``<stage>_*`` plus the ones listed in :data:`STAGE_KEYS`), the previous stage's key
and a data key (dataset, split sizes, semantic IDs, backbone shape, seed: :data:`COMMON_KEYS`). A
later run with the same keys loads the stage instead of training it, and still validates and
tests it. Changing an SFT key retrains SFT and RL and reuses PT; ``stage_cache: False`` turns the
cache off.

Testing: the runner calls ``evaluate(test_data, load_best_model=True)`` once; this trainer then
tests every stage in turn (loading its weights) and returns the last stage's result, so the
record's top-level valid/test are the last stage's and ``record_stages()`` gives one entry per
stage (the paper's PT / SFT / RL rows), each with its per-user test values and decoding stats.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recbole_ext.benchmark.records import metric_values
from recbole_ext.trainers.generative import GenerativeTrainer
from recbole_ext.trainers.lr_schedule import StepSchedule
from recbole_ext.trainers.stage_cache import StageCache, stage_key

logger = logging.getLogger(__name__)

#: Bump when a change of the code changes what a stage trains (invalidates every cached stage).
STAGE_CACHE_VERSION = 1
#: Keys every stage depends on (besides the dataset and semantic IDs, hashed separately).
COMMON_KEYS = (
    "model", "seed", "reproducibility", "MAX_ITEM_LIST_LENGTH", "eval_args", "num_layers",
    "num_decoder_layers", "d_model", "d_ff", "num_heads", "d_kv", "dropout_prob", "labeller_inner_size",
    "labeller_dropout", "train_batch_size", "learner", "weight_decay", "clip_grad_norm", "bf16",
    "stopping_step", "eval_step", "valid_metric", "num_beams",
    "constrained_decoding", "neighbor_source", "text_encoder", "sid_tokenizer", "sid_levels",
    "sid_codebook_size", "sid_collision_codebook_size", "sid_seed", "sid_path", "rqvae",
)
#: Keys owned by a stage beyond its ``<stage>_`` prefix.
STAGE_KEYS = {"pt": (), "sft": ("reasoning_len",), "rl": ("reasoning_len",)}


@dataclass
class StageRun:
    """What one stage produced (for the test pass and the run record)."""

    name: str
    key: str
    state: dict[str, torch.Tensor]
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    per_user: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _RolloutBatches:
    """The first ``limit`` batches of ``data`` (all when None), each ``times`` times in a row
    (several GRPO updates per rollout batch)."""

    def __init__(self, data, times: int = 1, limit: int | None = None):
        self.data, self.times, self.limit = data, times, limit

    def __iter__(self):
        for batch in itertools.islice(self.data, self.limit):
            for _ in range(self.times):
                yield batch

    def __len__(self) -> int:
        n = len(self.data) if self.limit is None else min(self.limit, len(self.data))
        return n * self.times


class STREAMRecTrainer(GenerativeTrainer):
    """Runs the configured stages in order; see the module docstring."""

    def __init__(self, config, model):
        super().__init__(config, model)
        from recbole_ext.models.stream_rec import parse_stages

        self.stage_names = parse_stages(config["stages"])
        if self.stage_names[0] != "pt":
            logger.warning("stages %s skip PT: the direct decoder (the SFT/RL reference) is untrained",
                           self.stage_names)
        root = config["stage_cache_dir"]
        if not root:
            from recbole_ext.data import default_cache_dir

            root = default_cache_dir() / "stages" / str(config["dataset"])
        enabled = config["stage_cache"]
        self.cache = StageCache(root, enabled=True if enabled is None else bool(enabled))
        self.stage_runs: list[StageRun] = []
        self._sft_rounds_done = 0

    # --- keys ----------------------------------------------------------------------------------
    def stage_config(self, stage: str) -> dict[str, Any]:
        """The config keys that define ``stage`` (its prefix keys and :data:`STAGE_KEYS`)."""
        cfg = self.config.final_config_dict
        own = {k: v for k, v in cfg.items() if k.startswith(f"{stage}_")}
        own.update({k: cfg.get(k) for k in STAGE_KEYS[stage]})
        own["learning_rate"], own["epochs"] = self._stage_budget(stage)  # after the fallbacks
        own["warmup_steps"], own["lr_decay"] = self._stage_schedule(stage)
        own["train_time_budget_s"] = cfg.get("train_time_budget_s")
        return own

    def _stage_schedule(self, stage: str) -> tuple[int, str]:
        """(warm-up steps, decay) of a stage: ``<stage>_warmup_steps`` / ``<stage>_lr_decay`` or the global ones."""
        warm, decay = self.config[f"{stage}_warmup_steps"], self.config[f"{stage}_lr_decay"]
        return (int((self.config["warmup_steps"] or 0) if warm is None else warm),
                str((self.config["lr_decay"] or "constant") if decay is None else decay))

    def _stage_budget(self, stage: str) -> tuple[float, int]:
        """(learning rate, epochs) of a stage: ``<stage>_learning_rate`` / ``<stage>_epochs`` or the global ones."""
        lr, epochs = self.config[f"{stage}_learning_rate"], self.config[f"{stage}_epochs"]
        return (float(self.config["learning_rate"] if lr is None else lr),
                int(self.config["epochs"] if epochs is None else epochs))

    def data_key(self) -> str:
        """Dataset, split, semantic IDs and every shared setting, hashed."""
        cfg = self.config.final_config_dict
        h = hashlib.sha256()
        h.update(repr((STAGE_CACHE_VERSION, sorted((k, repr(cfg.get(k))) for k in COMMON_KEYS))).encode())
        h.update(str(cfg.get("dataset")).encode())
        h.update(self.model.item_codes.detach().cpu().numpy().tobytes())
        h.update(repr((self.model.n_items, getattr(self, "_n_train", None))).encode())
        return h.hexdigest()[:20]

    # --- stages --------------------------------------------------------------------------------
    def _start_stage(self, name: str) -> None:
        """Fresh optimizer (stage learning rate), epoch budget and early-stopping state."""
        lr, self.epochs = self._stage_budget(name)
        eval_step = int(self.config["eval_step"])
        self.eval_step = min(eval_step, self.epochs) if self.epochs > 0 else eval_step
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.model.set_stage(name)
        self.optimizer = self._build_optimizer(params=self.model.parameters(), learning_rate=lr)
        self.schedule = StepSchedule(*self._stage_schedule(name))
        self.saved_model_file = os.path.join(
            self.checkpoint_dir, f"{self.config['model']}-{name}-{time.strftime('%b-%d-%Y_%H-%M-%S')}.pth")
        self._sft_rounds_done = 0
        logger.info("stage %s: learning rate %g, at most %d epochs", name, lr, self.epochs)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._n_train = getattr(train_data, "sample_size", None)
        data_key = self.data_key()
        previous = None
        score, result = -1.0, None
        for name in self.stage_names:
            key = stage_key(name, self.stage_config(name), previous, data_key)
            self._start_stage(name)
            hit = self.cache.load(name, key)
            start = time.perf_counter()
            if hit is not None:
                self.model.load_state_dict(hit[0], strict=True)
                logger.info("stage %s loaded from cache (key %s): not retrained", name, key)
                score, result = self._valid_epoch(valid_data, show_progress=show_progress)
                epochs = 0
            else:
                self.model.begin_stage(name)
                n_before = len(getattr(self, "epoch_seconds", []))
                score, result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
                epochs = len(getattr(self, "epoch_seconds", [])) - n_before
                if saved and os.path.isfile(self.saved_model_file):
                    best = torch.load(self.saved_model_file, map_location=self.device)
                    self.model.load_state_dict(best["state_dict"])
                if result is None:  # no validation ran (epochs = 0): validate what we have
                    score, result = self._valid_epoch(valid_data, show_progress=show_progress)
                self.cache.save(name, key, self.model.state_dict(),
                                {"config": self.stage_config(name), "previous": previous, "data_key": data_key,
                                 "valid": metric_values(result)})
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            extra: dict[str, Any] = {"cached": hit is not None, "cache_key": key,
                                     "train_s": round(time.perf_counter() - start, 3), "epochs": epochs}
            if hit is None and name == "rl":
                extra["rl_stats"] = self.model.rl_stats_mean()  # over the stage's last epoch
            if hit is None and name == "sft":
                extra["sft_stats"] = self.model.sft_stats()
            self.stage_runs.append(StageRun(name, key, state, valid=metric_values(result), extra=extra))
            logger.info("stage %s done: valid %s", name, metric_values(result))
            previous = key
        self.best_valid_score, self.best_valid_result = score, result
        return score, result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        stage = self.model.stage
        if stage == "sft" and self.model.reasoning_len > 0:
            rounds = self.config["sft_rounds"]  # None: relabel until early stopping ends SFT
            every = max(1, int(self.config["sft_round_epochs"] or 1))
            if (rounds is None or self._sft_rounds_done < int(rounds)) and epoch_idx % every == 0:
                start = time.perf_counter()
                n = self.model.collect_labels(train_data)
                self._sft_rounds_done += 1
                logger.info("SFT round %d/%s: labelled %d samples with %d reasoning tokens in %.1fs",
                            self._sft_rounds_done, rounds or "until early stopping", n, self.model.reasoning_len, time.perf_counter() - start)
        self.model.reset_rl_stats()
        self.model.reset_sft_stats()
        if stage == "rl":
            updates = max(1, self.model.rl_updates)
            limit = self.config["rl_max_batches"]
            if updates > 1 or limit is not None:
                train_data = _RolloutBatches(train_data, updates, None if limit is None else int(limit))
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if stage == "rl":
            logger.info("RL epoch %d: %s", epoch_idx, self.model.rl_stats_mean())
        elif stage == "sft":
            logger.info("SFT epoch %d: %s", epoch_idx, self.model.sft_stats())
        return loss

    # --- testing -------------------------------------------------------------------------------
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """Validation inside ``fit`` as usual; the final test (``load_best_model``) tests each stage."""
        if not load_best_model or not self.stage_runs or model_file is not None:
            return super().evaluate(eval_data, load_best_model=load_best_model, model_file=model_file,
                                    show_progress=show_progress)
        result = None
        for run in self.stage_runs:
            self.model.load_state_dict(run.state)
            self.model.set_stage(run.name)
            if hasattr(self, "last_eval_users"):
                self.last_eval_users = []
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
            run.test = metric_values(result)
            run.per_user = self.per_user() if hasattr(self, "per_user") else None
            if hasattr(self.model, "record_extra"):
                run.extra.update(self.model.record_extra())
            logger.info("stage %s test: %s", run.name, run.test)
        return result

    def record_extra(self) -> dict:
        extra = super().record_extra()
        extra["lr_schedule"] = {
            name: dict(zip(("warmup_steps", "decay"), self._stage_schedule(name))) for name in self.stage_names
        }
        return extra

    def record_stages(self) -> list[dict]:
        out = []
        for run in self.stage_runs:
            entry: dict[str, Any] = {"name": run.name, "valid": run.valid, "test": run.test, "extra": run.extra}
            if run.per_user is not None:
                entry["per_user"] = {"test": run.per_user}
            out.append(entry)
        return out
