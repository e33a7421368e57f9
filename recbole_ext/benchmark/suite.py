"""Benchmark suites: YAML files in ``benchmarks/`` parsed and expanded into cells (run by ``launch.py``).

A suite file (``benchmarks/<name>.yaml``, or any path) has these keys::

    name: quickstart                 # optional; default: the file's stem
    description: free text           # optional
    datasets: [ml-100k]              # required
    seeds: [2020]                    # optional; default [2020]
    overrides: {epochs: 2}           # optional; every cell (RecBole keys, as on the command line)
    dataset_overrides:               # optional; per dataset
      ml-100k: {train_batch_size: 512}
    models:                          # required; a name, or a mapping:
      - SASRec
      - model: STREAMRec
        label: "STREAM-Rec (l={reasoning_len})"   # display name; {key} = an override's value,
                                                  # {variant}; {stage} places a stage's name
        group: Reasoning             # table section, any text; default: the model's registry
                                     # group as a title (Traditional | Generative | Reasoning)
        datasets: [scientific]       # optional restriction / replacement of the suite's list
        seeds: [2020, 2021]          # optional replacement of the suite's seeds
        overrides: {epochs: 50}
        sweep: {reasoning_len: [0, 2, 4, 6, 8]}    # cartesian product of values
        variants:                    # named variants (combined with sweep)
          - {name: rqvae, overrides: {sid_tokenizer: rqvae}}
        select: "STREAM-Rec"         # optional: the tables collapse this item's rows into one row so
                                     # labelled, per dataset the one with the best mean validation
                                     # score over seeds (benchmark/selection.py); tables/selection.md
    table: {...}                     # how to tabulate: see ``tables.TableSpec``
    slurm: {...}                     # parameters for submitit's executor (launcher "slurm")

Override precedence (later wins): suite ``overrides`` < ``dataset_overrides`` < the model's
``overrides`` < variant < sweep value < ``extra_overrides`` given to :func:`load_suite`
(``launch.run_suite`` passes the command line's).

A cell is (model, dataset, seed, overrides); its id ``<model>-<dataset>-s<seed>-<hash>`` hashes
these (canonical JSON, sorted keys), so it is stable across runs and independent of the order of
keys or entries in the file. The id is the run id of the cell's record, which is how a rerun
recognises finished cells: same id = same model, dataset, seed and overrides. The id is the same
on every machine: it leaves out the keys that only say where data lies or goes
(``config_keys.LOCATION_KEYS``: ``data_path``, cache and checkpoint folders), and hashes a path
key naming an existing file (``sid_path``, pre-trained weights) by the file's bytes, not its
location (:func:`identity_overrides`). Ids of an older scheme found in the output folder's stored
manifest become aliases of the cell (:func:`adopt_aliases`). (Defaults in ``properties/`` are not
part of the id: a rerun warns about finished cells trained under changed defaults.)

Models are not validated here: any name the runner accepts (a new plugin included) works.
This module only parses; running cells (``launch.py``) and tabulating them (``report.py``) import
it, never the reverse.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recbole_ext.benchmark.collect import default_group
from recbole_ext.config_keys import LOCATION_KEYS, PATH_KEYS

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE_DIR = REPO_ROOT / "benchmarks"
DEFAULT_SEEDS = [2020]

_TOP_KEYS = {"name", "description", "datasets", "seeds", "overrides", "dataset_overrides",
             "models", "table", "slurm"}
_MODEL_KEYS = {"model", "label", "group", "datasets", "seeds", "overrides", "sweep", "variants", "select"}
_VARIANT_KEYS = {"name", "label", "overrides"}


class SuiteError(ValueError):
    """A suite that cannot be found or parsed; the message names the file and line."""


# ----------------------------------------------------------------------------- YAML with lines


class _Map(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class _Seq(list):
    """A YAML sequence that remembers the line of each item (1-based)."""

    line: int = 0
    lines: list[int]


def _make_loader(path: Path) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
        loader.flatten_mapping(node)
        out = _Map()
        out.line, out.lines = node.start_mark.line + 1, {}
        for k_node, v_node in node.value:
            key = loader.construct_object(k_node, deep=True)
            if key in out:
                raise SuiteError(f"{path}:{k_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = loader.construct_object(v_node, deep=True)
            out.lines[key] = k_node.start_mark.line + 1
        return out

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Seq:
        out = _Seq(loader.construct_object(n, deep=True) for n in node.value)
        out.line, out.lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    return Loader


def _plain(obj: Any) -> Any:
    """Drop line bookkeeping: plain dicts and lists (JSON-safe)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- model


@dataclass
class Cell:
    """One run of the suite: a model on a dataset with a seed and config overrides."""

    id: str
    model: str
    dataset: str
    seed: int
    overrides: dict[str, Any]
    label: str
    group: str
    variant: str = ""
    order: int = 0
    #: the one row its sweep / variants collapse into, chosen on validation (``select:``; "" = none)
    select: str = ""
    #: ids this cell had under an earlier id scheme (records stored under them count as its own)
    aliases: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [self.id, *self.aliases]


@dataclass
class Suite:
    """A parsed suite: its cells plus how to tabulate and launch them."""

    name: str
    path: Path
    description: str
    cells: list[Cell]
    table: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        """JSON-safe description stored as ``DIR/suites/<name>/suite.json``."""
        table = dict(self.table)
        table.setdefault("datasets", list(self.datasets))
        return {"name": self.name, "path": str(self.path), "description": self.description,
                "table": table, "cells": [asdict(c) for c in self.cells]}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def identity_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``overrides`` a cell id hashes: without :data:`LOCATION_KEYS` (where data lies
    or goes, not what it is), and a :data:`PATH_KEYS` value that names an existing file (relative:
    to the working directory, as the runner reads it) replaced by the sha256 of its bytes. Other
    path values (a folder, a hub model name) are kept as written."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in LOCATION_KEYS:
            continue
        if key in PATH_KEYS and isinstance(value, str) and value not in ("", "None"):
            path = Path(value).expanduser()
            if path.is_file():
                value = _file_digest(path)
        out[key] = value
    return out


def cell_id(model: str, dataset: str, seed: int, overrides: Mapping[str, Any]) -> str:
    """Stable id of a cell: readable prefix + hash of (model, dataset, seed, identity overrides)."""
    canon = json.dumps({"model": model, "dataset": dataset, "seed": seed,
                        "overrides": identity_overrides(overrides)}, sort_keys=True,
                       separators=(",", ":"), default=str)
    digest = hashlib.sha256(canon.encode("utf-8")).hexdigest()[:12]
    return f"{_slug(model)}-{_slug(dataset)}-s{seed}-{digest}"


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _format_label(template: str, values: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Keep({k: v for k, v in values.items()}))
    except (ValueError, IndexError, AttributeError):
        return template


# ----------------------------------------------------------------------------- parsing


def resolve_suite_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A path as given, else ``benchmarks/<name>.yaml`` (repo, then the working directory)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        raise SuiteError(f"suite file not found: {p}")
    for root in (SUITE_DIR, Path.cwd() / "benchmarks"):
        for ext in (".yaml", ".yml"):
            cand = root / f"{name_or_path}{ext}"
            if cand.is_file():
                return cand
    raise SuiteError(f"unknown suite {str(name_or_path)!r}; available: {available_suites()}")


def available_suites() -> list[str]:
    """Names of the suites shipped in ``benchmarks/``."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.y*ml"))


def load_suite(name_or_path: str | os.PathLike[str],
               extra_overrides: Mapping[str, Any] | None = None) -> Suite:
    """Parse and expand a suite; raises :class:`SuiteError` naming the file and line."""
    path = resolve_suite_path(name_or_path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_make_loader(path))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SuiteError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc}") from None
    extra = {str(k): coerce_value(v) for k, v in (extra_overrides or {}).items()}
    return _parse(path, raw, extra)


def coerce_value(value: Any) -> Any:
    """A command-line string as the literal it spells (``"1"`` -> 1, ``"1e-3"`` -> 0.001,
    ``"[5,10]"`` -> [5, 10], ``"None"`` -> None), else the string itself.

    So ``--epochs=1`` on the command line and ``epochs: 1`` in a suite give the same cell id.
    """
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def _err(path: Path, line: int, msg: str) -> SuiteError:
    return SuiteError(f"{path}:{line}: {msg}")


def _check_keys(path: Path, m: _Map, known: set[str], where: str) -> None:
    for k in m:
        if k not in known:
            raise _err(path, m.lines.get(k, m.line),
                       f"unknown key {k!r} in {where}; known keys: {sorted(known)}")


def _mapping(path: Path, parent: _Map, key: str, default: Any = None) -> dict[str, Any]:
    v = parent.get(key, default)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, parent.lines.get(key, parent.line), f"{key!r} must be a mapping")
    return v


def _list(path: Path, parent: _Map, key: str, item_type: type | tuple[type, ...],
          default: Any = None) -> list[Any] | None:
    v = parent.get(key, default)
    if v is None:
        return None
    line = parent.lines.get(key, parent.line) if isinstance(parent, _Map) else 0
    if not isinstance(v, list) or not v:
        raise _err(path, line, f"{key!r} must be a non-empty list")
    for i, item in enumerate(v):
        if not isinstance(item, item_type) or isinstance(item, bool):
            iline = v.lines[i] if isinstance(v, _Seq) else line
            raise _err(path, iline, f"{key!r} item {item!r} has the wrong type")
    return list(v)


def _parse(path: Path, raw: Any, extra: dict[str, Any]) -> Suite:
    if not isinstance(raw, _Map):
        raise _err(path, 1, "a suite must be a YAML mapping")
    _check_keys(path, raw, _TOP_KEYS, "the suite")
    for req in ("datasets", "models"):
        if req not in raw:
            raise _err(path, raw.line, f"missing required key {req!r}")
    datasets = _list(path, raw, "datasets", str)
    seeds = _list(path, raw, "seeds", int) or list(DEFAULT_SEEDS)
    base = _mapping(path, raw, "overrides")
    ds_over = _mapping(path, raw, "dataset_overrides")
    for ds, ov in ds_over.items():
        if not isinstance(ov, dict):
            raise _err(path, ds_over.lines.get(ds, 0), f"dataset_overrides[{ds!r}] must be a mapping")
    table = _mapping(path, raw, "table")
    _check_table(path, raw, table)
    models = raw["models"]
    if not isinstance(models, list) or not models:
        raise _err(path, raw.lines["models"], "'models' must be a non-empty list")

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    order = 0
    for i, entry in enumerate(models):
        line = models.lines[i] if isinstance(models, _Seq) else raw.lines["models"]
        if isinstance(entry, str):
            entry = _Map(model=entry)
            entry.line, entry.lines = line, {"model": line}
        if not isinstance(entry, _Map):
            raise _err(path, line, "a models item must be a model name or a mapping")
        _check_keys(path, entry, _MODEL_KEYS, "a models item")
        model = entry.get("model")
        if not isinstance(model, str) or not model:
            raise _err(path, entry.line, "a models item needs 'model: <name>'")
        m_datasets = _list(path, entry, "datasets", str) or datasets
        m_seeds = _list(path, entry, "seeds", int) or seeds
        m_over = _mapping(path, entry, "overrides")
        group = entry.get("group") or default_group(model)
        select = entry.get("select") or ""
        if not isinstance(select, str):
            raise _err(path, entry.line, "'select' must be the label of the row its sweep collapses into")
        for variant, v_label, v_over in _variants(path, entry):
            for sweep_vals in _sweep(path, entry):
                order += 1
                label_tpl = v_label or entry.get("label") or _default_label(
                    model, variant, sweep_vals)
                for ds in m_datasets:
                    overrides = {**base, **ds_over.get(ds, {}), **m_over, **v_over,
                                 **sweep_vals, **extra}
                    overrides = _plain(overrides)
                    label = _format_label(str(label_tpl), {**overrides, "model": model,
                                                           "variant": variant})
                    for seed in m_seeds:
                        cid = cell_id(model, ds, seed, overrides)
                        if cid in seen:
                            raise _err(path, line, f"duplicate cell {model}/{ds}/seed {seed} "
                                                   f"(same overrides as line {seen[cid]})")
                        seen[cid] = line
                        cells.append(Cell(cid, model, ds, int(seed), overrides, label,
                                          str(group), variant, order, select))
    name = raw.get("name") or path.stem
    return Suite(str(name), path, str(raw.get("description") or ""), cells,
                 table=_plain(table), slurm=_plain(_mapping(path, raw, "slurm")),
                 datasets=list(datasets or []))


def _check_table(path: Path, raw: _Map, table: dict[str, Any]) -> None:
    from recbole_ext.benchmark.tables import TableSpec

    try:
        TableSpec.from_dict(_plain(table))
    except (TypeError, ValueError) as exc:
        line = raw.lines.get("table", raw.line)
        if isinstance(table, _Map):
            bad = [k for k in table if k not in TableSpec.keys()]
            if bad:
                line = table.lines[bad[0]]
        raise _err(path, line, f"bad 'table' section: {exc}") from None


def _variants(path: Path, entry: _Map) -> list[tuple[str, str | None, dict[str, Any]]]:
    variants = entry.get("variants")
    if variants is None:
        return [("", None, {})]
    if not isinstance(variants, list) or not variants:
        raise _err(path, entry.lines["variants"], "'variants' must be a non-empty list")
    out = []
    for j, v in enumerate(variants):
        vline = variants.lines[j] if isinstance(variants, _Seq) else entry.line
        if not isinstance(v, _Map) or not isinstance(v.get("name"), str):
            raise _err(path, vline, "a variant must be a mapping with 'name'")
        _check_keys(path, v, _VARIANT_KEYS, "a variant")
        out.append((v["name"], v.get("label"), _mapping(path, v, "overrides")))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise _err(path, entry.lines["variants"], f"duplicate variant names in {names}")
    return out


def _sweep(path: Path, entry: _Map) -> list[dict[str, Any]]:
    sweep = _mapping(path, entry, "sweep")
    keys = list(sweep)
    for k in keys:
        if not isinstance(sweep[k], list) or not sweep[k]:
            raise _err(path, sweep.lines.get(k, entry.line),
                       f"sweep values of {k!r} must be a non-empty list")
    return [dict(zip(keys, vals)) for vals in itertools.product(*(sweep[k] for k in keys))]


def _default_label(model: str, variant: str, sweep_vals: Mapping[str, Any]) -> str:
    parts = ([variant] if variant else []) + [f"{k}={{{k}}}" for k in sweep_vals]
    return f"{model} ({', '.join(parts)})" if parts else model


def adopt_aliases(suite: Suite, stored_cells: list[Mapping[str, Any]]) -> int:
    """Give each cell of ``suite`` the ids under which an earlier run of the suite stored it.

    ``stored_cells`` are the cells of the manifest a previous run left (``suite.json``); a stored
    cell whose (model, dataset, seed, overrides) gives a current cell's id under today's
    :func:`cell_id` (e.g. one whose id hashed an absolute ``data_path``) is that cell, and its id
    (and its own aliases) become the cell's aliases. Returns how many cells gained an alias.
    """
    by_id = {c.id: c for c in suite.cells}
    gained = set()
    for old in stored_cells:
        try:
            new = cell_id(old["model"], old["dataset"], int(old["seed"]), old.get("overrides") or {})
        except (KeyError, TypeError, ValueError):
            continue
        cell = by_id.get(new)
        if cell is None:
            continue
        for alias in [old.get("id"), *(old.get("aliases") or [])]:
            if alias and alias != cell.id and alias not in cell.aliases:
                cell.aliases.append(str(alias))
                gained.add(cell.id)
    return len(gained)
