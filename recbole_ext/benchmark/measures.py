"""Quantities of one table entry that a record may store in several places: latency, reasoning length.

Read by the efficiency table (``tables.py``) and the plots (``plots.py``), so that both show the
same number for the same entry.
"""

from __future__ import annotations

from typing import Any

from recbole_ext.benchmark.collect import Entry


def number(x: Any) -> float | None:
    """``x`` as a float when it is a number (not a bool), else ``None``."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def ms_per_user(e: Entry) -> float | None:
    """Inference time per test user in ms.

    ``extra.decode_ms_per_user`` when the model reports it, else the runner's
    ``timings.test_ms_per_user`` (whole test pass / test users), else ``timings.test_s`` divided
    by the number of test users (from ``per_user.test.user_ids`` or ``extra.n_test_users``).
    """
    for v in (e.extra.get("decode_ms_per_user"), e.extra.get("ms_per_user"),
              e.timings.get("test_ms_per_user")):
        if number(v) is not None:
            return number(v)
    test_s = e.timings.get("test_s")
    n = len(e.per_user["user_ids"]) if e.per_user else e.extra.get("n_test_users")
    if isinstance(test_s, (int, float)) and isinstance(n, (int, float)) and n > 0:
        return float(test_s) * 1000.0 / float(n)
    return None


def reasoning_len_of(e: Entry) -> float | None:
    """The reasoning length of an entry (``extra.reasoning_len``, else ``config.reasoning_len``), or ``None``."""
    for src in (e.extra, e.config):
        if number(src.get("reasoning_len")) is not None:
            return number(src.get("reasoning_len"))
    return None


def reasoning_steps(e: Entry) -> float | None:
    """Free (reasoning) tokens decoded per user: ``extra.mean_reasoning_steps`` when the model
    counts them (adaptive methods), else for a stage row the steps that stage decoded
    (``decode_free_steps``: PT decodes its neighbour tokens, SFT and RL their reasoning tokens),
    else ``extra.reasoning_len``."""
    keys = ("mean_reasoning_steps", "decode_free_steps", "reasoning_len") if e.stage else \
        ("mean_reasoning_steps", "reasoning_len")
    for key in keys:
        if number(e.extra.get(key)) is not None:
            return number(e.extra.get(key))
    return None


def train_s_per_epoch(e: Entry) -> float | None:
    """Training seconds per epoch: a stage row's own (``extra.s_per_epoch``, from the stage's
    epochs only; None for a stage loaded from the cache or recorded before stages kept it), else
    the run's ``timings.s_per_epoch``."""
    if e.stage is not None:
        return number(e.extra.get("s_per_epoch"))
    return number(e.timings.get("s_per_epoch"))
