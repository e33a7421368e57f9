"""Beams -> RecBole score matrix."""

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
