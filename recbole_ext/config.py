"""``ExtConfig``: RecBole's ``Config`` with our YAML layered in and plugin models accepted.

Precedence, lowest first:

1. RecBole's own defaults (its overall.yaml, model YAML for built-ins, dataset YAML, and the
   sequential quick-start YAML),
2. ``properties/overall.yaml`` (the paper's protocol, the same for every method),
3. ``properties/dataset/<dataset>.yaml``,
4. the model's documented defaults (``properties/model/<Name>.yaml``),
5. ``config_file_list`` (later files win),
6. ``config_dict``,
7. ``cmd_dict`` (the runner's ``--key=value`` overrides).

Unlike RecBole's ``Config``, ``sys.argv`` is never read: the runner passes its overrides
explicitly, so its own flags cannot leak into the config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recbole_ext import compat
from recbole_ext.config_keys import HUB_OR_PATH_KEYS, PATH_KEYS, RUN_LOCAL_KEYS  # noqa: F401  (re-exported)
from recbole_ext.registry import PROPERTIES_DIR, ResolvedModel, resolve

compat.apply()

from recbole.config import Config  # noqa: E402  (after the compatibility fixes)

logger = logging.getLogger(__name__)

OVERALL_YAML = PROPERTIES_DIR / "overall.yaml"
DATASET_YAML_DIR = PROPERTIES_DIR / "dataset"


def resolve_paths(values: Mapping[str, Any], base: str | os.PathLike | None = None) -> dict[str, Any]:
    """A copy of ``values`` whose :data:`PATH_KEYS` values are absolute: ``~`` expanded, relative
    ones joined to ``base`` (default: the current directory), as strings. Other keys, values that
    are neither strings nor paths, and ``"None"`` (RecBole's command line reads it as None) are kept."""
    base = Path(os.getcwd() if base is None else base)
    out = dict(values)
    for key in PATH_KEYS:
        value = out.get(key)
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(value, str) or value in ("", "None"):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            if key in HUB_OR_PATH_KEYS and not value.startswith(".") and not (base / path).is_dir():
                continue
            path = base / path
        out[key] = os.path.normpath(path)
    return out


class ConfigFileError(ValueError):
    """A YAML file that is missing or cannot be parsed; the message names the file and line."""


def load_yaml_file(path: str | Path, loader: Any = yaml.SafeLoader) -> dict:
    """Parse a YAML mapping; errors name the file and the line to fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f.read(), Loader=loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigFileError(f"malformed YAML in {where}: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"malformed YAML in {path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must hold a mapping of config keys, found {type(data).__name__}")
    return data


class ExtConfig(Config):
    """RecBole ``Config`` that knows our plugins and our properties/ folder."""

    def __init__(
        self,
        model: str | ResolvedModel,
        dataset: str,
        config_file_list: list[str] | None = None,
        config_dict: dict | None = None,
        cmd_dict: dict | None = None,
    ):
        self.resolved = model if isinstance(model, ResolvedModel) else resolve(model)
        self._cmd_dict = dict(cmd_dict or {})
        super().__init__(
            model=self.resolved.model_class,
            dataset=dataset,
            config_file_list=list(config_file_list or []),
            config_dict=config_dict,
        )
        # Config(model=<class>) takes the class's __name__; keep the registered name.
        self.final_config_dict["model"] = self.resolved.name
        self.model = self.resolved.name

    def _load_config_files(self, file_list):
        merged: dict = {}
        for file in file_list or []:
            merged.update(load_yaml_file(file, self.yaml_loader))
        return merged

    def _load_cmd_line(self):
        return self._convert_config_dict(dict(self._cmd_dict))

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        layers = [OVERALL_YAML, DATASET_YAML_DIR / f"{dataset}.yaml", *self.resolved.yaml_files]
        for file in layers:
            if not Path(file).is_file():
                continue
            values = load_yaml_file(file, self.yaml_loader)
            self.internal_config_dict.update(values)
            if Path(file).parent == DATASET_YAML_DIR:
                self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]

    def _init_device(self):
        """RecBole's device setup in a single process; in a distributed run (:mod:`recbole_ext.distributed`),
        RecBole's distributed keys from the group already started (RecBole's own branch would start an nccl
        group on ``cuda:local_rank`` itself, which a CPU/gloo run cannot use)."""
        from recbole_ext import distributed

        ctx = distributed.current()
        if ctx is None:
            return super()._init_device()
        self.final_config_dict["gpu_id"] = str(ctx.local_rank) if ctx.device.type == "cuda" else ""
        self.final_config_dict.update(
            single_spec=False, local_rank=ctx.local_rank, world_size=ctx.world_size, nproc=ctx.world_size,
            offset=ctx.rank - ctx.local_rank, ip=ctx.ip, port=ctx.port, device=ctx.device)
        if ctx.rank != 0:  # as RecBole: the other ranks stay quiet
            self.final_config_dict.update(show_progress=False, verbose=False)

    def __getstate__(self):
        # Checkpoints pickle the config: keep the resolved classes out of it.
        state = self.__dict__.copy()
        state.pop("resolved", None)
        state.pop("yaml_loader", None)
        return state

