"""Run records: one versioned JSON file per finished run, written atomically.

Layout: ``<output_dir>/runs/<dataset>/<model>/<run_id>.json``. A record is written once, by
``os.replace`` of a fully written temporary file, so a crash never leaves half a record, and an
existing record is never overwritten. Tables are built from these files only
(:mod:`recbole_ext.benchmark.collect` reads them back).

A data-parallel run (:mod:`recbole_ext.distributed`) is written once, by rank 0, and adds
``distributed: {world_size, backend, launcher}``; its ``config`` and ``config_hash`` are those of the
same run in one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from pathlib import Path
from typing import Any

from recbole_ext.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUNS_DIR = "runs"
REQUIRED_FIELDS = ("schema_version", "model", "dataset", "seed", "config", "valid", "test", "timings", "versions", "device")


class RecordExistsError(FileExistsError):
    """A record with this run id is already stored; records are never overwritten."""


def new_run_id() -> str:
    """Sortable, unique run id: UTC time to the second plus 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def record_path(output_dir: str | Path, dataset: str, model: str, run_id: str) -> Path:
    return Path(output_dir) / RUNS_DIR / dataset / model / f"{run_id}.json"


def to_jsonable(value: Any) -> Any:
    """Config values → JSON: enums by name, devices and paths as strings, NaN/inf as null."""
    import enum

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return to_jsonable(value.item())
    return str(value)


def config_hash(config: dict, ignore: tuple[str, ...] = ()) -> str:
    """sha256 of the canonical JSON of a config, without the keys in ``ignore``."""
    canonical = json.dumps({k: v for k, v in to_jsonable(config).items() if k not in ignore}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_record(output_dir: str | Path, record: dict) -> Path:
    """Store a finished run's record atomically; refuses to overwrite an existing one."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    missing = [k for k in (*REQUIRED_FIELDS, "run_id") if k not in record]
    if missing:
        raise ValueError(f"run record lacks required fields {missing}")
    path = record_path(output_dir, record["dataset"], record["model"], record["run_id"])
    if path.exists():
        raise RecordExistsError(f"{path} exists; records are never overwritten (pick another --run_id)")
    try:  # exclusive: a concurrent run that took the same run_id after the check above loses here
        atomic_write_text(path, json.dumps(to_jsonable(record), indent=1, sort_keys=False) + "\n", exclusive=True)
    except FileExistsError:
        raise RecordExistsError(f"{path} was written by another run meanwhile; records are never "
                                "overwritten (pick another --run_id)") from None
    logger.info("run record written: %s", path)
    return path

