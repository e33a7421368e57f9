"""The metrics every run stores and every table shows: keys, display labels, extraction.

A leaf module (no project imports), read by the runner, the stage trainer and the benchmark.
The keys are RecBole's lower-case result keys for ``metrics: [Hit, NDCG]`` at ``topk: [5, 10]``
in ``properties/overall.yaml`` (a test checks the two agree). Under leave-one-out RecBole's
``hit@K`` is the paper's Recall@K, hence the labels.
"""

from __future__ import annotations

from typing import Any

#: Display label of each stored metric key, in column order.
METRIC_LABELS = {"hit@5": "R@5", "hit@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}
#: RecBole's lower-case keys, as stored in run records.
METRIC_KEYS = tuple(METRIC_LABELS)
#: The one metric of the efficiency table and the plots: the protocol's ``valid_metric``.
PRIMARY_METRIC = "ndcg@10"


def metric_values(result: Any) -> dict[str, float]:
    """The stored metrics of a RecBole result dict (keys lower-cased; absent metrics left out)."""
    result = {str(k).lower(): v for k, v in dict(result or {}).items()}
    return {k: float(result[k]) for k in METRIC_KEYS if k in result}
