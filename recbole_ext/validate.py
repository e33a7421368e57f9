"""Checks of a run's config before any data is loaded, each failing with one line that says what to write.

:func:`check_config` runs on the layered config (``ExtConfig``; building one reads no data):

* every key set by the user (config files, ``--key=value``) whose default (RecBole's YAML, ours in
  ``properties/``) is a number or a boolean must be one of the same kind: ``--epochs=abc`` fails
  here instead of as a ``TypeError`` deep in RecBole's trainer. The expected kind comes from the
  defaults themselves, so there is no second list of keys to keep in step (integers and floats
  are one kind: RecBole's YAML writes ``0`` for float keys; but a key whose default is a non-zero
  integer takes no fraction: ``--epochs=1.5`` fails here instead of training one epoch);
* our own options: ``sid_tokenizer`` one of the tokenizers, an existing ``sid_path`` file holding a
  JSON object when it is ``external`` (whether its keys are the dataset's items is checked once the
  items are known: ``SIDFileError``), ``num_beams`` at least the largest ``topk``.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any


class ConfigValueError(ValueError):
    """A config value that cannot work; the message names the key and what to write instead."""


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"  # int and float alike: RecBole's YAML writes 0 for float keys too (dropout_prob: 0)
    return None


def _fits(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_WHAT = {"bool": "True or False", "number": "a number"}


def check_value_types(defaults: dict[str, Any], given: dict[str, Any], final: dict[str, Any]) -> None:
    """Each key in ``given`` whose value in ``defaults`` is a bool / int / float must hold one in ``final``;
    a key whose default is a non-zero integer (a count: epochs, batch sizes, beams, layers) takes no
    fraction (``--epochs=1.5``; a default of 0 may stand for a float, as RecBole's YAML writes it)."""
    for key in sorted(given):
        default = defaults.get(key)
        kind = _kind(default)
        value = final.get(key)
        if kind is None or value is None:
            continue
        if not _fits(value, kind):
            raise ConfigValueError(f"{key}={value!r}: {key} must be {_WHAT[kind]} (its default is {default!r}); "
                                   f"write e.g. --{key}={default!r}")
        if _counts(default) and isinstance(value, float) and not value.is_integer():
            raise ConfigValueError(f"{key}={value!r}: {key} counts something and takes a whole number (its default is "
                                   f"{default!r}); write e.g. --{key}={max(1, round(value))}")


def _counts(default: Any) -> bool:
    return isinstance(default, int) and not isinstance(default, bool) and default != 0


def check_own_options(config: Any) -> None:
    """Our options that RecBole knows nothing about (only those the model's YAML declares)."""
    from recbole_ext.sid.cache import METHODS

    keys = config.final_config_dict
    method = keys.get("sid_tokenizer")
    if "sid_tokenizer" in keys and method not in METHODS:
        raise ConfigValueError(f"sid_tokenizer={method!r} is not a tokenizer; choose one of {', '.join(METHODS)} "
                               "(e.g. --sid_tokenizer=rqvae)")
    if method == "external":
        path = keys.get("sid_path")
        if not path:
            raise ConfigValueError("sid_tokenizer=external needs the semantic-ID file: --sid_path=FILE.index.json")
        if not Path(path).is_file():
            raise ConfigValueError(f"sid_path: no such file {path} (give an existing *.index.json; a relative path "
                                   "is the directory you run from)")
        try:
            with open(path, encoding="utf-8") as f:
                ids = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigValueError(f"sid_path {path} is not readable JSON ({error}); it must map each item token "
                                   'to its code tokens, e.g. {"item1": ["<a_12>", "<b_3>", "<c_250>"]}') from None
        if not isinstance(ids, dict):
            raise ConfigValueError(f"sid_path {path} holds a JSON {type(ids).__name__}, not an object mapping each item "
                                   'token to its code tokens, e.g. {"item1": ["<a_12>", "<b_3>", "<c_250>"]}')
    beams, topk = keys.get("num_beams"), keys.get("topk")
    if beams is not None and topk:
        ks = topk if isinstance(topk, (list, tuple)) else [topk]
        if not isinstance(beams, int) or not all(isinstance(k, int) for k in ks):
            return  # check_value_types reports the malformed one
        if max(ks) > beams:
            raise ConfigValueError(f"num_beams={beams} < max(topk)={max(ks)}: beam search ranks only num_beams items; "
                                   f"set --num_beams={max(ks)} or more, or a smaller topk")


def check_config(config: Any) -> None:
    """Every check above, on an ``ExtConfig`` (its defaults, what the user set, and the result)."""
    check_value_types(config.internal_config_dict, config.external_config_dict, config.final_config_dict)
    check_own_options(config)
