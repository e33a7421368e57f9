"""On-disk cache of the trained weights of each stage of a multi-stage trainer (PT → SFT → RL).

A stage's key chains the keys before it::

    key(stage) = sha256(stage name, the stage's own config, key(previous stage), data key)[:20]

so changing one stage's config changes its key and every later key (those stages retrain), while
the stages before it keep their keys (they are reused). ``data key`` identifies what every stage
depends on: the dataset and its split, the semantic IDs, the backbone shape (the caller decides).

Files: ``<root>/<stage>-<key>.pt`` holds a plain ``state_dict`` (tensors only, so a later process
loads it with ``torch.load(weights_only=True)``) and ``<stage>-<key>.json`` a JSON description
(the hashed config, metrics). Both are written atomically (temporary file + ``os.replace``), the
weights last-but-one and the JSON last, so a reader never sees a half-written entry: an entry
counts only when its JSON exists and its weights load. Used by STREAM-Rec and reusable by any
multi-stage trainer (LASAR, TwiSTAR).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from recbole_ext.atomic import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["canonical", "stage_key", "StageCache"]


def canonical(obj: Any) -> Any:
    """JSON-able, order-independent form of a config value (sets sorted, tensors listed)."""
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def stage_key(stage: str, stage_config: Mapping[str, Any], previous_key: str | None, data_key: str) -> str:
    """The cache key of one stage (see the module docstring)."""
    payload = json.dumps(
        {"stage": stage, "config": canonical(stage_config), "previous": previous_key, "data": data_key},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


class StageCache:
    """Stage checkpoints under ``root``; ``enabled=False`` makes every lookup miss and saves nothing."""

    def __init__(self, root: str | os.PathLike, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    def paths(self, stage: str, key: str) -> tuple[Path, Path]:
        return self.root / f"{stage}-{key}.pt", self.root / f"{stage}-{key}.json"

    def load(self, stage: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(state_dict, description) of a cached stage, or None (absent, disabled or unreadable)."""
        if not self.enabled:
            return None
        weights, meta = self.paths(stage, key)
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            description = json.loads(meta.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - a broken entry is a miss, retrained and overwritten
            logger.warning("ignoring unreadable stage cache %s: %s", weights, exc)
            return None
        if not isinstance(state, dict):
            logger.warning("ignoring stage cache %s: not a state_dict", weights)
            return None
        return state, description

    def save(
        self, stage: str, key: str, state_dict: Mapping[str, torch.Tensor], description: Mapping[str, Any]
    ) -> Path | None:
        """Store a stage's weights (moved to CPU) and description; returns the weights path."""
        if not self.enabled:
            return None
        weights, meta = self.paths(stage, key)
        state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        atomic_write(weights, lambda f: torch.save(state, f))
        text = json.dumps(canonical({**description, "stage": stage, "key": key}), indent=1, sort_keys=True)
        atomic_write_text(meta, text)
        logger.info("stage %s cached in %s", stage, weights)
        return weights
