"""GRPO as a training stage for any semantic-ID generator: the model only supplies rewards.

The stage owns what every GRPO run needs: the frozen reference policy (a copy of the model's T5
when the stage begins), rollouts sampled from the restricted decoding policy
(:meth:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq.sample`: ``free_steps`` reasoning tokens,
then the item's tokens along the trie when ``constrained_rollout``), their old and reference
log-probabilities under the *same* restricted policy, group-normalised advantages, reuse of one
rollout batch for ``updates_per_batch`` updates (where the clipped ratio acts), the cap on batches
per epoch, and per-epoch statistics (rewards, KL, clip fraction, ratio).

The model supplies ``grpo_rewards(interaction, rollouts) -> (total [N], stats)``
(:class:`GRPOModel`); the losses are :func:`recbole_ext.rl.grpo.grpo_loss`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from recbole_ext.rl.grpo import group_advantages, grpo_loss
from recbole_ext.trainers.stages import Stage, StageSchedule, config_key


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


@dataclass
class Rollouts:
    """One batch of rollouts: B users x G samples, N = B*G rows in user-major order."""

    ids: Tensor  # [B, L] encoder ids
    mask: Tensor  # [B, L]
    enc: Tensor  # [B, L, D] policy encoder states (no gradient)
    decode_enc: Tensor  # [B, L', D] encoder states for step-wise decoding (length buckets)
    decode_mask: Tensor  # [B, L']
    grouped: Tensor  # [B, G, T] sampled tokens: free_steps reasoning tokens, then m item tokens
    tokens: Tensor  # [N, T]
    allowed: Tensor  # [N, T, V] additive mask of the restricted policy
    hidden: Tensor  # [N, T, D] policy decoder states (no gradient)
    free_steps: int
    old: Tensor | None = None  # [N, T] log-probs under the policy that sampled
    ref: Tensor | None = None  # [N, T] log-probs under the frozen reference
    advantages: Tensor | None = None  # [N]
    stats: dict[str, float] = dataclasses.field(default_factory=dict)


class GRPOModel(Protocol):
    """What :class:`GRPOStage` needs of a model (a SID generator with ``seq2seq``)."""

    seq2seq: Any

    def history_tokens(self, interaction) -> tuple[Tensor, Tensor]: ...

    def grpo_rewards(self, interaction, rollouts: Rollouts) -> tuple[Tensor, dict[str, float]]: ...


class CappedRepeatedBatches:
    """The first ``limit`` batches of ``data`` (all when None), each ``times`` times in a row."""

    def __init__(self, data, times: int = 1, limit: int | None = None):
        self.data, self.times, self.limit = data, times, limit

    def __iter__(self):
        for batch in itertools.islice(self.data, self.limit):
            for _ in range(self.times):
                yield batch

    def __len__(self) -> int:
        n = len(self.data) if self.limit is None else min(self.limit, len(self.data))
        return n * self.times


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

    @torch.no_grad()
    def rollouts(self, model: GRPOModel, interaction) -> Rollouts:
        """Sample G rollouts per user, score them under the policy and the reference, reward them."""
        cfg, s2s, g = self.config, model.seq2seq, self.config.group_size
        if self.reference is None:
            self.begin(model)
        ids, mask = model.history_tokens(interaction)
        dec_enc, dec_mask = s2s.encode_for_decoding(ids, mask)
        grouped = s2s.sample(dec_enc, dec_mask, g, self.free_steps, cfg.temperature, cfg.constrained_rollout)
        b, t = grouped.shape[0], grouped.shape[-1]
        tokens = grouped.reshape(b * g, t)
        allowed = s2s.policy_mask(tokens, self.free_steps, cfg.constrained_rollout)  # [N, T, V]
        enc = s2s.encode(ids, mask)
        rep_mask = mask.repeat_interleave(g, 0)
        old, hidden = s2s.token_logprobs(enc.repeat_interleave(g, 0), rep_mask, tokens,
                                         temperature=cfg.temperature, allowed=allowed)
        ref_enc = s2s.encode(ids, mask, t5=self.reference)
        ref, _ = s2s.token_logprobs(ref_enc.repeat_interleave(g, 0), rep_mask, tokens, t5=self.reference,
                                    temperature=cfg.temperature, allowed=allowed)
        ro = Rollouts(ids, mask, enc, dec_enc, dec_mask, grouped, tokens, allowed, hidden, self.free_steps, old, ref)
        total, stats = model.grpo_rewards(interaction, ro)  # [N]
        ro.advantages = group_advantages(total.view(b, g)).reshape(-1)
        ro.stats = dict(stats, reward_total=float(total.mean()))
        return ro

    def loss(self, model: GRPOModel, interaction) -> Tensor:
        """Eq. 20 (DeepSeekMath GRPO) on the batch's rollouts, negated to be minimised."""
        cfg, g = self.config, self.config.group_size
        if self._rollouts is None or self._uses >= max(1, cfg.updates_per_batch):
            self._rollouts, self._uses = self.rollouts(model, interaction), 0
        r = self._rollouts
        self._uses += 1
        s2s = model.seq2seq
        enc = s2s.encode(r.ids, r.mask)
        new, _ = s2s.token_logprobs(enc.repeat_interleave(g, 0), r.mask.repeat_interleave(g, 0), r.tokens,
                                    temperature=cfg.temperature, allowed=r.allowed)
        out = grpo_loss(new, r.old, r.ref, r.advantages, clip_eps=cfg.clip_eps, beta=cfg.kl_beta,
                        kl_estimator=cfg.kl_estimator, level=cfg.level)
        self.add_statistics(dict(r.stats, kl=float(out.kl), clip_fraction=float(out.clip_fraction),
                                 ratio=float(out.ratio_mean)))
        return out.loss
