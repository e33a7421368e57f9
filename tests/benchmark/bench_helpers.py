"""Shared helpers for the benchmark tests: hand-made records and the fake cell command.

(Not named conftest.py: other test folders have one, and ``import conftest`` would be ambiguous.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FAKE_CELL = Path(__file__).with_name("fake_cell.py")


def fake_command(cell: Any, output_dir: Path) -> list[str]:
    """The suite's default command with ``run_benchmark.py`` replaced by ``fake_cell.py``."""
    from recbole_ext.benchmark.launch import default_command

    cmd = default_command(cell, output_dir)
    assert cmd[0] == sys.executable and cmd[1].endswith("run_benchmark.py")
    return [cmd[0], str(FAKE_CELL)] + cmd[2:]


def write_record(root: Path, model: str, dataset: str, seed: int, test: dict[str, float],
                 run_id: str | None = None, **fields: Any) -> Path:
    """Write a schema-1 run record the way the runner lays them out."""
    run_id = run_id or f"{model}-{dataset}-s{seed}"
    rec = {"schema_version": 1, "run_id": run_id, "status": "ok", "model": model,
           "dataset": dataset, "seed": seed, "config": {}, "valid": test, "test": test,
           "extra": {}, "timings": {}, "versions": {}, "device": "cpu",
           "created": "2026-01-01T00:00:00+00:00"}
    rec.update(fields)
    path = root / "runs" / dataset / model / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path

