"""Model registry: a model name resolves to its class, its trainer, its group and its default YAML.

Our plugins are listed as lazy ``"module:Class"`` strings, so importing this module imports
neither transformers nor the models. A name that is not a plugin falls through to RecBole's own
built-ins (``recbole.utils.get_model`` / ``get_trainer``), so Caser, GRU4Rec, SASRec and BERT4Rec
run through the same path with RecBole's own code. A plugin may not take a built-in's name:
RecBole resolves names case-insensitively by file name, so a clash would be silent.

Every entry declares its group (one of :data:`MODEL_GROUPS`; built-ins are ``traditional``), which
the benchmark tables use to section their rows. A plugin may also declare a family: the YAML file
``properties/family/<family>.yaml`` of keys its family shares, layered before the model's own file.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = PROJECT_ROOT / "properties"
MODEL_YAML_DIR = PROPERTIES_DIR / "model"
FAMILY_YAML_DIR = PROPERTIES_DIR / "family"

#: Model groups, in the order the benchmark tables show them.
MODEL_GROUPS = ("traditional", "generative", "reasoning")
BUILTIN_GROUP = "traditional"  # every RecBole built-in

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
    """One plugin: lazy ``module:Class`` references, its group and its documented default YAML."""

    name: str
    model: str
    group: str  # one of MODEL_GROUPS
    trainer: str | None = None  # None: RecBole's trainer for the model's type
    yaml: Path | None = None  # default: properties/model/<name>.yaml
    family: str | None = None  # properties/family/<family>.yaml, layered before the model's YAML

    @property
    def yaml_file(self) -> Path:
        return self.yaml if self.yaml is not None else MODEL_YAML_DIR / f"{self.name}.yaml"

    @property
    def family_file(self) -> Path | None:
        return FAMILY_YAML_DIR / f"{self.family}.yaml" if self.family is not None else None

    @property
    def yaml_files(self) -> list[Path]:
        """The default YAML layers that exist, lowest first: the family's, then the model's."""
        return [p for p in (self.family_file, self.yaml_file) if p is not None and p.is_file()]


@dataclass
class ResolvedModel:
    """What the runner needs to build and train one model."""

    name: str
    model_class: type
    trainer_class: type
    group: str
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
    return list(_builtin_model_names())


@functools.cache
def _builtin_model_names() -> tuple[str, ...]:  # the installed package does not change while we run
    names = []
    for package in _RECBOLE_MODEL_PACKAGES:
        init = _recbole_model_dir() / package / "__init__.py"
        for line in init.read_text(encoding="utf-8").splitlines():
            # lines look like: "from recbole.model.sequential_recommender.sasrec import SASRec"
            parts = line.split()
            if len(parts) == 4 and parts[0] == "from" and parts[2] == "import" and parts[3] != "*":
                names.append(parts[3])
    return tuple(sorted(set(names)))


def is_builtin(name: str) -> bool:
    """True when RecBole's ``get_model`` would resolve ``name`` (matched by lower-case file name)."""
    model_dir = _recbole_model_dir()
    return any((model_dir / pkg / f"{name.lower()}.py").is_file() for pkg in _RECBOLE_MODEL_PACKAGES)


def register(name: str, model: str, trainer: str | None = None, yaml: Path | str | None = None, *,
             group: str, family: str | None = None) -> PluginSpec:
    """Register a plugin model of ``group`` (and ``family``, if any).

    Raises if the name is taken by a built-in or another plugin, if the group is not one of
    :data:`MODEL_GROUPS`, or if the family has no file in ``properties/family/``.
    """
    if is_builtin(name):
        raise ValueError(
            f"plugin name {name!r} would shadow RecBole's built-in model of the same name "
            "(RecBole matches names case-insensitively); choose another name"
        )
    clash = next((p for p in _PLUGINS if p.lower() == name.lower()), None)
    if clash is not None and _PLUGINS[clash].model != model:
        raise ValueError(f"plugin name {name!r} is already registered for {_PLUGINS[clash].model}")
    if group not in MODEL_GROUPS:
        raise ValueError(f"plugin {name!r}: unknown group {group!r}; choose one of {list(MODEL_GROUPS)}")
    spec = PluginSpec(name, model, group, trainer, Path(yaml) if yaml is not None else None, family)
    if spec.family_file is not None and not spec.family_file.is_file():
        known = sorted(p.stem for p in FAMILY_YAML_DIR.glob("*.yaml"))
        raise ValueError(f"plugin {name!r}: family {family!r} has no file {spec.family_file}; known families: {known}")
    _PLUGINS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a plugin (tests register temporary ones)."""
    _PLUGINS.pop(name, None)


def plugin_names() -> list[str]:
    return sorted(_PLUGINS)


def plugin_spec(name: str) -> PluginSpec:
    """The registered entry of a plugin (``KeyError`` for a name that is not one)."""
    return _PLUGINS[name]


def available_models() -> list[str]:
    """Every name the runner accepts: our plugins, then RecBole's built-ins."""
    return plugin_names() + [n for n in builtin_model_names() if n not in _PLUGINS]


def _import_ref(ref: str) -> type:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _is_known_builtin(name: str) -> bool:
    return is_builtin(name) and name in builtin_model_names()


def _unknown_model(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, available_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {name!r}.{hint} Available: plugins {plugin_names()}; "
        f"RecBole built-ins {builtin_model_names()}"
    )


def model_group(name: str) -> str:
    """The group of a model (one of :data:`MODEL_GROUPS`); built-ins are ``traditional``.

    Imports nothing. Raises :class:`UnknownModelError` for a name that is neither a plugin nor a built-in.
    """
    if name in _PLUGINS:
        return _PLUGINS[name].group
    if _is_known_builtin(name):
        return BUILTIN_GROUP
    raise _unknown_model(name)


def yaml_files(name: str) -> list[Path]:
    """A model's default YAML layers that exist, lowest first (family, then model); imports nothing.

    A built-in has at most its own optional ``properties/model/<Name>.yaml`` (protocol overrides for a
    baseline). Raises :class:`UnknownModelError` for a name that is neither a plugin nor a built-in.
    """
    if name in _PLUGINS:
        return _PLUGINS[name].yaml_files
    if _is_known_builtin(name):
        own_yaml = MODEL_YAML_DIR / f"{name}.yaml"
        return [own_yaml] if own_yaml.is_file() else []
    raise _unknown_model(name)


def resolve(name: str) -> ResolvedModel:
    """Resolve a model name to its class, trainer class, group and default YAML files."""
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
        return ResolvedModel(name, model_class, trainer_class, spec.group, spec.yaml_files, builtin=False)
    if _is_known_builtin(name):
        from recbole.utils import get_model, get_trainer

        model_class = get_model(name)
        trainer_class = get_trainer(model_class.type, name)
        return ResolvedModel(name, model_class, trainer_class, BUILTIN_GROUP, yaml_files(name), builtin=True)
    raise _unknown_model(name)


# --- our plugins (lazy references; the modules are imported only when resolved) ---------------
register("TIGER", "recbole_ext.models.tiger:TIGER", "recbole_ext.trainers.generative:GenerativeTrainer",
         group="generative", family="sid_generative")
register("STREAMRec", "recbole_ext.models.stream_rec:STREAMRec", "recbole_ext.trainers.staged:StagedTrainer",
         group="reasoning", family="sid_generative")
register("LASAR", "recbole_ext.models.lasar:LASAR", "recbole_ext.trainers.staged:StagedTrainer",
         group="reasoning", family="sid_generative")
register("TwiSTAR", "recbole_ext.models.twistar:TwiSTAR", "recbole_ext.trainers.staged:StagedTrainer", group="reasoning", family="sid_generative")
register("ReaRec", "recbole_ext.models.rearec:ReaRec", group="reasoning")
register("SASRecBCE", "recbole_ext.models.sasrec_bce:SASRecBCE", group="traditional")
