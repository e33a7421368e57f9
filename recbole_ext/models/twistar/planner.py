"""TwiSTAR's Planner: a small policy over the cheap per-user features that picks one tool per user.

Trained in two stages, as in the paper: a supervised warm-up on the oracle labels
(:func:`~recbole_ext.models.twistar.routing.oracle_labels`, cross-entropy, :func:`warmup_loss`),
then REINFORCE on the reward ``NDCG@10 - beta * cost[tool]``
(:func:`~recbole_ext.models.twistar.routing.route_reward`, :func:`reinforce_step`, which calls
:func:`recbole_ext.rl.reinforce.reinforce_loss`). The official code ships the warm-up labels and the
tool executor but no planner trainer; its planner is an LLM emitting JSON tool calls, here it is an
MLP over standardised features (the features' scaler lives inside the module, so a checkpoint
carries it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_ext.models.twistar.features import FEATURE_NAMES, FeatureScaler
from recbole_ext.models.twistar.routing import N_TOOLS
from recbole_ext.rl.reinforce import ReinforceOutput, reinforce_loss

logger = logging.getLogger(__name__)

__all__ = ["Planner", "PlannerTable", "balanced_class_weights", "reinforce_step", "warmup_loss"]


@dataclass
class PlannerTable:
    """The planner's training rows (held-out training rows only), H rows sorted by user, then by content hash."""

    users: Tensor  # [H] user ids
    lengths: Tensor  # [H] history lengths
    target: Tensor  # [H] target items
    fast_items: Tensor  # [H, K] the fast beams (best first, -1 dead)
    features: Tensor  # [H, F] planner features
    ndcg: Tensor  # [H, 3] NDCG@10 of each tool's list
    oracle: Tensor  # [H] the pure oracle tool (no up-routing)
    cost: Tensor  # [3] measured seconds per user of each tool
    keys: Tensor  # [H] int64: each row's :func:`row_hash` (its identity: unique per distinct row)

    def notes(self) -> dict:
        from recbole_ext.models.twistar.routing import tool_shares

        h = int(self.users.shape[0])
        return {"holdout_rows": h, "measured_tool_cost_ms": [round(1000 * float(c), 4) for c in self.cost],
                "holdout_ndcg10": [round(float(v), 5) for v in self.ndcg.mean(0)] if h else [],
                "holdout_oracle_shares": tool_shares(self.oracle) if h else {}}


class Planner(nn.Module):
    """MLP policy: raw features [B, F] -> standardised (:class:`FeatureScaler`) -> logits [B, 3]."""

    def __init__(self, n_features: int = len(FEATURE_NAMES), hidden: Sequence[int] = (32,),
                 n_tools: int = N_TOOLS, dropout: float = 0.0):
        super().__init__()
        self.scaler = FeatureScaler(n_features)
        layers: list[nn.Module] = []
        size = n_features
        for h in hidden:
            layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
            size = h
        layers.append(nn.Linear(size, n_tools))
        self.net = nn.Sequential(*layers)

    def fit_scaler(self, features: Tensor) -> Planner:
        """Fit the standardiser on training features [N, F] (before the warm-up); returns self."""
        self.scaler.fit(features)
        return self

    def forward(self, features: Tensor) -> Tensor:
        """features [B, F] (raw, as :func:`planner_features` returns them) -> tool logits [B, 3]."""
        return self.net(self.scaler(features))

    def act(self, features: Tensor, greedy: bool, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Pick one tool per user: (tools [B] long, logits [B, 3]).

        ``greedy``: the argmax (evaluation); otherwise a sample from softmax(logits) (RL rollouts,
        reproducible with ``generator``). The logits keep their graph when called with gradients
        on, so an RL step can reuse them in :func:`reinforce_step`.
        """
        logits = self(features)  # [B, 3]
        if greedy:
            tools = logits.argmax(dim=1)
        else:
            probs = torch.softmax(logits.detach().float(), dim=1)
            tools = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return tools, logits


def balanced_class_weights(oracle: Tensor, n_tools: int = N_TOOLS) -> Tensor:
    """Inverse-frequency weights [n_tools], ``N / (n_tools * count)`` (a missing class gets N / n_tools),
    for the warm-up when one tool dominates the labels."""
    counts = torch.bincount(oracle.long().reshape(-1).cpu(), minlength=n_tools).float()
    return oracle.numel() / (n_tools * counts.clamp(min=1.0))


def warmup_loss(logits: Tensor, oracle: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of the planner's logits [B, 3] against the oracle tool labels [B] (optionally weighted [3])."""
    if class_weights is not None:
        class_weights = class_weights.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), oracle.long(), weight=class_weights)


def reinforce_step(logits: Tensor, tools_sampled: Tensor, reward: Tensor, entropy_coef: float = 0.0,
                   baseline: Tensor | float | str = "batch") -> ReinforceOutput:
    """REINFORCE loss of the sampled tools [B] under logits [B, 3] with rewards [B] (e.g. :func:`route_reward`).

    Thin wrapper over :func:`recbole_ext.rl.reinforce.reinforce_loss` (baseline: ``"batch"`` mean,
    ``"none"``, a float such as a :class:`~recbole_ext.rl.reinforce.RunningBaseline` value, or a
    tensor); ``entropy_coef`` keeps the policy from collapsing onto one tool too early.
    """
    out = reinforce_loss(logits, tools_sampled, reward, baseline=baseline, entropy_coef=entropy_coef)
    if logger.isEnabledFor(logging.DEBUG):  # avoid a device sync per step otherwise
        logger.debug("planner REINFORCE: loss %.4f, entropy %.4f", float(out.loss.detach()), float(out.entropy))
    return out
