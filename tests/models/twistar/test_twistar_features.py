"""TwiSTAR planner features: shapes, exact values on a hand-made case (dead beams, empty history), scaler."""

import math

import pytest
import torch

from recbole_ext.models.twistar.features import (
    FEATURE_NAMES,
    LOGPROB_FLOOR,
    FeatureScaler,
    planner_features,
    recent_mask,
)

NEG = float("-inf")
GROUPS = torch.tensor([0, 1, 1, 2, 3, 3, 4])  # group of items 0 (pad) .. 6


def hand_case() -> torch.Tensor:
    history = torch.tensor([
        [1, 2, 3, 0, 0],  # right-padded, groups 1, 1, 2
        [0, 0, 0, 0, 0],  # empty
        [0, 4, 5, 6, 6],  # left-padded, groups 3, 3, 4, 4
    ])
    lengths = torch.tensor([3, 0, 4])
    scores = torch.tensor([
        [math.log(0.5), math.log(0.25), math.log(0.25), NEG],  # one dead beam
        [NEG, NEG, NEG, NEG],  # all dead
        [0.0, 0.0, 0.0, 0.0],  # uniform
    ])
    return planner_features(history, lengths, scores, GROUPS, top_n=2)


def test_shapes_names_and_no_nan():
    feats = hand_case()
    assert feats.shape == (3, len(FEATURE_NAMES)) and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert torch.isfinite(feats).all()


def test_exact_values_on_hand_case():
    f = {name: hand_case()[:, i].tolist() for i, name in enumerate(FEATURE_NAMES)}
    ln2 = math.log(2)
    assert f["log_history_length"] == pytest.approx([math.log(4), 0.0, math.log(5)])
    assert f["history_diversity"] == pytest.approx([2 / 3, 0.0, 0.5])
    assert f["top1_prob"] == pytest.approx([0.5, 0.0, 0.25])
    assert f["top12_margin"] == pytest.approx([0.25, 0.0, 0.0])
    assert f["beam_entropy"] == pytest.approx([1.5 * ln2, 0.0, 2 * ln2])
    assert f["top1_logprob"] == pytest.approx([-ln2, LOGPROB_FLOOR, 0.0])
    assert f["topn_mass"] == pytest.approx([0.75, 0.0, 0.5])
    assert f["alive_share"] == pytest.approx([0.75, 0.0, 1.0])


def test_length_normalised_scores():
    scores = torch.tensor([[-2.0, -4.0, NEG]])  # / m = 2 -> (-1, -2)
    f = planner_features(torch.tensor([[1]]), torch.tensor([1]), scores, GROUPS, sid_length=2)[0]
    p1 = 1 / (1 + math.exp(-1.0))
    assert f[FEATURE_NAMES.index("top1_prob")].item() == pytest.approx(p1)
    assert f[FEATURE_NAMES.index("top12_margin")].item() == pytest.approx(2 * p1 - 1)
    assert f[FEATURE_NAMES.index("top1_logprob")].item() == pytest.approx(-1.0)
    floored = planner_features(torch.tensor([[1]]), torch.tensor([1]), torch.tensor([[-100.0]]), GROUPS)[0]
    assert floored[FEATURE_NAMES.index("top1_logprob")].item() == LOGPROB_FLOOR


def test_diversity_reads_only_the_last_20_items():
    groups = torch.arange(30)  # every item its own group
    history = torch.tensor([[1, 2, 3, 4, 5] + [7] * 20])  # 5 distinct old items, then 20 repeats
    f = planner_features(history, torch.tensor([25]), torch.zeros(1, 3), groups)[0]
    assert f[FEATURE_NAMES.index("history_diversity")].item() == pytest.approx(1 / 20)
    assert recent_mask(torch.tensor([[0, 1, 2, 3, 0]]), 2).tolist() == [[False, False, True, True, False]]


def test_scaler_fit_transform_and_state_dict():
    scaler = FeatureScaler(2).fit(torch.tensor([[1.0, 10.0], [3.0, 10.0]]))
    assert scaler.mean.tolist() == [2.0, 10.0] and scaler.std.tolist() == [1.0, 1.0]  # constant feature: std 1
    assert scaler(torch.tensor([[3.0, 12.0]])).tolist() == [[1.0, 2.0]]
    state = scaler.state_dict()
    assert {"mean", "std", "fitted"} <= set(state) and bool(state["fitted"])
    fresh = FeatureScaler(2)
    assert fresh(torch.tensor([[3.0, 12.0]])).tolist() == [[3.0, 12.0]]  # identity until fitted
    fresh.load_state_dict(state)
    assert fresh(torch.tensor([[3.0, 12.0]])).tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError):
        FeatureScaler(2).fit(torch.tensor([[float("nan"), 1.0]]))
