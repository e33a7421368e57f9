"""Beams -> RecBole score matrix."""

import pytest
import torch

from recbole_ext.generation import beams_to_scores

NEG = float("-inf")


def test_hand_example_rank_order_and_invalid_count():
    items = torch.tensor([[3, 1, 3, -1, 5], [2, 4, 6, 1, 0]])  # user 0: duplicate 3, one invalid
    scores, n_invalid = beams_to_scores(items, n_items=7)
    assert scores.tolist() == [
        [NEG, 4.0, NEG, 5.0, NEG, 3.0, NEG],
        [1.0, 2.0, 5.0, NEG, 4.0, NEG, 3.0],
    ]
    assert int(n_invalid) == 1
    top = scores.topk(3, dim=1).indices
    assert top.tolist() == [[3, 1, 5], [2, 4, 6]]


def test_fallback_fills_missing_slots_below_beams():
    items = torch.tensor([[2, -1, 2]])  # one distinct valid item
    fallback = torch.tensor([[0.0, 9.0, 5.0, 7.0, 1.0]])  # would rank 1, 2, 3, 4, 0
    scores, n_invalid = beams_to_scores(items, 5, fallback=fallback, min_items=3)
    assert scores.tolist() == [[NEG, -1.0, 3.0, -2.0, NEG]]
    assert int(n_invalid) == 1
    assert scores.topk(3, dim=1).indices.tolist() == [[2, 1, 3]]


def test_path_sum_scores_hand_example():
    import math

    from recbole_ext.generation.scores import path_sum_scores

    items = torch.tensor([[3, 1, 3, -1], [2, 2, 2, 2]])
    beams = torch.tensor([[-1.0, -2.0, -3.0, -0.5], [-1.0, -1.0, float("-inf"), -1.0]])
    out = path_sum_scores(items, beams, 5)
    assert out[0, 3].item() == pytest.approx(math.log(math.exp(-1) + math.exp(-3)), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(-2.0) and out[1, 2].item() == pytest.approx(math.log(3) - 1, abs=1e-6)
    assert torch.isinf(out[0, [0, 2, 4]]).all() and torch.isinf(out[1, [0, 1, 3, 4]]).all()  # -1 and dead beams count nothing
