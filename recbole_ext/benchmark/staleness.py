"""Has a finished suite cell been trained under defaults that have changed since?

Cell ids hash (model, dataset, seed, the suite's overrides), not the ``properties/`` YAML defaults,
so a rerun after a default changed (say ``lr_decay`` in ``properties/family/sid_generative.yaml``)
would otherwise reuse the old record silently. :func:`stale_defaults` compares the record's resolved
config with today's YAML layers (overall, dataset, then the registry's ``yaml_files`` of the model:
its family's and its own) for every scalar key the cell does not override; the suite warns
with the differences and says how to retrain. Dict- and list-valued keys are not compared (RecBole
expands some of them, e.g. ``eval_args``), nor is code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recbole_ext.registry import PROPERTIES_DIR, UnknownModelError, yaml_files

_SCALARS = (str, int, float, bool, type(None))


def default_layers(model: str, dataset: str) -> dict[str, Any]:
    """The keys our YAML layers set for (model, dataset), later layers winning (as ExtConfig)."""
    try:
        model_layers = yaml_files(model)
    except UnknownModelError:  # a model this process does not know: only the protocol layers
        model_layers = []
    merged: dict[str, Any] = {}
    for path in (PROPERTIES_DIR / "overall.yaml", PROPERTIES_DIR / "dataset" / f"{dataset}.yaml", *model_layers):
        if path.is_file():
            merged.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return merged


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def stale_defaults(model: str, dataset: str, overrides: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """``"key: recorded -> now"`` for each scalar default that differs from the record's config."""
    config = record.get("config") or {}
    changed = []
    for key, now in sorted(default_layers(model, dataset).items()):
        if key in overrides or not isinstance(now, _SCALARS):
            continue
        if key not in config:  # a default added since: the run did without it (RecBole reads absent as None)
            if now is not None:
                changed.append(f"{key}: (absent) -> {now!r}")
            continue
        then = config[key]
        if isinstance(then, _SCALARS) and not _same(then, now):
            changed.append(f"{key}: {then!r} -> {now!r}")
    return changed


def stale_message(cell_id: str, record_path: Path, changes: list[str]) -> str:
    return (f"cell {cell_id} was trained under other defaults than properties/ holds now "
            f"({'; '.join(changes)}); its record is reused. To retrain it, delete {record_path} "
            "(or use another --output_dir).")
