"""Statistics on hand-made data: mean ± std over seeds and paired p-values vs known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recbole_ext.benchmark.collect import Entry
from recbole_ext.benchmark.stats import compare_all, mean_std, paired_test, summarize, user_means


def entry(label: str, seed: int, ids: list[int], ndcg: list[float], group: str = "Generative",
          dataset: str = "ds") -> Entry:
    return Entry(label=label, group=group, model=label, dataset=dataset, seed=seed,
                 run_id=f"{label}-{seed}", stage=None, test={"ndcg@10": float(np.mean(ndcg))},
                 valid={}, per_user={"user_ids": ids, "ndcg@10": ndcg}, extra={}, timings={},
                 config={})


def t4_two_sided_p(t: float) -> float:
    """Two-sided p of Student's t with 4 degrees of freedom, in closed form.

    For nu = 4 the CDF is F(t) = 1/2 + (3/4) x (1 - x^2/3) with x = t / sqrt(t^2 + 4),
    so p = 2 (1 - F(|t|)) = 1 - (3/2) x + (1/2) x^3.
    """
    x = abs(t) / math.sqrt(t * t + 4)
    return 1 - 1.5 * x + 0.5 * x ** 3


def test_mean_std_uses_sample_std() -> None:
    s = mean_std([0.1, 0.2, 0.3])
    assert s.n == 3
    assert s.mean == pytest.approx(0.2)
    assert s.std == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / (3 - 1))
    one = mean_std([0.5])
    assert (one.mean, one.std, one.n) == (0.5, None, 1)
    assert mean_std([]).n == 0


def test_paired_t_and_wilcoxon_against_hand_computed_example() -> None:
    # Differences d = a - b = [.1, .2, .3, .4, .5]: mean .3, sample sd sqrt(.025),
    # t = .3 / (sqrt(.025) / sqrt(5)) = 3 sqrt(2) with 4 df.
    b = np.array([0.10, 0.20, 0.30, 0.40, 0.50])
    a = b + np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    ids = np.arange(5)
    res = paired_test((ids, a), (ids, b))
    assert res.n_users == 5
    assert res.mean_diff == pytest.approx(0.3)
    assert res.t_stat == pytest.approx(3 * math.sqrt(2))
    assert res.p_ttest == pytest.approx(t4_two_sided_p(3 * math.sqrt(2)), rel=1e-9)
    assert res.p_ttest == pytest.approx(0.013236, abs=1e-6)
    # Wilcoxon, exact: all 5 differences positive, W = 0 (smaller rank sum); P(W+ = 15) =
    # 1/32 under H0, two-sided p = 2/32.
    assert res.w_stat == 0.0
    assert res.p_wilcoxon == pytest.approx(2 / 32)


def test_paired_test_aligns_users_by_id() -> None:
    a = (np.array([3, 1, 2, 0, 4]), np.array([0.4, 0.2, 0.3, 0.1, 0.5]) + [0.4, 0.2, 0.3, 0.1, 0.5])
    b = (np.array([0, 1, 2, 3, 4, 99]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 7.0]))
    order = np.argsort(a[0])
    res = paired_test((a[0][order], a[1][order]), b)
    assert res.n_users == 5
    assert res.p_ttest == pytest.approx(t4_two_sided_p(3 * math.sqrt(2)))


def test_identical_methods_give_p_one() -> None:
    ids = np.arange(4)
    v = np.array([0.1, 0.0, 1.0, 0.5])
    res = paired_test((ids, v), (ids, v))
    assert (res.p_ttest, res.p_wilcoxon, res.mean_diff) == (1.0, 1.0, 0.0)


def test_seeds_are_averaged_per_user_on_common_users() -> None:
    e1 = entry("M", 1, [1, 2, 3], [0.0, 1.0, 0.5])
    e2 = entry("M", 2, [2, 3, 4], [0.0, 0.5, 0.9])
    ids, vals = user_means([e1, e2], "ndcg@10")
    assert ids.tolist() == [2, 3]
    assert vals.tolist() == [0.5, 0.5]
    assert user_means([e1], "hit@5") is None
    tokens = entry("T", 1, ["u2", "u1"], [0.25, 0.5])
    ids, vals = user_means([tokens], "ndcg@10")
    assert ids.tolist() == ["u1", "u2"] and vals.tolist() == [0.5, 0.25]
    broken = entry("B", 1, [1, 2], [0.5, 0.5])
    broken.per_user["ndcg@10"] = [0.5, None]
    assert user_means([broken], "ndcg@10") is None


def test_compare_all_against_reference_and_best_baseline() -> None:
    ids = [0, 1, 2, 3, 4]
    base = [0.1, 0.2, 0.3, 0.4, 0.5]
    better = [0.2, 0.4, 0.6, 0.8, 1.0]
    entries = [
        entry("TIGER", 1, ids, base),
        entry("SASRec", 1, ids, [0.0, 0.2, 0.3, 0.4, 0.5], group="Traditional"),
        entry("GRU4Rec", 1, ids, [0.0, 0.0, 0.0, 0.0, 0.1], group="Traditional"),
        entry("Ours", 1, ids, better),
        entry("Ours", 2, ids, better),
    ]
    summ = summarize(entries, ["ndcg@10"])
    assert summ[("Ours", "ds")]["ndcg@10"].n == 2
    comps = {(c.label, c.kind): c for c in compare_all(entries, "TIGER", ["ndcg@10"])}
    ours_ref = comps[("Ours", "reference")]
    assert ours_ref.against == "TIGER"
    assert ours_ref.result.p_ttest == pytest.approx(t4_two_sided_p(3 * math.sqrt(2)))
    assert comps[("Ours", "best_baseline")].against == "SASRec"
    assert comps[("SASRec", "best_baseline")].against == "GRU4Rec"  # never itself
    assert ("TIGER", "reference") not in comps
