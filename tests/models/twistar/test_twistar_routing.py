"""TwiSTAR routing: oracle labels (with the official up-routing), NDCG from rank, reward, shares."""

import math

import pytest
import torch

from recbole_ext.models.twistar.routing import (
    FAST,
    RANK,
    SLOW,
    TOOL_NAMES,
    agreement,
    ndcg_at_k,
    oracle_labels,
    rank_of,
    route_reward,
    select_per_tool,
    tool_shares,
)


def fast_lists(b: int) -> torch.Tensor:
    """[B, 50]: items 1..50 in order, so item i sits at 0-based rank i - 1."""
    return torch.arange(1, 51).expand(b, 50).clone()


def test_rank_of_first_match_and_dead_beams():
    ranked = torch.tensor([[1, 3, 5], [7, 7, 2], [-1, -1, -1], [4, 6, 8]])
    target = torch.tensor([3, 7, -1, 9])
    assert rank_of(target, ranked).tolist() == [1, 0, -1, -1]  # a -1 target never matches a dead beam


def test_ndcg_at_k_from_rank():
    got = ndcg_at_k(torch.tensor([0, 1, 2, 9, 10, -1]), k=10)
    want = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0, 0.0]
    assert got.tolist() == pytest.approx(want, abs=1e-7)
    assert ndcg_at_k(torch.tensor([4, 5]), k=5).tolist() == pytest.approx([1 / math.log2(6), 0.0])


def test_oracle_rules_without_up_routing():
    target = torch.tensor([1, 10, 11, 50, 51, 0])
    labels = oracle_labels(target, fast_lists(6), up_share=0.0)
    assert labels.tolist() == [FAST, FAST, RANK, RANK, SLOW, SLOW]
    # beams beyond the top-50 are ignored; dead beams never match
    items = torch.cat([fast_lists(2), torch.tensor([[60], [-1]])], dim=1)
    assert oracle_labels(torch.tensor([60, -1]), items, up_share=0.0).tolist() == [SLOW, SLOW]
    with pytest.raises(ValueError):
        oracle_labels(target, fast_lists(6)[:, :20])


def test_up_routing_exact_counts_only_easy_samples_move():
    # 100 easy (target at rank 0), 10 RANK (rank 20), 10 SLOW (absent)
    target = torch.tensor([1] * 100 + [21] * 10 + [99] * 10)
    labels = oracle_labels(target, fast_lists(120), up_share=0.2, generator=torch.Generator().manual_seed(0))
    easy = labels[:100]
    assert (easy == FAST).sum() == 80  # exactly round(0.2 * 100) = 20 routed up ...
    assert (easy == RANK).sum() == 10 and (easy == SLOW).sum() == 10  # ... half one level, half straight to SLOW
    assert (labels[100:110] == RANK).all() and (labels[110:] == SLOW).all()  # RANK/SLOW never move
    again = oracle_labels(target, fast_lists(120), up_share=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, again)
    other = oracle_labels(target, fast_lists(120), up_share=0.2, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(labels, other) and (other[:100] == FAST).sum() == 80


def test_up_routing_rounding_and_destination_share():
    target = torch.ones(7, dtype=torch.long)  # 7 easy: 0.2 * 7 = 1.4 -> 1 up
    g = torch.Generator().manual_seed(3)
    assert (oracle_labels(target, fast_lists(7), generator=g) != FAST).sum() == 1
    target = torch.ones(10, dtype=torch.long)  # 2 up
    to_rank = oracle_labels(target, fast_lists(10), up_to_slow=0.0, generator=torch.Generator().manual_seed(0))
    assert sorted(to_rank.tolist()) == [FAST] * 8 + [RANK] * 2
    to_slow = oracle_labels(target, fast_lists(10), up_to_slow=1.0, generator=torch.Generator().manual_seed(0))
    assert sorted(to_slow.tolist()) == [FAST] * 8 + [SLOW] * 2
    assert oracle_labels(target, fast_lists(10), up_share=1.0, up_to_slow=0.5).tolist().count(FAST) == 0


def test_up_routing_bernoulli_matches_its_draws():
    n = 200
    target = torch.ones(n, dtype=torch.long)
    labels = oracle_labels(target, fast_lists(n), sampling="bernoulli", generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    up = torch.rand(n, generator=g) < 0.2
    slow = torch.rand(n, generator=g) < 0.5
    assert (labels == SLOW).sum() == (up & slow).sum() and (labels == RANK).sum() == (up & ~slow).sum()
    assert torch.equal(labels == FAST, ~up)


def test_route_reward_with_cost_term():
    ndcg = torch.tensor([1.0, 0.5, 0.0])
    tool = torch.tensor([FAST, RANK, SLOW])
    cost = torch.tensor([0.01, 0.02, 0.5])  # seconds per user
    assert route_reward(ndcg, tool, cost, beta=2.0).tolist() == pytest.approx([0.98, 0.46, -1.0], abs=1e-6)
    assert route_reward(ndcg, tool, cost, beta=0.0).tolist() == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError):
        route_reward(ndcg, tool, torch.tensor([0.1, 0.2]), beta=1.0)


def test_each_user_gets_exactly_one_tool_and_shares_add_to_one():
    tool = torch.tensor([FAST, FAST, RANK, SLOW])
    per_tool = torch.arange(4 * 3 * 10).reshape(4, 3, 10)  # [B, 3 tools, 10 items]
    served = select_per_tool(tool, per_tool)
    assert served.shape == (4, 10)
    for u in range(4):
        assert torch.equal(served[u], per_tool[u, tool[u]])
    shares = tool_shares(tool)
    assert list(shares) == list(TOOL_NAMES)
    assert shares == {"fast": 0.5, "rank": 0.25, "slow": 0.25} and sum(shares.values()) == pytest.approx(1.0)
    assert tool_shares(torch.tensor([SLOW] * 3)) == {"fast": 0.0, "rank": 0.0, "slow": 1.0}
    with pytest.raises(ValueError):
        tool_shares(torch.tensor([0, 3]))


def test_agreement():
    assert agreement(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75
