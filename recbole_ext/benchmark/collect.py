"""Read stored run records and flatten them into table entries.

Tables, statistics and plots are derived from the records under ``DIR/runs`` only (never by
retraining). A record with ``stages`` (multi-stage models such as STREAM-Rec) becomes one
entry per stage, labelled ``"<label> (PT)"`` etc.; a record without stages becomes one entry.

Broken or partial files (invalid JSON, missing fields, ``status`` other than ``"ok"``) are
skipped with a warning; failure records (``*.failed.json``) and temporary files are ignored.

Fields of the run record this module relies on: ``model``, ``dataset``, ``seed``, ``run_id``,
``status`` (optional, default ``"ok"``), ``label`` (optional), ``test`` / ``valid``,
``per_user.test`` (optional), ``stages`` (optional), ``extra``, ``timings``, ``config``,
``created`` (optional, used to pick the newest duplicate).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbole_ext.registry import BUILTIN_GROUP, MODEL_GROUPS, UnknownModelError, model_group

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMA = 1
FAILED_SUFFIX = ".failed.json"


def group_title(group: str) -> str:
    """A registry group as a table section: ``"traditional"`` -> ``"Traditional"``."""
    return group.capitalize()


#: Table sections of the registry's model groups, in display order; other sections follow.
GROUP_ORDER = tuple(group_title(g) for g in MODEL_GROUPS)
#: The section whose best method is the "best baseline" of the significance tests.
BASELINE_GROUP = group_title(BUILTIN_GROUP)
#: The section of a model this process's registry does not know (e.g. a plugin registered elsewhere).
UNKNOWN_GROUP = "Other"


def default_group(model: str) -> str:
    """Section of a model when no suite says otherwise: its registry group."""
    try:
        return group_title(model_group(model))
    except UnknownModelError:
        return UNKNOWN_GROUP


@dataclass
class CellInfo:
    """Display information a suite attaches to a run id (label, group, variant overrides)."""

    label: str
    group: str
    order: int = 0
    suite: str = ""
    select: str = ""  # the row a suite's sweep collapses into, chosen on validation ("" = none)


@dataclass
class Entry:
    """One table row's worth of data from one seed: a record, or one stage of a record."""

    label: str
    group: str
    model: str
    dataset: str
    seed: int | None
    run_id: str
    stage: str | None
    test: dict[str, float]
    valid: dict[str, float]
    per_user: dict[str, Any] | None
    extra: dict[str, Any]
    timings: dict[str, Any]
    config: dict[str, Any]
    created: str = ""
    order: tuple[Any, ...] = field(default_factory=tuple)
    select: str = ""  # the row this entry competes for on validation (benchmark/selection.py); "" = none


def iter_record_files(output_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Record files under ``DIR/runs`` (sorted), without failure records and temp files."""
    runs = Path(output_dir) / "runs"
    if not runs.is_dir():
        return
    for path in sorted(runs.rglob("*.json")):
        name = path.name
        if name.endswith(FAILED_SUFFIX) or name.startswith(".") or ".tmp" in name:
            continue
        yield path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Load one record; ``None`` (with a warning) when it is broken, partial or not ok."""
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("skipping unreadable record %s: %s", path, exc)
        return None
    if not isinstance(rec, dict):
        logger.warning("skipping record %s: not a JSON object", path)
        return None
    missing = [k for k in ("model", "dataset") if not isinstance(rec.get(k), str)]
    if not isinstance(rec.get("test"), Mapping) and not isinstance(rec.get("stages"), list):
        missing.append("test|stages")
    if missing:
        logger.warning("skipping partial record %s: missing %s", path, ", ".join(missing))
        return None
    if rec.get("status", "ok") != "ok":
        logger.warning("skipping record %s with status %r", path, rec.get("status"))
        return None
    version = rec.get("schema_version", SUPPORTED_SCHEMA)
    if version != SUPPORTED_SCHEMA:
        logger.warning("record %s has schema_version %r (expected %d); reading it anyway",
                       path, version, SUPPORTED_SCHEMA)
    rec.setdefault("run_id", Path(path).stem)
    return rec


def load_records(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All good records under ``DIR/runs``."""
    out = []
    for path in iter_record_files(output_dir):
        rec = read_record(path)
        if rec is not None:
            out.append(rec)
    return out


def index_records(output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Map ``run_id`` -> path of every good record (used by the suite to skip finished cells)."""
    index: dict[str, Path] = {}
    for path in iter_record_files(output_dir):
        rec = read_record(path)
        if rec is not None:
            index[str(rec["run_id"])] = path
    return index


def _stage_label(base: str, stage: str) -> str:
    if "{stage}" in base:
        return base.replace("{stage}", stage.upper())
    return f"{base} ({stage.upper()})"


def _metrics(obj: Any) -> dict[str, float]:
    if not isinstance(obj, Mapping):
        return {}
    out = {}
    for key, value in obj.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key).lower()] = float(value)
    return out


def _per_user_test(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("test"), Mapping):
        pu = obj["test"]
        if isinstance(pu.get("user_ids"), list):
            return dict(pu)
    return None


def record_entries(rec: Mapping[str, Any], info: CellInfo | None = None) -> list[Entry]:
    """Flatten one record into entries (one per stage when it has stages)."""
    model = str(rec["model"])
    base_label = info.label if info else str(rec.get("label") or model)
    group = info.group if info else default_group(model)
    seed = rec.get("seed")
    common = dict(
        group=group,
        model=model,
        dataset=str(rec["dataset"]),
        seed=int(seed) if isinstance(seed, (int, float)) else None,
        run_id=str(rec.get("run_id", "")),
        timings=dict(rec.get("timings") or {}),
        config=dict(rec.get("config") or {}),
        created=str(rec.get("created") or ""),
    )
    extra = dict(rec.get("extra") or {})
    stages = rec.get("stages")
    if isinstance(stages, list) and stages:
        entries = []
        for i, st in enumerate(stages):
            if not isinstance(st, Mapping) or not isinstance(st.get("test"), Mapping):
                logger.warning("record %s: skipping malformed stage %d", common["run_id"], i)
                continue
            name = str(st.get("name") or f"stage{i}")
            entries.append(Entry(
                label=_stage_label(base_label, name),
                stage=name,
                test=_metrics(st.get("test")),
                valid=_metrics(st.get("valid")),
                per_user=_per_user_test(st.get("per_user")),
                extra={**extra, **dict(st.get("extra") or {})},
                order=(i,),
                select=_stage_label(info.select, name) if info and info.select else "",
                **common,
            ))
            variants = (st.get("extra") or {}).get("test_variants")
            for j, (variant, out) in enumerate(variants.items() if isinstance(variants, Mapping) else ()):
                # the same weights decoded otherwise on the same test users (e.g. LASAR's explicit CoT)
                entries.append(Entry(
                    label=f"{_stage_label(base_label, name)} [{variant}]",
                    stage=name,
                    test=_metrics(out.get("test")),
                    valid={},
                    per_user=None,
                    extra={**extra, **dict(out.get("extra") or {})},
                    order=(i, j + 1),
                    **common,
                ))
        return entries
    return [Entry(
        label=" ".join(base_label.replace("{stage}", "").split()),
        stage=None,
        test=_metrics(rec.get("test")),
        valid=_metrics(rec.get("valid")),
        per_user=_per_user_test(rec.get("per_user")),
        extra=extra,
        select=" ".join(info.select.replace("{stage}", "").split()) if info and info.select else "",
        **common,
    )]


def collect_entries(
    records: list[Mapping[str, Any]],
    cells: Mapping[str, CellInfo] | None = None,
    only_cells: bool = False,
) -> list[Entry]:
    """Entries of all records; ``cells`` maps run ids to suite display info.

    With ``only_cells`` records whose run id is not in ``cells`` are left out. When the same
    (label, dataset, seed) occurs twice the newest record (by ``created``) wins.
    """
    cells = cells or {}
    chosen: dict[tuple[str, str, Any], Entry] = {}
    for rec in records:
        info = cells.get(str(rec.get("run_id", "")))
        if only_cells and info is None:
            continue
        for e in record_entries(rec, info):
            key = (e.label, e.dataset, e.seed)
            old = chosen.get(key)
            if old is not None:
                logger.warning("duplicate results for %s on %s seed %s (runs %s, %s); "
                               "keeping the newest", e.label, e.dataset, e.seed,
                               old.run_id, e.run_id)
                if old.created > e.created:
                    continue
            head = (info.order, "") if info else (0, e.model)  # suite order, else by name within a group
            e.order = head + e.order
            chosen[key] = e
    return list(chosen.values())
