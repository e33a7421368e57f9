"""Model registry: a model name resolves to its class, its trainer and its default YAML.

Our plugins are listed as lazy ``"module:Class"`` strings, so importing this module imports
neither transformers nor the models. A name that is not a plugin falls through to RecBole's own
built-ins (``recbole.utils.get_model`` / ``get_trainer``), so Caser, GRU4Rec, SASRec and BERT4Rec
run through the same path with RecBole's own code. A plugin may not take a built-in's name:
RecBole resolves names case-insensitively by file name, so a clash would be silent.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = PROJECT_ROOT / "properties"
MODEL_YAML_DIR = PROPERTIES_DIR / "model"

# RecBole's model sub-packages searched by recbole.utils.get_model (exlib needs xgboost/lightgbm).
_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


class UnknownModelError(ValueError):
    """A model name that is neither a plugin nor a RecBole built-in."""


@dataclass(frozen=True)
class PluginSpec:
    """One plugin: lazy ``module:Class`` references and its documented default YAML."""

    name: str
    model: str
    trainer: str | None = None  # None: RecBole's trainer for the model's type
    yaml: Path | None = None  # default: properties/model/<name>.yaml

    @property
    def yaml_file(self) -> Path:
        return self.yaml if self.yaml is not None else MODEL_YAML_DIR / f"{self.name}.yaml"


@dataclass
class ResolvedModel:
    """What the runner needs to build and train one model."""

    name: str
    model_class: type
    trainer_class: type
    yaml_files: list[Path] = field(default_factory=list)
    builtin: bool = False


_PLUGINS: dict[str, PluginSpec] = {}


def _recbole_model_dir() -> Path:
    spec = importlib.util.find_spec("recbole")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("RecBole is not installed: pip install recbole==1.2.1")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def builtin_model_names() -> list[str]:
    """Class names of RecBole's built-in models (read from the installed package, not imported)."""
    names = []
    for package in _RECBOLE_MODEL_PACKAGES:
        init = _recbole_model_dir() / package / "__init__.py"
        for line in init.read_text(encoding="utf-8").splitlines():
            # lines look like: "from recbole.model.sequential_recommender.sasrec import SASRec"
            parts = line.split()
            if len(parts) == 4 and parts[0] == "from" and parts[2] == "import" and parts[3] != "*":
                names.append(parts[3])
    return sorted(set(names))


def is_builtin(name: str) -> bool:
    """True when RecBole's ``get_model`` would resolve ``name`` (matched by lower-case file name)."""
    model_dir = _recbole_model_dir()
    return any((model_dir / pkg / f"{name.lower()}.py").is_file() for pkg in _RECBOLE_MODEL_PACKAGES)


def register(name: str, model: str, trainer: str | None = None, yaml: Path | str | None = None) -> PluginSpec:
    """Register a plugin model. Raises if the name is taken by a built-in or another plugin."""
    if is_builtin(name):
        raise ValueError(
            f"plugin name {name!r} would shadow RecBole's built-in model of the same name "
            "(RecBole matches names case-insensitively); choose another name"
        )
    clash = next((p for p in _PLUGINS if p.lower() == name.lower()), None)
    if clash is not None and _PLUGINS[clash].model != model:
        raise ValueError(f"plugin name {name!r} is already registered for {_PLUGINS[clash].model}")
    spec = PluginSpec(name, model, trainer, Path(yaml) if yaml is not None else None)
    _PLUGINS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a plugin (tests register temporary ones)."""
    _PLUGINS.pop(name, None)


def plugin_names() -> list[str]:
    return sorted(_PLUGINS)


def available_models() -> list[str]:
    """Every name the runner accepts: our plugins, then RecBole's built-ins."""
    return plugin_names() + [n for n in builtin_model_names() if n not in _PLUGINS]


def _import_ref(ref: str) -> type:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def resolve(name: str) -> ResolvedModel:
    """Resolve a model name to its class, trainer class and default YAML files."""
    from recbole_ext import compat

    compat.apply()
    if name in _PLUGINS:
        spec = _PLUGINS[name]
        model_class = _import_ref(spec.model)
        if spec.trainer is not None:
            trainer_class = _import_ref(spec.trainer)
        else:
            from recbole.utils import get_trainer

            trainer_class = get_trainer(model_class.type, name)
        yaml_files = [spec.yaml_file] if spec.yaml_file.is_file() else []
        return ResolvedModel(name, model_class, trainer_class, yaml_files, builtin=False)
    if is_builtin(name) and name in builtin_model_names():
        from recbole.utils import get_model, get_trainer

        model_class = get_model(name)
        trainer_class = get_trainer(model_class.type, name)
        own_yaml = MODEL_YAML_DIR / f"{name}.yaml"  # optional protocol overrides for a baseline
        return ResolvedModel(name, model_class, trainer_class, [own_yaml] if own_yaml.is_file() else [], builtin=True)
    known = available_models()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Available: plugins {plugin_names()}; "
        f"RecBole built-ins {builtin_model_names()}"
    )


# --- our plugins (lazy references; the modules are imported only when resolved) ---------------
register("TIGER", "recbole_ext.models.tiger:TIGER", "recbole_ext.trainers.generative:GenerativeTrainer")
register("STREAMRec", "recbole_ext.models.stream_rec:STREAMRec", "recbole_ext.trainers.stream_rec:STREAMRecTrainer")
