"""Train and test one method on one dataset with RecBole's own data pipeline, trainer and evaluator.

``run()`` is one run in one process (RecBole keeps global state): resolve the model, layer the
config, build RecBole's dataset and dataloaders, train with the model's trainer, test the best
checkpoint, and store one run record. Logs, checkpoints and tensorboard files go to
``<output_dir>/artifacts/<dataset>/<model>/<run_id>/``, never the working directory.

Every trainer is a :class:`~recbole_ext.trainers.reporting.ReportingTrainer` (RecBole's own
trainers get it mixed in by ``reporting_trainer``): it hands the runner epoch times, per-user test
values (``per_user()``), record extras (``record_extra()``: e.g. invalid-generation rate, decoding
time) and stage rows (``record_stages()``: one entry per stage with ``name``, ``valid``, ``test``,
``per_user``; [] for single-stage trainers).

Data-parallel runs (:mod:`recbole_ext.distributed`): ``run(..., nproc=N)`` prepares the run here (config
checks, dataset) and starts N ranks (torch.multiprocessing); under torchrun each process is a rank already.
Every rank trains on its shard and evaluates its share of the users (gathered exactly); rank 0 writes the
one record, after every rank has finished, with ``distributed: {world_size, backend, launcher}`` added. A
rank that fails stops the run: :class:`~recbole_ext.distributed.DistributedRunError`, no record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_ext import compat, distributed
from recbole_ext.benchmark.records import (
    RecordExistsError,
    config_hash,
    new_run_id,
    record_path,
    to_jsonable,
    write_record,
)
from recbole_ext.logs import setup_logging
from recbole_ext.metrics import METRIC_KEYS, metric_values
from recbole_ext.provenance import git_state, run_provenance, versions
from recbole_ext.registry import resolve

logger = logging.getLogger(__name__)


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


def describe_device(device: Any) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.cuda.current_device())})"
    return f"cpu ({torch.get_num_threads()} threads)"


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


@dataclass
class _Plan:
    """Everything a rank needs to train and test once the run is prepared (picklable for spawned ranks)."""

    resolved: Any
    dataset: str
    config_files: list[str]
    file_paths: dict[str, Any]
    overrides: dict[str, Any]
    data_path: str
    output_dir: Path
    run_id: str
    artifacts: Path
    extras: dict[str, Any] = field(default_factory=dict)  # versions, provenance: added to the record


def run(
    model: str,
    dataset: str = "ml-100k",
    overrides: dict[str, Any] | None = None,
    config_files: list[str] | None = None,
    output_dir: str | Path = "results",
    run_id: str | None = None,
    argv: list[str] | None = None,
    nproc: int = 1,
) -> dict:
    """Train and test ``model`` on ``dataset``; store and return the run record.

    ``argv`` is the command line the record stores (default ``sys.argv``; the CLI passes its own).
    ``nproc`` > 1 trains data-parallel on that many processes of this machine (one per visible GPU, or
    CPU processes with gloo); under torchrun the group comes from its environment instead.
    """
    # Taken first: the code and command that train, not the code at the end of a long run.
    git = git_state()
    provenance = run_provenance(argv, git)
    started_with = versions(git)
    visible_gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config overwrites it with gpu_id
    torchrun = distributed.from_environment()
    if torchrun is not None and distributed.current() is None:
        import torch

        rank, world, local_rank, ip, port = torchrun
        asked = overrides or {}  # --use_gpu=False or an empty --gpu_id keep a GPU machine's torchrun on gloo
        use_cuda = (torch.cuda.is_available() and str(asked.get("gpu_id", "0")) != ""
                    and str(asked.get("use_gpu", True)).lower() != "false")
        distributed.init(rank, world, local_rank, use_cuda, ip, port, "torchrun")
    compat.apply()
    from recbole_ext.config import PATH_KEYS, ExtConfig, load_yaml_file, resolve_paths
    from recbole_ext.validate import check_config

    # Paths are the caller's working directory's (``~`` expanded), here and in the config files:
    # resolved now, before the run moves into its artifacts folder.
    overrides = resolve_paths(overrides or {})
    output_dir = Path(output_dir).expanduser().resolve()
    run_id = distributed.broadcast_object(run_id or new_run_id())  # one id for every rank
    config_files = [str(Path(f).expanduser().resolve()) for f in (config_files or [])]
    file_paths: dict[str, Any] = {}
    for file in config_files:  # fail on a bad file before anything is written
        values = resolve_paths(load_yaml_file(file))
        file_paths.update((k, values[k]) for k in PATH_KEYS if values.get(k) is not None)

    setup_logging(level=overrides.get("state", "INFO"))  # stderr only until the run folder exists
    resolved = resolve(model)  # unknown model → UnknownModelError, before any work
    ranks = int(nproc) if distributed.current() is None else distributed.world_size()
    why_not = getattr(resolved.model_class, "DATA_PARALLEL_UNSUPPORTED", None)
    if ranks > 1 and why_not:
        from recbole_ext.validate import ConfigValueError

        raise ConfigValueError(f"{resolved.name} does not train data-parallel ({why_not}); run it in one process "
                               "(no --nproc, no torchrun)")
    target = record_path(output_dir, dataset, resolved.name, run_id)
    if target.exists():
        raise RecordExistsError(f"{target} exists; records are never overwritten (pick another --run_id)")
    # Every value checked before a dataset is prepared or loaded: a typo costs a second, not a download.
    probe = ExtConfig(resolved, dataset, config_file_list=config_files, config_dict=dict(file_paths),
                      cmd_dict={"data_path": "dataset", **overrides})
    check_config(probe)
    with distributed.main_first():  # one rank downloads and converts
        data_path = resolve_dataset(dataset, overrides.pop("data_path", file_paths.pop("data_path", None)))
    if probe["sid_tokenizer"] == "external" and not probe["sid_allow_extra_items"]:
        from recbole_ext.sid.external import check_keys_in_interactions

        # a file keyed for another dataset (or by positions) ends here, before RecBole loads the data
        check_keys_in_interactions(probe["sid_path"], Path(data_path) / dataset / f"{dataset}.inter",
                                   probe["ITEM_ID_FIELD"])
    artifacts = output_dir / "artifacts" / dataset / resolved.name / run_id
    plan = _Plan(resolved, dataset, config_files, file_paths, overrides, data_path, output_dir, run_id, artifacts,
                 {"versions": started_with, "provenance": provenance})
    if nproc > 1 and distributed.current() is None:
        if visible_gpus is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpus
        return _spawn(plan, int(nproc), probe["device"].type == "cuda")
    return _execute(plan)


def _spawn(plan: _Plan, nproc: int, use_cuda: bool) -> dict:
    """Run ``plan`` on ``nproc`` ranks of this machine; the record rank 0 wrote."""
    logger.info("run %s: %d ranks (%s), artifacts in %s", plan.run_id, nproc, "nccl" if use_cuda else "gloo",
                plan.artifacts)
    distributed.spawn(_rank_main, nproc, (plan, nproc, use_cuda, distributed.free_port()))
    target = record_path(plan.output_dir, plan.dataset, plan.resolved.name, plan.run_id)
    if not target.is_file():
        raise distributed.DistributedRunError(f"every rank finished but rank 0 wrote no record at {target}")
    record = json.loads(target.read_text(encoding="utf-8"))
    record.pop("schema_version", None)  # as a single-process run returns it
    _log_result(record)
    return record


def _rank_main(rank: int, plan: _Plan, world: int, use_cuda: bool, port: int) -> None:
    """One spawned rank: join the group, train and test (rank 0 writes the record), leave."""
    distributed.init(rank, world, rank, use_cuda, "127.0.0.1", port, "spawn")
    try:
        _execute(plan)
    finally:
        distributed.shutdown()


def _execute(plan: _Plan) -> dict:
    """Train and test on this process (one rank of a distributed run, or the only one); rank 0 writes the record."""
    ctx = distributed.current()
    level = plan.overrides.get("state", "INFO")
    if ctx is None or ctx.rank == 0:
        setup_logging(plan.artifacts / "run.log", level=level)
    else:  # the other ranks log warnings, each to its own file
        setup_logging(plan.artifacts / f"run.rank{ctx.rank}.log", level="WARNING")
    logger.info("run %s: %s on %s, artifacts in %s", plan.run_id, plan.resolved.name, plan.dataset, plan.artifacts)
    from recbole_ext.config import ExtConfig

    with working_directory(plan.artifacts):
        config = ExtConfig(
            plan.resolved,
            plan.dataset,
            config_file_list=plan.config_files,
            config_dict={"checkpoint_dir": str(plan.artifacts / "checkpoints"), **plan.file_paths,
                         "data_path": plan.data_path},
            cmd_dict=plan.overrides,
        )
        record = _train_and_test(config, plan.resolved)
    record.update(plan.extras)
    record.update(run_id=plan.run_id, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if ctx is not None:
        record["distributed"] = ctx.describe()
        distributed.barrier()  # every rank got here: only now is there a record to write
    if distributed.is_main():
        write_record(plan.output_dir, record)
        _log_result(record)
    return record


def _train_and_test(config: Any, resolved: Any) -> dict:
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import RUN_LOCAL_KEYS
    from recbole_ext.trainers.reporting import reporting_trainer

    init_seed(config["seed"], config["reproducibility"])
    with distributed.main_first():  # rank 0 fills the caches (dataset, semantic IDs, text vectors) first
        dataset = create_dataset(config)
        logger.info("%s", dataset)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        # the same weights and semantic IDs on every rank (a single process has local_rank 0)
        init_seed(config["seed"], config["reproducibility"])
        model = resolved.model_class(config, train_data._dataset).to(config["device"])
    if distributed.current() is not None:  # then each rank its own dropout and rollouts
        init_seed(config["seed"] + distributed.rank(), config["reproducibility"])
    trainer = reporting_trainer(resolved.trainer_class)(config, model)

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
        "config": to_jsonable(distributed.single_process_config(config.final_config_dict)),
        "config_hash": config_hash(distributed.single_process_config(config.final_config_dict), ignore=RUN_LOCAL_KEYS),
        "valid": _metrics(best_valid),
        "test": _metrics(test_result),
        "timings": {
            "train_s": round(train_s, 3),
            "test_s": round(test_s, 3),
            "s_per_epoch": round(sum(trainer.epoch_seconds) / epochs, 3) if epochs else None,
            "epochs": epochs,
            "test_ms_per_user": round(1000 * test_s / max(1, len(trainer.last_eval_users)), 3),
        },
        "device": describe_device(config["device"]),
    }
    per_user = trainer.per_user()
    if per_user is not None:
        record["per_user"] = {"test": _with_user_tokens(per_user, dataset)}
    extra = trainer.record_extra()
    if extra:
        record["extra"] = extra
    stages = trainer.record_stages()
    if stages:
        record["stages"] = stages
        for stage in stages:
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
