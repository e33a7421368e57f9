"""Training-split statistics: transition counts, user sequences and Swing scores, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recbole_ext.cooccurrence import TransitionStats, swing_scores, user_sequences

N_ITEMS = 7  # ids 1..6, 0 = padding
INF = float("-inf")


def _rows(sequences: dict[int, list[int]], width: int) -> tuple[torch.Tensor, ...]:
    """RecBole-style sliding-window rows (user, history [R, width], length, target) of full sequences."""
    users, hists, lengths, targets = [], [], [], []
    for user, seq in sequences.items():
        for k in range(1, len(seq)):
            hist = seq[max(0, k - width) : k]
            users.append(user)
            hists.append(hist + [0] * (width - len(hist)))
            lengths.append(len(hist))
            targets.append(seq[k])
    return torch.tensor(users), torch.tensor(hists), torch.tensor(lengths), torch.tensor(targets)


# Transitions of these training sequences (consecutive pairs):
#   u1: 1->2, 2->3      u2: 1->2, 2->4      u3: 2->3, 3->1      u4: 2->5
# so count(1,2) = 2, count(2,3) = 2, count(2,4) = 1, count(2,5) = 1, count(3,1) = 1.
TRAIN = {1: [1, 2, 3], 2: [1, 2, 4], 3: [2, 3, 1], 4: [2, 5]}


def test_transition_counts_hand_computed() -> None:
    _, hist, length, target = _rows(TRAIN, width=3)
    stats = TransitionStats.from_rows(hist, length, target, N_ITEMS)
    assert stats.count(1, 2) == 2 and stats.count(2, 3) == 2 and stats.count(2, 4) == 1
    assert stats.count(2, 5) == 1 and stats.count(3, 1) == 1
    assert stats.count(2, 1) == 0 and stats.count(3, 2) == 0 and stats.count(6, 1) == 0
    assert stats.total(2) == 4 and stats.total(6) == 0
    assert stats.matrix.nnz == 5 and int(stats.matrix.sum()) == 7  # 7 rows, 5 distinct pairs


def test_next_items_sorted_with_ties_to_the_smaller_id() -> None:
    _, hist, length, target = _rows(TRAIN, width=3)
    stats = TransitionStats.from_rows(hist, length, target, N_ITEMS)
    assert stats.next_items(2, 5) == [(3, 2), (4, 1), (5, 1)]  # 4 and 5 tie at 1: 4 first
    assert stats.next_items(2, 2) == [(3, 2), (4, 1)]
    assert stats.next_items(6, 3) == [] and stats.next_items(2, 0) == []


def test_category_count_with_sets_and_masks() -> None:
    _, hist, length, target = _rows(TRAIN, width=3)
    stats = TransitionStats.from_rows(hist, length, target, N_ITEMS)
    assert stats.category_count(2, {4, 5}) == 2  # 2->4 once, 2->5 once
    assert stats.category_count(2, {3, 4, 6}) == 3  # 2->3 twice, 2->4 once
    mask = torch.zeros(N_ITEMS, dtype=torch.bool)
    mask[[3, 5]] = True
    assert stats.category_count(2, mask) == 3  # 2->3 twice, 2->5 once
    assert stats.category_count(1, mask) == 0
    labels = np.array([-1, 0, 0, 1, 1, 2, 2])  # items 3, 4 share label 1
    assert stats.label_count(2, labels, 1) == 3 and stats.label_count(2, labels, 2) == 1
    with pytest.raises(ValueError, match="mask"):
        stats.category_count(2, torch.zeros(3, dtype=torch.bool))


def test_statistics_read_only_the_rows_given() -> None:
    users, hist, length, target = _rows({**TRAIN, 5: [3, 6, 4]}, width=3)
    train = users != 5  # user 5's rows (3->6, 6->4) are not passed in
    stats = TransitionStats.from_rows(hist[train], length[train], target[train], N_ITEMS)
    assert stats.count(3, 6) == 0 and stats.count(6, 4) == 0
    assert stats.next_items(3, 5) == [(1, 1)]
    everything = TransitionStats.from_rows(hist, length, target, N_ITEMS)
    assert everything.count(3, 6) == 1 and everything.count(6, 4) == 1
    # the last history item is read at length - 1, not at the last column
    rows = torch.tensor([[4, 6, 0], [4, 0, 0], [0, 0, 0]])
    only = TransitionStats.from_rows(rows, torch.tensor([2, 1, 0]), torch.tensor([1, 2, 3]), N_ITEMS)
    assert only.count(6, 1) == 1 and only.count(4, 2) == 1 and only.matrix.nnz == 2  # empty history skipped
    with pytest.raises(ValueError, match="n_items"):
        TransitionStats.from_rows(rows, torch.tensor([2, 1, 0]), torch.tensor([1, 9, 3]), N_ITEMS)


def test_user_sequences_rebuilds_truncated_histories() -> None:
    sequences = {7: [5, 6, 2, 1], 3: [4, 1, 2, 6, 3], 9: [2, 3]}
    users, hist, length, target = _rows(sequences, width=2)  # max length 2: histories are cut
    assert hist.tolist()[:3] == [[5, 0], [5, 6], [6, 2]]
    assert user_sequences(users, hist, length, target) == sequences
    wide = _rows(sequences, width=6)
    order = torch.tensor([6, 0, 2, 4, 1, 5, 3, 7])  # shuffled rows: untruncated users need only their longest row
    shuffled = [t[order] for t in wide]
    assert user_sequences(*shuffled) == sequences


def _toy_sequences() -> dict[int, list[int]]:
    # Item sets: I_10 = {1,2,3}, I_11 = {1,2,4}, I_12 = {1,2,3,4}, I_13 = {2,3} (order and repeats ignored).
    return {12: [4, 3, 2, 1, 2], 10: [1, 2, 3], 13: [3, 2], 11: [2, 1, 4]}


def test_swing_hand_computed() -> None:
    # |I_u ∩ I_v|: (10,11)=2 (10,12)=3 (10,13)=2 (11,12)=3 (11,13)=1 (12,13)=2; alpha = 1.
    # sim(1,2): users {10,11,12}: 1/(1+2) + 1/(1+3) + 1/(1+3) = 5/6
    # sim(2,3): users {10,12,13}: 1/4 + 1/3 + 1/3 = 11/12
    # sim(1,3): users {10,12}: 1/4;  sim(1,4): {11,12}: 1/4;  sim(2,4): {11,12}: 1/4
    # sim(3,4): only user 12 has both: 0 (no pair), so 3 and 4 are not neighbours.
    neighbours, scores = swing_scores(_toy_sequences(), n_items=6, alpha=1.0, top_k=3)
    assert neighbours.shape == (6, 3) and neighbours.dtype == torch.long and scores.dtype == torch.float32
    assert neighbours.tolist() == [[0, 0, 0], [2, 3, 4], [3, 1, 4], [2, 1, 0], [1, 2, 0], [0, 0, 0]]
    expected = [
        [INF, INF, INF],
        [5 / 6, 1 / 4, 1 / 4],  # 3 and 4 tie: smaller id first
        [11 / 12, 5 / 6, 1 / 4],
        [11 / 12, 1 / 4, INF],
        [1 / 4, 1 / 4, INF],  # 1 and 2 tie
        [INF, INF, INF],  # item 5: no users
    ]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-6)
    # a list indexed by user id gives the same result (users 0..3 in the same order)
    as_list = [_toy_sequences()[u] for u in (10, 11, 12, 13)]
    again_n, again_s = swing_scores(as_list, n_items=6, alpha=1.0, top_k=3)
    assert torch.equal(again_n, neighbours) and torch.equal(again_s, scores)


def test_swing_alpha_user_weight_and_cap() -> None:
    # alpha = 0.5: sim(1,3) = 1/(0.5+3) = 2/7; sim(1,2) = 1/2.5 + 2/3.5 = 0.4 + 4/7
    neighbours, scores = swing_scores(_toy_sequences(), n_items=6, alpha=0.5, top_k=2)
    assert neighbours[1].tolist() == [2, 3]
    assert scores[1].tolist() == pytest.approx([0.4 + 4 / 7, 2 / 7], abs=1e-6)
    # user weights 1/sqrt(|I_u| |I_v|) with |I| = 3, 3, 4, 2: sim(1,2) = 1/3 * 1/3 + 1/4 / sqrt(12) * 2
    _, weighted = swing_scores(_toy_sequences(), n_items=6, top_k=1, user_weight=True)
    assert weighted[1, 0].item() == pytest.approx(1 / 9 + 0.5 / math.sqrt(12), abs=1e-6)
    # cap 2: item 1 keeps users {10, 11} (smallest ids): one pair, 1/(1+2), common items {1, 2}
    # item 3 keeps {10, 12}: one pair, 1/(1+3), common items {1, 2, 3}
    capped_n, capped_s = swing_scores(_toy_sequences(), n_items=6, top_k=2, max_users_per_item=2)
    assert capped_n[1].tolist() == [2, 0] and capped_s[1].tolist() == pytest.approx([1 / 3, INF])
    assert capped_n[3].tolist() == [1, 2] and capped_s[3].tolist() == pytest.approx([1 / 4, 1 / 4])
    with pytest.raises(ValueError, match="n_items"):
        swing_scores({1: [7]}, n_items=6)
