"""Train and test one method on one dataset with RecBole's own data pipeline, trainer and evaluator.

``run()`` is one run in one process (RecBole keeps global state): resolve the model, layer the
config, build RecBole's dataset and dataloaders, train with the model's trainer, test the best
checkpoint, and store one run record. Logs, checkpoints and tensorboard files go to
``<output_dir>/artifacts/<dataset>/<model>/<run_id>/``, never the working directory.

Trainers may add to the record through two optional methods:
``record_stages() -> list[dict]`` (multi-stage models: one entry per stage with ``name``, ``valid``,
``test``, ``per_user``) and ``record_extra() -> dict`` (e.g. invalid-generation rate, decoding time);
a model may define ``record_extra()`` too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recbole_ext import __version__, compat
from recbole_ext.benchmark.records import (
    METRIC_KEYS,
    RecordExistsError,
    config_hash,
    metric_values,
    new_run_id,
    record_path,
    to_jsonable,
    write_record,
)
from recbole_ext.registry import PROJECT_ROOT, resolve

logger = logging.getLogger(__name__)

# Keys that differ between runs without changing what is trained (left out of config_hash).
VOLATILE_KEYS = ("checkpoint_dir", "data_path", "device", "gpu_id", "show_progress", "state", "worker")


class UnknownDatasetError(ValueError):
    """A dataset name with no prepared files and no known source."""


def resolve_dataset(name: str, data_path: str | None) -> str:
    """The absolute ``data_path`` to hand RecBole for ``name``, preparing the dataset if needed.

    Known datasets (``recbole_ext.data.CATALOG``) are downloaded/converted on first use; any other
    name must already have ``<data_path>/<name>/<name>.inter``.
    """
    from recbole_ext.data import CATALOG, ensure_dataset

    try:
        return str(Path(ensure_dataset(name, data_path)).resolve())
    except KeyError:
        root = Path(data_path or os.environ.get("RECBOLE_EXT_DATA", "dataset")).resolve()
        found = sorted(p.parent.name for p in root.glob("*/*.inter") if p.stem == p.parent.name) if root.is_dir() else []
        raise UnknownDatasetError(
            f"unknown dataset {name!r}: not in the catalog ({', '.join(sorted(CATALOG))}) and no "
            f"{root / name / (name + '.inter')}{'; prepared folders there: ' + ', '.join(found) if found else ''}. "
            "Point --data_path (or RECBOLE_EXT_DATA) at the folder holding <name>/<name>.inter."
        ) from None


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


def instrumented(trainer_class: type) -> type:
    """A subclass of ``trainer_class`` that times epochs and keeps the last evaluation's per-user data."""

    class Instrumented(trainer_class):
        def __init__(self, config, model):
            super().__init__(config, model)
            self.epoch_seconds: list[float] = []
            self.last_eval_users: list[int] = []
            self.last_eval_struct = None
            evaluate_struct = self.evaluator.evaluate

            def keep_struct(struct):
                self.last_eval_struct = struct
                return evaluate_struct(struct)

            self.evaluator.evaluate = keep_struct

        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            start = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            self.epoch_seconds.append(time.perf_counter() - start)
            return loss

        def evaluate(self, eval_data, *args, **kwargs):
            self.last_eval_users = []
            return super().evaluate(eval_data, *args, **kwargs)

        def _full_sort_batch_eval(self, batched_data):
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
            self.last_eval_users.extend(int(u) for u in interaction[self.config["USER_ID_FIELD"]].tolist())
            return interaction, scores, positive_u, positive_i

        def per_user(self) -> dict | None:
            if self.last_eval_struct is None or not self.last_eval_users:
                return None
            values = per_user_metrics(self.last_eval_struct, self.config)
            if len(self.last_eval_users) != len(next(iter(values.values()))):
                return None
            return {"user_ids": list(self.last_eval_users), **values}

    Instrumented.__name__ = trainer_class.__name__
    Instrumented.__qualname__ = trainer_class.__qualname__
    return Instrumented


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import recbole
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "recbole": recbole.__version__,
        "recbole_ext": __version__,
        "git_commit": git_commit(),
    }


def describe_device(device: Any) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.cuda.current_device())})"
    return f"cpu ({torch.get_num_threads()} threads)"


def setup_logging(log_file: Path | None = None, level: str = "INFO") -> None:
    """Log to stderr and, when given, to the run's own log file (replacing earlier handlers)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), handlers=handlers, force=True)


@contextlib.contextmanager
def working_directory(path: Path):
    """RecBole writes ``./log_tensorboard`` relative to the cwd: run inside the run's folder."""
    previous = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run(
    model: str,
    dataset: str = "ml-100k",
    overrides: dict[str, Any] | None = None,
    config_files: list[str] | None = None,
    output_dir: str | Path = "results",
    run_id: str | None = None,
) -> dict:
    """Train and test ``model`` on ``dataset``; store and return the run record."""
    compat.apply()
    overrides = dict(overrides or {})
    output_dir = Path(output_dir).resolve()
    run_id = run_id or new_run_id()
    config_files = [str(Path(f).resolve()) for f in (config_files or [])]

    setup_logging(level=overrides.get("state", "INFO"))  # stderr only until the run folder exists
    resolved = resolve(model)  # unknown model → UnknownModelError, before any work
    target = record_path(output_dir, dataset, resolved.name, run_id)
    if target.exists():
        raise RecordExistsError(f"{target} exists; records are never overwritten (pick another --run_id)")
    data_path = resolve_dataset(dataset, overrides.pop("data_path", None))
    from recbole_ext.config import ExtConfig, load_yaml_file

    for file in config_files:  # fail on a bad file before anything is written
        load_yaml_file(file)
    artifacts = output_dir / "artifacts" / dataset / resolved.name / run_id
    setup_logging(artifacts / "run.log", level=overrides.get("state", "INFO"))
    logger.info("run %s: %s on %s, artifacts in %s", run_id, resolved.name, dataset, artifacts)

    with working_directory(artifacts):
        config = ExtConfig(
            resolved,
            dataset,
            config_file_list=config_files,
            config_dict={"checkpoint_dir": str(artifacts / "checkpoints"), "data_path": data_path},
            cmd_dict=overrides,
        )
        record = _train_and_test(config, resolved)
    record.update(run_id=run_id, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_record(output_dir, record)
    _log_result(record)
    return record


def _train_and_test(config: Any, resolved: Any) -> dict:
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    started_with = versions()  # the code that trains, not the code at the end of a long run
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    logger.info("%s", dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = resolved.model_class(config, train_data._dataset).to(config["device"])
    trainer = instrumented(resolved.trainer_class)(config, model)

    start = time.perf_counter()
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    test_s = time.perf_counter() - start

    epochs = len(trainer.epoch_seconds)
    record: dict[str, Any] = {
        "status": "ok",
        "model": resolved.name,
        "dataset": config["dataset"],
        "seed": config["seed"],
        "config": to_jsonable(config.final_config_dict),
        "config_hash": config_hash(config.final_config_dict, ignore=VOLATILE_KEYS),
        "valid": _metrics(best_valid),
        "test": _metrics(test_result),
        "timings": {
            "train_s": round(train_s, 3),
            "test_s": round(test_s, 3),
            "s_per_epoch": round(sum(trainer.epoch_seconds) / epochs, 3) if epochs else None,
            "epochs": epochs,
            "test_ms_per_user": round(1000 * test_s / max(1, len(trainer.last_eval_users)), 3),
        },
        "versions": started_with,
        "device": describe_device(config["device"]),
    }
    per_user = trainer.per_user()
    if per_user is not None:
        record["per_user"] = {"test": _with_user_tokens(per_user, dataset)}
    extra: dict[str, Any] = {}
    for source in (model, trainer):
        if hasattr(source, "record_extra"):
            extra.update(source.record_extra())
    if extra:
        record["extra"] = extra
    if hasattr(trainer, "record_stages"):
        record["stages"] = trainer.record_stages()
        for stage in record["stages"]:
            if stage.get("per_user", {}).get("test"):
                stage["per_user"]["test"] = _with_user_tokens(stage["per_user"]["test"], dataset)
    return record


def _with_user_tokens(per_user: dict, dataset: Any) -> dict:
    """Per-user values keyed by external user tokens: stable across methods, whatever their id mapping."""
    ids = per_user["user_ids"]
    if ids and isinstance(ids[0], str):
        return per_user
    return {**per_user, "user_ids": [str(t) for t in dataset.id2token(dataset.uid_field, ids)]}


def _metrics(result: dict | None) -> dict[str, float | None]:
    values = metric_values(result)
    return {k: values.get(k) for k in METRIC_KEYS}  # every key present, None when not computed


def _log_result(record: dict) -> None:
    from tabulate import tabulate

    rows = [[split, *[record[split][k] for k in METRIC_KEYS]] for split in ("valid", "test")]
    logger.info(
        "%s on %s (%s):\n%s",
        record["model"],
        record["dataset"],
        record["run_id"],
        tabulate(rows, headers=["split", *METRIC_KEYS], floatfmt=".4f"),
    )
