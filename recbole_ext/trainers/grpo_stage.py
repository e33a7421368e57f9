"""GRPO as a training stage for any semantic-ID generator: the model only supplies rewards.

The stage owns what every GRPO run needs: the frozen reference policy (a copy of the model's T5
when the stage begins), rollouts sampled from the restricted decoding policy
(:meth:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq.sample`: ``free_steps`` reasoning tokens,
then the item's tokens along the trie when ``constrained_rollout``), their old and reference
log-probabilities under the *same* restricted policy, group-normalised advantages, reuse of one
rollout batch for ``updates_per_batch`` updates (where the clipped ratio acts), the cap on batches
per epoch, and per-epoch statistics (rewards, KL, clip fraction, ratio).

The model supplies ``grpo_rewards(interaction, rollouts) -> RewardSet`` (:class:`GRPOModel`):
unweighted rewards per rollout, their weights, and which of them credit the free (reasoning)
tokens. The stage turns them into advantages: one per rollout from the group-normalised weighted
sum (the paper; ``rl_advantage: sequence``, ``rl_reward_norm: total``), each reward normalised
within its group before the weighted sum (``rl_reward_norm: per_reward``), or per token
(``rl_advantage: token``): reasoning tokens credited by the rewards on them, item tokens by the
others. The losses are :func:`recbole_ext.rl.grpo.grpo_loss`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from recbole_ext.rl.grpo import GRPOOutput, group_advantages, grpo_loss
from recbole_ext.rl.rewards import combine_rewards, prefix_match_reward
from recbole_ext.trainers.stages import CappedRepeatedBatches, Stage, StageSchedule, config_key


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO settings (YAML keys ``rl_<field>``)."""

    group_size: int
    temperature: float
    clip_eps: float
    kl_beta: float
    kl_estimator: str
    level: str
    updates_per_batch: int
    max_batches: int | None
    constrained_rollout: bool
    dropout: bool
    advantage: str
    reward_norm: str

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"rl_advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.reward_norm not in REWARD_NORMS:
            raise ValueError(f"rl_reward_norm must be one of {REWARD_NORMS}, got {self.reward_norm!r}")
        if self.advantage == "token" and self.level != "token":
            raise ValueError("rl_advantage: token gives each token its own advantage: it needs rl_level: token")


#: sequence: one advantage per rollout | token: free (reasoning) tokens credited by the rewards on
#: them, item tokens by the others.
ADVANTAGES = ("sequence", "token")
#: total: the weighted sum of rewards normalised within its group | per_reward: each reward
#: normalised within its group, then the weighted sum of those z-scores.
REWARD_NORMS = ("total", "per_reward")


@dataclass
class RewardSet:
    """What a model's ``grpo_rewards`` returns: unweighted rewards per rollout and their use."""

    components: dict[str, Tensor]  # name -> [N]
    weights: dict[str, float]  # name -> weight (0 = off)
    on_free_tokens: frozenset = frozenset()  # names crediting the free (reasoning) tokens; the rest the item tokens
    stats: dict[str, float] = dataclasses.field(default_factory=dict)


def sid_match_rewards(item_codes: Tensor, target_item: Tensor, tokens: Tensor, vocab, weights: dict) -> RewardSet:
    """Rewards of SID rollouts ``tokens`` [N, m] for targets [B] (N = B*G, a user's G rollouts adjacent),
    those of ``weights`` with a non-zero weight: ``hit`` (1 for the target's SID) and ``prefix_match``
    (share of the target's codes matched from the start). ``item_codes`` [n_items, m]."""
    g = tokens.shape[0] // target_item.shape[0]
    gen = vocab.decode(tokens)  # [N, m]
    tgt = item_codes[target_item].repeat_interleave(g, 0)  # [N, m]
    comps: dict[str, Tensor] = {}
    if weights.get("hit"):
        comps["hit"] = (gen == tgt).all(dim=1).float()
    if weights.get("prefix_match"):
        comps["prefix_match"] = prefix_match_reward(gen, tgt) / gen.shape[1]
    return RewardSet(comps, {n: float(weights[n]) for n in comps})


@dataclass
class Rollouts:
    """One batch of rollouts: B users x G samples, N = B*G rows in user-major order."""

    ids: Tensor  # [B, L] encoder ids
    mask: Tensor  # [B, L]
    enc: Tensor | None  # [B, L, D] policy encoder states (no gradient)
    decode_enc: Tensor  # [B, L', D] encoder states for step-wise decoding (length buckets)
    decode_mask: Tensor  # [B, L']
    grouped: Tensor  # [B, G, T] sampled tokens: free_steps reasoning tokens, then m item tokens
    tokens: Tensor  # [N, T]
    allowed: Tensor  # [N, T, V] additive mask of the restricted policy
    hidden: Tensor | None  # [N, T, D] policy decoder states (no gradient)
    free_steps: int
    old: Tensor | None = None  # [N, T] log-probs under the policy that sampled
    ref: Tensor | None = None  # [N, T] log-probs under the frozen reference
    advantages: Tensor | None = None  # [N], or [N, T] with rl_advantage: token
    stats: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass
class GRPOStep:
    """One update of :meth:`GRPOStage.policy_step`; all None but ``stats`` when there were no rollouts."""

    rollouts: Rollouts | None
    new: Tensor | None  # [N, T] current policy's token log-probs, with gradient
    states: Tensor | None  # what :meth:`GRPOStage.current_policy` returned third (e.g. decoder states)
    out: GRPOOutput | None  # the clipped objective (``out.loss`` to minimise)
    stats: dict[str, float]


class GRPOModel(Protocol):
    """What :class:`GRPOStage` needs of a model (a SID generator with ``seq2seq``)."""

    seq2seq: Any

    def history_tokens(self, interaction) -> tuple[Tensor, Tensor]: ...

    def grpo_rewards(self, interaction, rollouts: Rollouts) -> RewardSet: ...


class GRPOStage(Stage):
    """GRPO on the model's semantic-ID policy; see the module docstring."""

    def __init__(self, name: str, prefix: str, config: GRPOConfig, schedule: StageSchedule, free_steps: int,
                 reward_config: Any = None):
        super().__init__(config, schedule)
        self.name, self.prefix = name, prefix
        self.free_steps = free_steps
        self.reward_config = reward_config  # the model's reward settings: part of the stage's key
        self.reference = None  # frozen T5, outside every module tree and state_dict
        self._rollouts: Rollouts | None = None
        self._uses = 0

    def key_config(self) -> dict:
        out = super().key_config()
        out["free_steps"] = self.free_steps
        if self.reward_config is not None:
            out["rewards"] = dataclasses.asdict(self.reward_config)
        return out

    def claimed_keys(self) -> set[str]:
        keys = super().claimed_keys()
        if self.reward_config is not None:
            keys |= {config_key(f, self.prefix) for f in dataclasses.fields(self.reward_config)}
        return keys

    def begin(self, model) -> None:
        """Freeze a copy of the incoming policy as the KL reference."""
        self.reference = copy.deepcopy(model.seq2seq.t5).eval().requires_grad_(False)
        self._rollouts = None

    def batches(self, train_data, epoch: int):
        cfg = self.config
        if cfg.updates_per_batch > 1 or cfg.max_batches is not None:
            return CappedRepeatedBatches(train_data, max(1, cfg.updates_per_batch), cfg.max_batches)
        return train_data

    def train_mode(self, model) -> None:
        # without dropout the ratio and the KL compare deterministic policies (pi_old = pi_theta at the first update)
        model.train(self.config.dropout)

    def decode_free_steps(self, model) -> int:
        return self.free_steps

    def rollouts(self, model: GRPOModel, interaction,
                 policy: Callable[[Rollouts], tuple[Tensor, Tensor, Tensor]] | None = None) -> Rollouts:
        """Sample G rollouts per user, score them under the sampling policy and the reference, reward
        them. ``policy``: a function of the sampled rollouts returning the current policy's (encoder
        states [B, L, D], log-probs [N, T], decoder states [N, T, D]) with gradient; without dropout
        these equal the sampling policy's, so the first update's own pass serves (one teacher-forced
        pass fewer per rollout batch)."""
        cfg, s2s, g = self.config, model.seq2seq, self.config.group_size
        if self.reference is None:
            self.begin(model)
        with torch.no_grad():
            ids, mask = model.history_tokens(interaction)
            dec_enc, dec_mask = s2s.encode_for_decoding(ids, mask)
            grouped = s2s.sample(dec_enc, dec_mask, g, self.free_steps, cfg.temperature, cfg.constrained_rollout)
            b, t = grouped.shape[0], grouped.shape[-1]
            tokens = grouped.reshape(b * g, t)
            allowed = s2s.policy_mask(tokens, self.free_steps, cfg.constrained_rollout)  # [N, T, V]
            rep_mask = mask.repeat_interleave(g, 0)
            ref_enc = s2s.encode(ids, mask, t5=self.reference)
            ref, _ = s2s.token_logprobs(ref_enc.repeat_interleave(g, 0), rep_mask, tokens, t5=self.reference,
                                        temperature=cfg.temperature, allowed=allowed)
        ro = Rollouts(ids, mask, None, dec_enc, dec_mask, grouped, tokens, allowed, None, self.free_steps, None, ref)
        if policy is not None and not cfg.dropout:
            ro.enc, new, hidden = policy(ro)
            ro.old, ro.hidden = new.detach(), hidden.detach()
        with torch.no_grad():
            if ro.old is None:
                ro.enc = s2s.encode(ids, mask)
                ro.old, ro.hidden = s2s.token_logprobs(ro.enc.repeat_interleave(g, 0), rep_mask, tokens,
                                                       temperature=cfg.temperature, allowed=allowed)
            ro.enc = ro.enc.detach()
            ro.advantages, ro.stats = self.advantages(model.grpo_rewards(interaction, ro), b, g, t)
        return ro

    def advantages(self, rewards: RewardSet, b: int, g: int, t: int) -> tuple[Tensor, dict[str, float]]:
        """Advantages of B x G rollouts of length T ([N], or [N, T] per token) and reward statistics:
        ``reward_<name>`` (weighted mean), ``spread_<name>`` (mean within-group std of the weighted
        reward), ``reward_total``."""
        cfg = self.config
        total, weighted = combine_rewards(rewards.components, rewards.weights)  # [N]
        stats = dict(rewards.stats)
        for name, value in weighted.items():
            stats[f"reward_{name}"] = float(value.mean())
            stats[f"spread_{name}"] = float(value.view(b, g).std(dim=1, unbiased=False).mean())
        stats["reward_total"] = float(total.mean())

        def credit(names) -> Tensor:  # [N] advantage from the rewards ``names``
            names = [n for n in names if n in weighted]
            if not names:
                return total.new_zeros(b * g)
            if cfg.reward_norm == "per_reward":
                return sum(rewards.weights.get(n, 1.0) * group_advantages(rewards.components[n].view(b, g))
                           for n in names).reshape(-1)
            return group_advantages(sum(weighted[n] for n in names).view(b, g)).reshape(-1)

        if cfg.advantage == "sequence":
            return credit(list(weighted)), stats
        free = credit([n for n in weighted if n in rewards.on_free_tokens])  # [N]
        item = credit([n for n in weighted if n not in rewards.on_free_tokens])  # [N]
        on_free = torch.arange(t, device=total.device) < self.free_steps  # [T]
        return torch.where(on_free[None, :], free[:, None], item[:, None]), stats

    def current_policy(self, model: GRPOModel, r: Rollouts) -> tuple[Tensor, Tensor, Tensor | None]:
        """The current policy on the rollouts ``r``, with gradient: (encoder states [B, L, D], token
        log-probs [N, T], decoder states [N, T, D] or None). Stages whose rollouts are decoded otherwise
        (after latent steps or a text prefix) override this."""
        cfg, g, s2s = self.config, self.config.group_size, model.seq2seq
        enc = s2s.encode(r.ids, r.mask)
        new, hidden = s2s.token_logprobs(enc.repeat_interleave(g, 0), r.mask.repeat_interleave(g, 0), r.tokens,
                                         temperature=cfg.temperature, allowed=r.allowed)
        return enc, new, hidden

    def policy_step(self, model: GRPOModel, interaction) -> GRPOStep:
        """One update's Eq. 20: the batch's rollouts (sampled anew every ``updates_per_batch`` updates), the
        current policy on them and the clipped objective with its statistics. Rollouts may be None (a batch
        a stage's :meth:`rollouts` skips); then so is the objective."""
        cfg = self.config
        current: dict[str, Any] = {}

        def policy(r: Rollouts) -> tuple[Tensor, Tensor, Tensor | None]:
            current["enc"], current["new"], current["states"] = self.current_policy(model, r)
            return current["enc"], current["new"], current["states"]

        if self._rollouts is None or self._uses >= max(1, cfg.updates_per_batch):
            self._rollouts, self._uses = self.rollouts(model, interaction, policy), 0
        r = self._rollouts
        self._uses += 1
        if r is None:
            return GRPOStep(None, None, None, None, {})
        if "new" not in current:  # a reused batch, or the rollouts did not call the policy
            policy(r)
        out = grpo_loss(current["new"], r.old, r.ref, r.advantages, clip_eps=cfg.clip_eps, beta=cfg.kl_beta,
                        kl_estimator=cfg.kl_estimator, level=cfg.level)
        stats = dict(r.stats, kl=float(out.kl), clip_fraction=float(out.clip_fraction), ratio=float(out.ratio_mean))
        return GRPOStep(r, current["new"], current["states"], out, stats)

    def loss(self, model: GRPOModel, interaction) -> Tensor:
        """Eq. 20 (DeepSeekMath GRPO) on the batch's rollouts, negated to be minimised."""
        step = self.policy_step(model, interaction)
        self.add_statistics(step.stats)
        return step.out.loss
