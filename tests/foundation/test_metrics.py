"""The one list of metrics: agrees with the protocol YAML; extraction from RecBole's result dicts."""

import itertools

import numpy as np
import yaml

from recbole_ext.metrics import METRIC_KEYS, METRIC_LABELS, PRIMARY_METRIC, metric_values
from recbole_ext.registry import PROPERTIES_DIR


def test_keys_are_the_protocols_metrics_at_its_cutoffs():
    protocol = yaml.safe_load((PROPERTIES_DIR / "overall.yaml").read_text(encoding="utf-8"))
    expected = [f"{m.lower()}@{k}" for m, k in itertools.product(protocol["metrics"], protocol["topk"])]
    assert list(METRIC_KEYS) == expected == ["hit@5", "hit@10", "ndcg@5", "ndcg@10"]  # RecBole's result order
    assert [METRIC_LABELS[k] for k in METRIC_KEYS] == ["R@5", "R@10", "N@5", "N@10"]
    assert PRIMARY_METRIC == protocol["valid_metric"].lower() == "ndcg@10"


def test_metric_values_lowercases_converts_and_drops():
    result = {"Hit@5": 1, "NDCG@10": np.float32(0.25), "mrr@10": 0.5, "hit@10": "0.75"}
    values = metric_values(result)
    assert values == {"hit@5": 1.0, "hit@10": 0.75, "ndcg@10": 0.25}  # mrr@10 is not stored; ndcg@5 absent
    assert all(type(v) is float for v in values.values())
    assert list(values) == ["hit@5", "hit@10", "ndcg@10"]  # METRIC_KEYS order, not the input's
    assert metric_values(None) == {} and metric_values({}) == {}
