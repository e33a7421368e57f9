"""STREAM-Rec rewards (recbole_ext.rl.rewards, Eq. 21-27) against hand-computed values."""

import pytest
import torch

from recbole_ext.rl.rewards import (
    DEFAULT_REWARD_WEIGHTS,
    REWARD_NAMES,
    batch_rank_fraction,
    combine_rewards,
    format_reward,
    mean_pool,
    positive_rank,
    prefix_match_reward,
    rank_fraction_reward,
    similarity_reward,
    thinking_likelihood_reward,
    thinking_ranking_reward,
    valid_item_mask,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.float(), torch.as_tensor(expected, dtype=torch.float32),
                               atol=atol, rtol=0)


# ----------------------------------------------------------------- Eq. 21


def test_valid_item_mask_and_format_reward():
    items = torch.tensor([[1, 2, 3, 0], [1, 2, 3, 1], [4, 5, 6, 0]])
    # [1,2,3,1] is item 1; [1,2,3,2] shares a 3-code prefix with two items but is no item;
    # [4,5,6,0] is item 2
    codes = torch.tensor([[1, 2, 3, 1], [1, 2, 3, 2], [4, 5, 6, 0]])
    for chunk in (1, 2, 4096):
        assert valid_item_mask(codes, items, chunk_size=chunk).tolist() == [True, False, True]
    close(format_reward(torch.tensor([True, False, True])), [0.0, -1.0, 0.0])
    with pytest.raises(ValueError):
        valid_item_mask(codes[:, :3], items)


# ----------------------------------------------------------------- Eq. 22-23


def test_prefix_match_reward_counts_leading_matches_only():
    target = torch.tensor([[1, 2, 3, 4]] * 4)
    gen = torch.tensor([
        [1, 2, 3, 4],  # all 4 match -> 4
        [1, 2, 0, 4],  # match, match, miss -> the 4th match does not count -> 2
        [0, 2, 3, 4],  # first code wrong -> 0 although 3 later codes match
        [1, 9, 9, 9],  # -> 1
    ])
    close(prefix_match_reward(gen, target), [4.0, 2.0, 0.0, 1.0])
    # a masked (not generated) position counts as a mismatch
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    close(prefix_match_reward(gen, target, mask), [3.0, 2.0, 0.0, 1.0])


# ----------------------------------------------------------------- Eq. 24-25


def test_batch_rank_fraction_and_similarity_reward_dot():
    # targets t1=(1,0) t2=(0,1) t3=(-1,0) t4=(0,-1)
    # row 1: d=(1,0):   S = [1, 0, -1, 0],     S11 = 1  -> 4 of 4 <= -> g = 1.00 -> 0.5
    # row 2: d=(1,0.5): S = [1, .5, -1, -.5],  S22 = .5 -> {.5, -1, -.5} -> g = 0.75 -> 0.05
    # row 3: d=(1,0):   S = [1, 0, -1, 0],     S33 = -1 -> only itself -> g = 0.25 -> -0.1
    # row 4: d=(0,-1):  S = [0, -1, 0, 1],     S44 = 1  -> g = 1.00 -> 0.5
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.5], [1.0, 0.0], [0.0, -1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    close(batch_rank_fraction(pred, target), [1.0, 0.75, 0.25, 1.0])
    close(similarity_reward(pred, target), [0.5, 0.05, -0.1, 0.5])


def test_similarity_reward_cosine_differs_from_dot():
    # with t2 = (0, 3): row 2 dot: S = [1, 1.5, -1, -.5], S22 = 1.5 is the max -> g = 1 -> 0.5
    # cosine: d2/|d2| = (.894, .447): S = [.894, .447, -.894, -.447], S22 = .447 -> g = .75 -> .05
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.5], [1.0, 0.0], [0.0, -1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -1.0]])
    assert similarity_reward(pred, target, "dot")[1].item() == pytest.approx(0.5)
    assert similarity_reward(pred, target, "cosine")[1].item() == pytest.approx(0.05)


def test_similarity_ties_count_as_at_most():
    # two rollouts of one user share the target (1,0): S = [[1, 1], [0, 0]] -> both g = 1
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    close(batch_rank_fraction(pred, target), [1.0, 1.0])


def test_rank_fraction_reward_thresholds():
    # Eq. 24: >= 0.99 -> 0.5; >= 0.95 -> 0.1; >= 0.50 -> 0.05; else -0.1 (boundaries inclusive)
    g = torch.tensor([1.0, 0.99, 0.985, 0.95, 0.949, 0.5, 0.49, 0.0])
    close(rank_fraction_reward(g), [0.5, 0.5, 0.1, 0.1, 0.05, 0.05, -0.1, -0.1])
    # g = 99/100 as computed from a batch of 100 hits the 0.99 level exactly
    close(rank_fraction_reward(torch.tensor([99 / 100])), [0.5])


# ----------------------------------------------------------------- Eq. 26


def test_thinking_likelihood_reward():
    # [-2 - (-3), -5 - (-1)] = [1, -4]; clipped to +-2: [1, -2]
    pol = torch.tensor([-2.0, -5.0])
    ref = torch.tensor([-3.0, -1.0])
    close(thinking_likelihood_reward(pol, ref), [1.0, -4.0])
    close(thinking_likelihood_reward(pol, ref, clip=2.0), [1.0, -2.0])


# ----------------------------------------------------------------- Eq. 27


def _negatives(n_above: int, k: int = 50) -> torch.Tensor:
    # n_above negatives scored 1.0 (above the positive's 0.0), the rest -1.0
    return torch.tensor([1.0] * n_above + [-1.0] * (k - n_above))


def test_thinking_ranking_reward_tiers_k50():
    # K = 50: 0.1K = 5, 0.2K = 10, 0.5K = 25; p = 1 + #negatives above
    #   above  0 -> p  1 -> 0.2
    #   above  3 -> p  4 -> 1 < 4 < 5      -> 0.1
    #   above  4 -> p  5 -> 5 <= 5 < 10    -> 0.05
    #   above  8 -> p  9 -> 5 <= 9 < 10    -> 0.05
    #   above  9 -> p 10 -> 10 <= p < 25: the paper's gap -> 0
    #   above 23 -> p 24 -> gap -> 0
    #   above 24 -> p 25 -> p >= 25 -> -0.1
    #   above 50 -> p 51 -> -0.1
    above = [0, 3, 4, 8, 9, 23, 24, 50]
    neg = torch.stack([_negatives(a) for a in above])  # [8, 50]
    pos = torch.zeros(len(above))
    assert positive_rank(pos, neg).tolist() == [1, 4, 5, 9, 10, 24, 25, 51]
    close(thinking_ranking_reward(pos, neg), [0.2, 0.1, 0.05, 0.05, 0.0, 0.0, -0.1, -0.1])


def test_thinking_ranking_ties_rank_positive_lower():
    # one negative exactly equal to the positive, the rest below: p = 2 -> 0.1 (not 0.2)
    neg = torch.full((1, 50), -3.0)
    neg[0, 7] = -2.0
    close(thinking_ranking_reward(torch.tensor([-2.0]), neg), [0.1])
    # all equal (degenerate model) -> p = 51 -> -0.1
    close(thinking_ranking_reward(torch.tensor([0.0]), torch.zeros(1, 50)), [-0.1])


# ----------------------------------------------------------------- combiner


def test_combine_rewards_weights():
    comps = {"format": torch.tensor([0.0, -1.0]), "prefix_match": torch.tensor([4.0, 2.0])}
    # 2 * [0, -1] + 0.5 * [4, 2] = [2, -1]; similarity has weight 0 -> not required
    total, weighted = combine_rewards(comps, {"format": 2.0, "prefix_match": 0.5, "similarity": 0.0})
    close(total, [2.0, -1.0])
    close(weighted["format"], [0.0, -2.0])
    # no weights -> plain sum (the paper): [4, 1]
    close(combine_rewards(comps)[0], [4.0, 1.0])
    with pytest.raises(KeyError):
        combine_rewards(comps, {"think_ranking": 1.0})
    assert set(DEFAULT_REWARD_WEIGHTS) == set(REWARD_NAMES)
    assert all(w == 1.0 for w in DEFAULT_REWARD_WEIGHTS.values())


def test_mean_pool_masks_positions():
    # row 0: mean of (1,2) and (3,4) = (2,3); row 1: only (5,6)
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [float("nan"), 0.0]]])
    close(mean_pool(hidden, torch.tensor([[1, 1], [1, 0]])), [[2.0, 3.0], [5.0, 6.0]])
    close(mean_pool(hidden[:1]), [[2.0, 3.0]])
