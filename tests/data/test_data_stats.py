"""k-core filtering and statistics on hand-made interactions (exact numbers)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from recbole_ext.data import DatasetStats, compute_stats, get_spec, k_core_filter
from recbole_ext.data.prepare import log_stats


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_k_core_iterates_until_stable(mini):
    inter = _frame(mini.interactions())
    assert compute_stats(inter) == DatasetStats(users=8, items=6, actions=37)
    filtered = k_core_filter(inter, 5)
    assert compute_stats(filtered) == DatasetStats(users=6, items=5, actions=30)
    assert not {"ux", "uy"} & set(filtered["user_id"])


def test_k_core_can_empty_a_dataset():
    inter = _frame([("a", "x", 1), ("a", "y", 2), ("b", "x", 3)])
    assert k_core_filter(inter, 2).empty
    assert compute_stats(k_core_filter(inter, 1)) == DatasetStats(2, 2, 3)


def test_stats_values():
    stats = compute_stats(_frame([("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1)]))
    assert stats.as_dict() == {
        "users": 2,
        "items": 3,
        "actions": 4,
        "mean_length": 2.0,
        "sparsity": pytest.approx(1 - 4 / 6, abs=1e-6),
    }


def test_paper_statistics_are_in_the_catalog():
    assert get_spec("instruments").expected == DatasetStats(57_439, 24_587, 511_836)
    assert get_spec("scientific").expected == DatasetStats(50_985, 25_848, 412_947)
    assert get_spec("scientific2018").expected == DatasetStats(8_317, 4_344, 58_492)


def test_mismatch_is_a_loud_warning(caplog):
    spec = get_spec("instruments")
    with caplog.at_level(logging.INFO, logger="recbole_ext.data"):
        assert log_stats("instruments", DatasetStats(57_349, 24_587, 511_836), spec) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "STATISTICS MISMATCH" in warnings[0].getMessage()
    assert "57,349" in warnings[0].getMessage() and "57,439" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recbole_ext.data"):
        assert log_stats("instruments", spec.expected, spec) is True
    assert "| 57,439 | 24,587 | 511,836 | 8.91 |" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
