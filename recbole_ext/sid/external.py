"""Bring-your-own semantic IDs: the LC-Rec / LETTER ``*.index.json`` format.

The file maps a raw item token to its code tokens, level l written ``<{letter_l}_{code}>`` with
letters a, b, c, ... in level order, e.g. ``{"0": ["<a_12>", "<b_3>", "<c_250>", "<d_7>"]}``.
Every item of the dataset must appear, no other item may, and all IDs must have the same length.
Items sharing a full ID get one more level (the collision code) and the count is reported.

Keys are raw item tokens of the dataset (what its ``.item`` / ``.inter`` files call the item),
never positions: a key ``"7"`` is the item whose token is ``7``, whatever RecBole's internal id for
it. A file keyed by integers that are not this dataset's tokens (e.g. positions 0..N-1 in another
tool's item list) fails with a message that says so; convert its keys to item tokens first.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np
import torch

from recbole_ext.sid.collisions import add_collision_code

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


class SIDFileError(ValueError):
    """The ID file does not match the dataset or the format."""


def _show(keys: list[str], n: int = 5) -> str:
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def _integer_key_hint(keys: list[str], item_tokens: list[str]) -> str:
    """A sentence for a key mismatch where the file's keys are integers (positions, not tokens?)."""
    if not keys or not all(k.isdigit() for k in keys):
        return ""
    ints = sorted(int(k) for k in keys)
    shape = f"the integers {ints[0]}..{ints[-1]}" if ints == list(range(ints[0], ints[0] + len(ints))) else "integers"
    return (f". The file's keys are {shape}: each key is read as an item token of this dataset "
            f"(e.g. {item_tokens[0]!r}), never as a position in an item list; if the keys are positions "
            "or ids of another tool, map them to this dataset's item tokens first")


def _refuse_unknown_keys(path: str, keys: list[str], item_tokens: list[str]) -> None:
    """SIDFileError when a key of the ID file is no item token of ``item_tokens``."""
    wanted = set(item_tokens)
    unknown = [k for k in keys if k not in wanted]
    if unknown:
        raise SIDFileError(
            f"{path}: {len(unknown)} items are not in the dataset, e.g. {_show(unknown)} "
            "(are the keys raw item tokens of this dataset? --sid_allow_extra_items=True ignores them)"
            f"{_integer_key_hint(keys, item_tokens)}"
        )


def check_keys_in_interactions(path: str | os.PathLike, inter_file: str | os.PathLike, item_field: str) -> None:
    """Before RecBole loads a dataset: every key of the ID file at ``path`` must be an item token of the
    raw interaction file (RecBole's filtering only removes items, so a key unknown here stays unknown;
    an item without an ID is found after filtering, by :func:`load_index_json`). Raises
    :class:`SIDFileError` as :func:`load_index_json` would, seconds before the data is loaded."""
    import pandas as pd

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            keys = list(json.load(f))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise SIDFileError(f"{path}: cannot read the ID file: {e}") from e
    if not os.path.isfile(inter_file):
        return  # another layout (e.g. RecBole's benchmark_filename splits): load_index_json checks after loading
    header = pd.read_csv(inter_file, sep="\t", nrows=0).columns
    column = next((c for c in header if str(c).split(":")[0] == item_field), None)
    if column is None:
        return  # an item column named otherwise: load_index_json checks after loading
    items = pd.read_csv(inter_file, sep="\t", usecols=[column], dtype=str)[column].dropna().unique().tolist()
    _refuse_unknown_keys(path, keys, items)


def load_index_json(
    path: str | os.PathLike,
    item_tokens: list[str],
    codebook_sizes: list[int] | None = None,
    collision_codebook_size: int | None = None,
    allow_extra_items: bool = False,
) -> tuple[torch.Tensor, tuple[int, ...], dict]:
    """Read ``path`` -> (codes [N, m] in ``item_tokens`` order, codebook sizes, stats).

    ``codebook_sizes`` defaults to (max code + 1) per level. A collision level, if needed, gets
    ``collision_codebook_size`` codes (default: the largest group size).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SIDFileError(f"{path}: cannot read the ID file: {e}") from e
    if not isinstance(raw, dict):
        raise SIDFileError(f"{path}: expected a JSON object item token -> list of code tokens, got a "
                           f"{type(raw).__name__} (a list indexed by position is not accepted: key it by item token)")

    missing = [t for t in item_tokens if t not in raw]
    if missing:
        hint = _integer_key_hint(list(raw), item_tokens)
        raise SIDFileError(f"{path}: {len(missing)} dataset items have no ID, e.g. {_show(missing)}{hint}")
    if not allow_extra_items:
        _refuse_unknown_keys(path, list(raw), item_tokens)

    m = None
    codes = np.empty((len(item_tokens), 0), dtype=np.int64)
    for row, key in enumerate(item_tokens):
        toks = raw[key]
        if not isinstance(toks, list) or not toks:
            raise SIDFileError(f"{path}: item {key!r}: expected a non-empty list of tokens, got {toks!r}")
        if m is None:
            m = len(toks)
            codes = np.empty((len(item_tokens), m), dtype=np.int64)
        elif len(toks) != m:
            raise SIDFileError(f"{path}: item {key!r} has {len(toks)} tokens, earlier items have {m}")
        for level, tok in enumerate(toks):
            match = _TOKEN.match(tok) if isinstance(tok, str) else None
            if match is None or match.group(1) != chr(ord("a") + level):
                raise SIDFileError(
                    f"{path}: item {key!r}: malformed token {tok!r} at level {level} "
                    f"(expected '<{chr(ord('a') + level)}_N>')"
                )
            codes[row, level] = int(match.group(2))

    found = tuple(int(x) + 1 for x in codes.max(0))
    if codebook_sizes is None:
        sizes = found
    else:
        sizes = tuple(int(s) for s in codebook_sizes)
        if len(sizes) != m or any(f > s for f, s in zip(found, sizes)):
            raise SIDFileError(f"{path}: codes need sizes {found}, configured codebook_sizes are {sizes}")

    n_unique = len(np.unique(codes, axis=0))
    stats: dict = {"source": path, "n_items": len(item_tokens), "n_duplicate_items": len(item_tokens) - n_unique}
    out = torch.from_numpy(codes)
    if n_unique < len(item_tokens):
        out, cstats = add_collision_code(codes, collision_codebook_size or len(item_tokens))
        k = int(out[:, -1].max()) + 1
        sizes = sizes + (collision_codebook_size or k,)
        stats["collision"] = cstats
        logger.warning(
            "%s: %d items share an ID with another item; appended a collision level (%d codes)",
            path, cstats["n_colliding_items"], sizes[-1],
        )
    return out, sizes, stats
