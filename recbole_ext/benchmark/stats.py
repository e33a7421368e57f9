"""Statistics over seeds and users: mean ± std, paired significance tests.

Conventions (stated once here, used by every table):

- **mean ± std over seeds**: the mean of a test metric over the seeds that ran, and the *sample*
  standard deviation (``ddof=1``); with a single seed the std is ``None`` (shown without ±).
- **paired tests per user**: each record may store per-user test values
  (``per_user.test = {"user_ids": [...], "<metric>": [...]}``). For each method and dataset the
  seeds are first **averaged per user** (only users present in every seed are kept), so that
  each user contributes one paired observation. Two methods are then aligned on the user ids
  they share, and compared with a two-sided paired t-test (``scipy.stats.ttest_rel``) and a
  two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped).
- **best baseline**: for a metric and dataset, the method of the traditional group
  (``collect.BASELINE_GROUP``) with the highest mean (excluding the method being tested).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from recbole_ext.benchmark.collect import BASELINE_GROUP, Entry
from recbole_ext.metrics import METRIC_KEYS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (``None`` for one value) and count of a metric over seeds."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired comparison of method A against method B on shared users."""

    n_users: int
    mean_diff: float  # mean(A - B)
    t_stat: float
    p_ttest: float
    w_stat: float
    p_wilcoxon: float


@dataclass(frozen=True)
class Comparison:
    """A method compared with a reference method on one dataset and metric."""

    label: str
    dataset: str
    metric: str
    against: str  # the reference's label
    kind: str  # "reference" or "best_baseline"
    result: PairedResult


def mean_std(values: Iterable[float]) -> Summary:
    """Mean and sample standard deviation (``ddof=1``) of finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return Summary(math.nan, None, 0)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else None
    return Summary(float(arr.mean()), std, int(arr.size))


def summarize(entries: Iterable[Entry], metrics: Sequence[str] = METRIC_KEYS
              ) -> dict[tuple[str, str], dict[str, Summary]]:
    """``(label, dataset) -> metric -> Summary`` over the seeds of each method."""
    buckets: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        buckets.setdefault((e.label, e.dataset), []).append(e)
    return {
        key: {m: mean_std(e.test[m] for e in group if m in e.test) for m in metrics}
        for key, group in buckets.items()
    }


def user_means(entries: Iterable[Entry], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-user values averaged over seeds; users kept only when every seed has them.

    User ids may be ints or strings (one kind per dataset). Returns ``(user_ids, values)`` sorted
    by user id, or ``None`` when no entry stores per-user values for ``metric``.
    """
    per_seed: list[dict[int, float]] = []
    for e in entries:
        pu = e.per_user
        if not pu or metric not in pu:
            continue
        ids, vals = pu["user_ids"], pu[metric]
        if len(ids) != len(vals):
            logger.warning("run %s: per-user %s has %d values for %d users; ignored",
                           e.run_id, metric, len(vals), len(ids))
            continue
        try:
            per_seed.append({u: float(v) for u, v in zip(ids, vals)})
        except (TypeError, ValueError):
            logger.warning("run %s: non-numeric per-user %s values; ignored", e.run_id, metric)
    if not per_seed:
        return None
    common = sorted(set.intersection(*(set(d) for d in per_seed)))
    ids = np.asarray(common)  # ints (RecBole's internal ids) or strings (external tokens)
    vals = np.asarray([[d[u] for u in common] for d in per_seed], dtype=float).mean(axis=0)
    return ids, vals


def paired_test(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
                ) -> PairedResult:
    """Two-sided paired t-test and Wilcoxon test of A vs B on the users both have."""
    from scipy import stats as sps

    common, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    x, y = a[1][ia], b[1][ib]
    n = int(common.size)
    if n < 2:
        return PairedResult(n, math.nan, math.nan, math.nan, math.nan, math.nan)
    d = x - y
    mean_diff = float(d.mean())
    if np.allclose(d, d[0], rtol=0, atol=1e-15):
        # Constant differences: t is 0 (no difference, p = 1) or infinite (p = 0).
        same = abs(d[0]) <= 1e-15
        t, p_t = (0.0, 1.0) if same else (math.copysign(math.inf, d[0]), 0.0)
    else:
        res = sps.ttest_rel(x, y)
        t, p_t = float(res.statistic), float(res.pvalue)
    if np.count_nonzero(d) == 0:
        w, p_w = 0.0, 1.0
    else:
        res_w = sps.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
        w, p_w = float(res_w.statistic), float(res_w.pvalue)
    return PairedResult(n, mean_diff, t, p_t, w, p_w)


def best_baseline(summary: dict[tuple[str, str], dict[str, Summary]],
                  groups: dict[str, str], dataset: str, metric: str,
                  exclude: str | None = None) -> str | None:
    """Label of the best method of the traditional group on ``dataset`` for ``metric``."""
    best, best_val = None, -math.inf
    for (label, ds), metrics in sorted(summary.items()):
        if ds != dataset or label == exclude or groups.get(label) != BASELINE_GROUP:
            continue
        s = metrics.get(metric)
        if s is not None and s.n and s.mean > best_val:
            best, best_val = label, s.mean
    return best


def compare_all(entries: Sequence[Entry], reference: str | None,
                metrics: Sequence[str] = METRIC_KEYS) -> list[Comparison]:
    """Paired tests of every method vs ``reference`` (a label; ``None``: none) and vs the best
    baseline, per dataset."""
    summary = summarize(entries, metrics)
    groups = {e.label: e.group for e in entries}
    by_key: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        by_key.setdefault((e.label, e.dataset), []).append(e)
    cache: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray] | None] = {}

    def users(label: str, ds: str, m: str) -> tuple[np.ndarray, np.ndarray] | None:
        if (label, ds, m) not in cache:
            cache[(label, ds, m)] = user_means(by_key.get((label, ds), []), m)
        return cache[(label, ds, m)]

    out: list[Comparison] = []
    for (label, ds) in sorted(by_key):
        for m in metrics:
            a = users(label, ds, m)
            if a is None:
                continue
            targets = []
            if reference and label != reference and (reference, ds) in by_key:
                targets.append((reference, "reference"))
            bb = best_baseline(summary, groups, ds, m, exclude=label)
            if bb is not None:
                targets.append((bb, "best_baseline"))
            for other, kind in targets:
                b = users(other, ds, m)
                if b is None:
                    continue
                out.append(Comparison(label, ds, m, other, kind, paired_test(a, b)))
    return out
