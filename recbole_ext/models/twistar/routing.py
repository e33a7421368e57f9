"""TwiSTAR's routing arithmetic: tool ids, oracle warm-up labels, per-user NDCG, reward and statistics.

Three tools, one per user:

- ``FAST`` (0): the fast SID retriever's beam top-10;
- ``RANK`` (1): the fast retriever's top-50 re-scored by the light ranker down to a top-10;
- ``SLOW`` (2): the slow reasoning model (justification text, then the SID).

Oracle labels (the planner's warm-up targets) follow the official data preparation
(``planner_label_from_candidates`` and ``write_planner_sft`` in cst20/TwiSTAR's
``prepare_amazon_data.py``): target in the fast top-10 -> FAST; else in the fast top-50 -> RANK;
else SLOW. Then only the *easy* samples (label FAST) are explored: each with probability
``explore_prob`` = 0.2 is "up-routed", and an up-routed sample goes to RANK or straight to SLOW
with a fair coin (0.5 / 0.5). RANK samples are never moved, and nothing is routed down.
:func:`oracle_labels` does the same with ``up_to_slow=0.5``; by default it draws exact counts
(``round(up_share * n_easy)`` up-routed, ``round(up_to_slow * n_up)`` of them to SLOW) from a
seeded permutation, and ``sampling="bernoulli"`` draws per sample as the official code does.

The reward is ``NDCG@10 - beta * cost[tool]``, where ``cost`` is each tool's measured mean
latency per user in seconds (measured by the model, passed in): ``beta`` is the NDCG one second of
latency is worth, so raising it moves the planner towards cheap tools along the accuracy/cost
frontier. The official RL stage also adds a valid-tool reward; here an action is always a valid
tool (a categorical over three ids), so that term is constant and left out.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "FAST",
    "N_TOOLS",
    "RANK",
    "SLOW",
    "TOOL_NAMES",
    "agreement",
    "ndcg_at_k",
    "oracle_labels",
    "rank_of",
    "route_reward",
    "select_per_tool",
    "tool_shares",
]

FAST, RANK, SLOW = 0, 1, 2
N_TOOLS = 3
#: Display name of each tool id (index = id): the keys of :func:`tool_shares`.
TOOL_NAMES = ("fast", "rank", "slow")


def rank_of(target: Tensor, ranked_items: Tensor) -> Tensor:
    """0-based position of ``target`` [B] in ``ranked_items`` [B, K] (best first), -1 if absent.

    Dead beams (item -1) never match; with duplicates the first (best) position counts.
    """
    if ranked_items.dim() != 2 or target.shape != ranked_items.shape[:1]:
        raise ValueError(f"expected target [B], ranked_items [B, K]; got {tuple(target.shape)}, "
                         f"{tuple(ranked_items.shape)}")
    hit = (ranked_items == target[:, None]) & (ranked_items >= 0)  # [B, K]
    pos = hit.long().argmax(dim=1)  # [B] first True (0 where none)
    return torch.where(hit.any(dim=1), pos, torch.full_like(pos, -1))


def ndcg_at_k(rank: Tensor, k: int = 10) -> Tensor:
    """Per-user NDCG@k under leave-one-out (one relevant item): 1 / log2(rank + 2) if 0 <= rank < k, else 0.

    rank: [B] 0-based, -1 = not ranked. Returns [B] float.
    """
    rank = rank.long()
    gain = 1.0 / torch.log2(rank.clamp(min=0).double() + 2.0)  # [B]
    return torch.where((rank >= 0) & (rank < k), gain, torch.zeros_like(gain)).float()


def oracle_labels(target: Tensor, fast_items: Tensor, up_share: float = 0.2, generator: torch.Generator | None = None,
                  fast_k: int = 10, rank_k: int = 50, up_to_slow: float = 0.5, sampling: str = "exact") -> Tensor:
    """Warm-up tool label per sample: [B] long in {FAST, RANK, SLOW}.

    target: [B] item ids; fast_items: [B, K >= rank_k] the fast retriever's beam items, best first
    (-1 = dead). Target in the top ``fast_k`` -> FAST, in the top ``rank_k`` -> RANK, else SLOW.
    Then ``up_share`` of the FAST samples are up-routed, a share ``up_to_slow`` of those straight to
    SLOW and the rest one level up to RANK (the official rule: 0.2, then a fair coin).
    ``sampling="exact"``: exactly ``round(up_share * n_fast)`` samples up, exactly
    ``round(up_to_slow * n_up)`` of them to SLOW (round half up), chosen by a permutation drawn
    from ``generator``; ``"bernoulli"``: independent draws per sample, as the official code.
    ``up_share=0`` gives the pure oracle (use that one to measure planner/oracle agreement).
    """
    if fast_items.dim() != 2 or fast_items.shape[1] < rank_k or not 0 < fast_k <= rank_k:
        raise ValueError(f"need fast_items [B, K >= rank_k={rank_k}] and 0 < fast_k={fast_k} <= rank_k; "
                         f"got {tuple(fast_items.shape)}")
    if not (0.0 <= up_share <= 1.0 and 0.0 <= up_to_slow <= 1.0):
        raise ValueError(f"up_share and up_to_slow must lie in [0, 1]; got {up_share}, {up_to_slow}")
    if sampling not in ("exact", "bernoulli"):
        raise ValueError(f"sampling must be 'exact' or 'bernoulli', got {sampling!r}")
    rank = rank_of(target, fast_items[:, :rank_k])  # [B]
    labels = torch.full_like(rank, SLOW)
    labels[rank >= 0] = RANK
    labels[(rank >= 0) & (rank < fast_k)] = FAST
    easy = (labels == FAST).nonzero(as_tuple=True)[0].cpu()  # [E] row indices
    n_easy = easy.numel()
    if n_easy and up_share > 0:
        if sampling == "exact":
            n_up = math.floor(up_share * n_easy + 0.5)
            chosen = easy[torch.randperm(n_easy, generator=generator)[:n_up]]  # [n_up] random order
            n_slow = math.floor(up_to_slow * n_up + 0.5)
            to_slow, to_rank = chosen[:n_slow], chosen[n_slow:]
        else:
            up = torch.rand(n_easy, generator=generator) < up_share  # [E]
            slow = torch.rand(n_easy, generator=generator) < up_to_slow  # [E]
            to_slow, to_rank = easy[up & slow], easy[up & ~slow]
        labels[to_slow.to(labels.device)] = SLOW
        labels[to_rank.to(labels.device)] = RANK
        logger.debug("oracle: %d easy samples, %d up-routed to RANK, %d to SLOW", n_easy, len(to_rank), len(to_slow))
    return labels


def route_reward(ndcg: Tensor, tool: Tensor, tool_cost: Tensor, beta: float) -> Tensor:
    """Planner reward per user: ``ndcg - beta * tool_cost[tool]`` -> [B].

    ndcg: [B] NDCG@10 of the chosen tool's list; tool: [B] ids; tool_cost: [3] mean seconds per
    user of each tool (measured); beta: NDCG per second, the accuracy/latency trade-off.
    """
    tool_cost = torch.as_tensor(tool_cost, dtype=torch.float32, device=ndcg.device)
    if tool_cost.shape != (N_TOOLS,) or ndcg.shape != tool.shape:
        raise ValueError(f"expected ndcg [B], tool [B], tool_cost [{N_TOOLS}]; got {tuple(ndcg.shape)}, "
                         f"{tuple(tool.shape)}, {tuple(tool_cost.shape)}")
    return ndcg.float() - beta * tool_cost[tool.long()]


def select_per_tool(tool: Tensor, per_tool: Tensor) -> Tensor:
    """Each user's row of the tool it was routed to: tool [B], per_tool [B, 3, ...] -> [B, ...].

    E.g. per_tool = stack([fast_top10, rank_top10, slow_top10], 1) [B, 3, 10] gives the served lists.
    """
    if per_tool.dim() < 2 or per_tool.shape[:2] != (tool.shape[0], N_TOOLS):
        raise ValueError(f"expected per_tool [B, {N_TOOLS}, ...] for tool [B]; got {tuple(per_tool.shape)}")
    return per_tool[torch.arange(tool.shape[0], device=per_tool.device), tool.long().to(per_tool.device)]


def tool_shares(tool: Tensor) -> dict[str, float]:
    """Share of users routed to each tool, keyed by :data:`TOOL_NAMES` (they add up to 1)."""
    tool = tool.reshape(-1).long()
    if tool.numel() == 0:
        raise ValueError("tool_shares of an empty batch is undefined")
    if tool.min() < 0 or tool.max() >= N_TOOLS:
        raise ValueError(f"tool ids must lie in [0, {N_TOOLS}); got {tool.unique().tolist()}")
    counts = torch.bincount(tool.cpu(), minlength=N_TOOLS).tolist()
    return {name: c / tool.numel() for name, c in zip(TOOL_NAMES, counts)}


def agreement(tool: Tensor, oracle: Tensor) -> float:
    """Fraction of users whose routed tool equals the oracle's (compare with the pure oracle, up_share=0)."""
    if tool.shape != oracle.shape or tool.numel() == 0:
        raise ValueError(f"expected two equal, non-empty shapes; got {tuple(tool.shape)}, {tuple(oracle.shape)}")
    return float((tool.long() == oracle.long().to(tool.device)).float().mean())
