"""The stage interface of multi-stage training, and typed stage configs read from the YAML.

A :class:`Stage` is one phase of training (STREAM-Rec's PT, SFT, RL; LASAR's grounding, latent
reasoning, RL): its name, its typed config (a frozen dataclass read from the run's config by
:func:`read_config`), its learning-rate schedule (:class:`StageSchedule`), and the hooks the
:class:`~recbole_ext.trainers.staged.StagedTrainer` calls:

* ``begin(model)``: before the stage is trained (not when its weights come from the cache);
* ``begin_epoch(model, train_data, epoch)``: before each epoch, with RecBole's loader (relabelling);
* ``batches(train_data, epoch)``: what one epoch iterates (e.g. relabel first, cap or repeat batches);
* ``loss(model, interaction)``: the training loss of one batch;
* ``train_mode(model)``: the module modes while training (e.g. RL without dropout);
* ``decode_free_steps(model)``: free decoding steps before the item when this stage is evaluated;
* ``reset_statistics()`` / ``statistics()``: per-epoch means for the log and the stage record.

Defaults live in one place, the YAML (``properties/``): a config class has no default values, and
:func:`read_config` fails naming the key when a required one is missing. The stage cache key is
built from ``key_config()`` (the typed config and schedule), so a new setting of a stage is part
of its key as soon as the stage can read it. :func:`claimed_keys` lists the config keys a stage
reads, which the trainer leaves out of the data key shared by all stages.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterable
from typing import Any

import torch

_CASTS = {"int": int, "float": float, "bool": bool, "str": str}


class MissingConfigKeyError(KeyError):
    """A key a typed config needs is absent from every YAML layer and the command line."""


def config_key(cls_field: dataclasses.Field, prefix: str) -> str:
    """The config key of a field: ``metadata['key']`` when set (a key shared with other parts), else prefix + name."""
    return cls_field.metadata.get("key") or prefix + cls_field.name


def read_config(cls: type, config: Any, prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``config`` (RecBole's Config or a dict).

    A field typed ``X | None`` may be None (YAML ``~``); any other field must be set, else
    :class:`MissingConfigKeyError` names the key. Scalars are cast to the field's type.
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = config_key(f, prefix)
        value = config[key] if key in _keys(config) else None
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if value is None:
            if not optional:
                raise MissingConfigKeyError(
                    f"config key {key!r} ({cls.__name__}.{f.name}) is not set: give it a value in the model's "
                    f"YAML (properties/) or on the command line (--{key}=...)")
            values[f.name] = None
            continue
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        cast = _CASTS.get(getattr(base, "__name__", ""))
        if cast is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"config key {key!r} ({cls.__name__}.{f.name}) takes a whole number, got {value!r}")
        values[f.name] = cast(value) if cast is not None else value
    return cls(**values)


def _keys(config: Any) -> Iterable[str]:
    final = getattr(config, "final_config_dict", None)
    return final if final is not None else config


@dataclasses.dataclass(frozen=True)
class StageSchedule:
    """Learning rate, epoch budget, per-step schedule and time budget of one stage:
    ``<stage>_<key>`` when set, else the run's ``<key>``."""

    learning_rate: float
    epochs: int
    warmup_steps: int
    lr_decay: str
    train_time_budget_s: float | None
    #: batches per epoch (a shuffled epoch's first ones; ``<stage>_max_batches`` only); None = all
    max_batches: int | None = None

    KEYS = ("learning_rate", "epochs", "warmup_steps", "lr_decay", "train_time_budget_s", "max_batches")

    @classmethod
    def read(cls, config: Any, prefix: str) -> StageSchedule:
        def pick(key: str) -> Any:
            own = config[prefix + key] if prefix + key in _keys(config) else None
            return config[key] if own is None else own

        budget = pick("train_time_budget_s")
        cap = config[prefix + "max_batches"] if prefix + "max_batches" in _keys(config) else None
        if cap is not None and int(cap) < 1:
            raise ValueError(f"{prefix}max_batches must be >= 1 or ~ (all batches), got {cap!r}")
        return cls(float(pick("learning_rate")), int(pick("epochs")), int(pick("warmup_steps") or 0),
                   str(pick("lr_decay") or "constant"), None if budget is None else float(budget),
                   None if cap is None else int(cap))

    @staticmethod
    def keys(prefix: str) -> set[str]:
        return {k for base in StageSchedule.KEYS for k in (base, prefix + base)}


class CappedRepeatedBatches:
    """The first ``limit`` batches of ``data`` (all when None), each ``times`` times in a row."""

    def __init__(self, data, times: int = 1, limit: int | None = None):
        self.data, self.times, self.limit = data, times, limit

    def __iter__(self):
        for batch in itertools.islice(self.data, self.limit):
            for _ in range(self.times):
                yield batch

    def __len__(self) -> int:
        n = len(self.data) if self.limit is None else min(self.limit, len(self.data))
        return n * self.times


class Stage:
    """One training stage; subclasses set ``name`` and ``config`` and implement :meth:`loss`."""

    name: str = ""
    #: prefix of the stage's own keys in the YAML (``pt_``, ``sft_``, ``rl_``)
    prefix: str = ""

    def __init__(self, config: Any, schedule: StageSchedule):
        self.config = config  # a frozen dataclass
        self.schedule = schedule
        self._sums: dict[str, torch.Tensor | float] = {}
        self._steps = 0
        #: facts of the stage's training (e.g. label diagnostics), added to its row of the record
        self.notes: dict[str, Any] = {}

    # --- what defines the stage ------------------------------------------------------------------
    def key_config(self) -> dict:
        """Everything that defines what this stage trains (hashed into its cache key); a schedule
        field added later (``max_batches``) enters only when set, so existing keys stay valid."""
        schedule = dataclasses.asdict(self.schedule)
        if schedule["max_batches"] is None:
            del schedule["max_batches"]
        return {"config": dataclasses.asdict(self.config), "schedule": schedule}

    def claimed_keys(self) -> set[str]:
        """Config keys this stage reads (left out of the data key shared by all stages)."""
        own = {config_key(f, self.prefix) for f in dataclasses.fields(self.config)}
        return own | StageSchedule.keys(self.prefix)

    # --- hooks ---------------------------------------------------------------------------------------
    def begin(self, model) -> None:
        """Before the stage is trained (not called when its weights come from the cache)."""

    def begin_epoch(self, model, train_data, epoch: int) -> None:
        """Before each training epoch, with RecBole's training loader (e.g. relabel the samples)."""

    def batches(self, train_data, epoch: int):
        """The batches of one training epoch (``train_data`` may already be device-resident), the
        first ``<stage>_max_batches`` of them when that is set."""
        if self.schedule.max_batches is not None:
            return CappedRepeatedBatches(train_data, 1, self.schedule.max_batches)
        return train_data

    def loss(self, model, interaction) -> torch.Tensor:
        raise NotImplementedError

    def train_mode(self, model) -> None:
        model.train()

    def decode_free_steps(self, model) -> int:
        """Free (reasoning) decoding steps before the item when this stage is evaluated."""
        return 0

    # --- statistics ----------------------------------------------------------------------------------
    def reset_statistics(self) -> None:
        self._sums, self._steps = {}, 0

    def add_statistics(self, values: dict[str, torch.Tensor | float]) -> None:
        """Accumulate one step's values (tensors stay on the device: no host sync per step)."""
        self._steps += 1
        for name, value in values.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self._sums[name] = self._sums.get(name, 0.0) + value

    def statistics(self) -> dict[str, float]:
        """Mean of each accumulated value since the last reset."""
        return {k: round(float(v) / max(1, self._steps), 5) for k, v in self._sums.items()}


def select_stages(available: list[Stage], wanted: Any) -> list[Stage]:
    """The stages named by ``wanted`` (a list, or ``"pt,sft"`` from the command line; None = all),
    which must be distinct and in the order of ``available``."""
    names = [s.name for s in available]
    if wanted is None:
        return list(available)
    items = wanted.replace("+", ",").split(",") if isinstance(wanted, str) else list(wanted)
    chosen = [str(s).strip().lower() for s in items if str(s).strip()]
    unknown = [s for s in chosen if s not in names]
    if unknown or not chosen:
        raise ValueError(f"stages must be a non-empty ordered subset of {names}, got {wanted!r}")
    if chosen != sorted(set(chosen), key=names.index):
        raise ValueError(f"stages must be distinct and in the order {', '.join(names)}; got {wanted!r}")
    return [available[names.index(n)] for n in chosen]
