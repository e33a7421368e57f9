"""TwiSTAR's slow-model RL stage: GRPO on the SID tokens after the greedy justification.

Extends the shared :class:`~recbole_ext.trainers.grpo_stage.GRPOStage` (its config, batch reuse and
cap, reward normalisation and advantages, statistics) where the slow model differs:

* the policy is the slow model (``model.slow``), not the fast ``model.seq2seq``; the frozen
  reference is a copy of the slow T5 when the stage begins;
* the prompt is [history SIDs, collaborative sentences] plus the justification decoded greedily by
  the current policy (no gradient; it is part of the prompt, so the text is not optimised by RL:
  a documented simplification). Each user's G rollouts sample the m SID tokens after it from the
  restricted policy (:func:`~recbole_ext.generation.sampling.sample_sequences` after a
  :class:`~recbole_ext.generation.latent.PrefixedDecoder`); old / reference / new log-probs are of
  the SID tokens after that same prefix (:func:`~recbole_ext.models.twistar.slow.sid_logprobs_after_prefix`);
* rewards: the prefix ladder (:func:`~recbole_ext.models.twistar.slow.ladder_rewards`): hit +
  the share of the target's codes matched from the start, weighted by ``slow_rl_reward_weights``;
* rows: the non-held-out training rows only (as the fast model and the slow SFT).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from recbole_ext.generation.latent import PrefixedDecoder, token_prefix_steps
from recbole_ext.generation.sampling import sample_sequences
from recbole_ext.generation.t5_decoder import T5CachedDecoder
from recbole_ext.models.item_text import text_prefix
from recbole_ext.models.twistar.slow import ladder_rewards, sid_logprobs_after_prefix
from recbole_ext.models.twistar.stages import SlowRLConfig
from recbole_ext.trainers.grpo_stage import GRPOConfig, GRPOStage, Rollouts
from recbole_ext.trainers.stages import StageSchedule


@dataclass
class PrefixRollouts(Rollouts):
    """Rollouts after a per-user text prefix (N = B*G rows, user-major)."""

    prefix: Tensor | None = None  # [N, P] left-padded [bos, justification]
    real: Tensor | None = None  # [N, P] False on padding
    target: Tensor | None = None  # [B] target items (rewards only)


class SlowRLStage(GRPOStage):
    """GRPO on the slow model's SID after its greedy justification; see the module docstring."""

    def __init__(self, config: GRPOConfig, schedule: StageSchedule, twistar: SlowRLConfig):
        super().__init__("slow_rl", "slow_rl_", config, schedule, free_steps=0, reward_config=twistar)
        self.twistar = twistar

    def begin(self, model) -> None:
        self.reference = copy.deepcopy(model.slow.t5).eval().requires_grad_(False)
        self._rollouts = None

    def train_mode(self, model) -> None:
        model.eval()
        model.slow.train(self.config.dropout)

    def decode_free_steps(self, model) -> int:
        model.route_mode = "slow"
        return model.settings.slow_max_tokens

    def rollouts(self, model, interaction, policy=None) -> PrefixRollouts | None:
        cfg, s2s, g = self.config, model.slow, self.config.group_size
        if self.reference is None:
            self.begin(model)
        interaction = interaction[~model.holdout_mask(interaction)]
        if len(interaction) == 0:
            return None
        with torch.no_grad():
            ids, mask = model.slow_inputs(interaction)
            dec_enc, dec_mask = s2s.encode_for_decoding(ids, mask)
            prefix, real = text_prefix(s2s, dec_enc, dec_mask, model.settings.slow_max_tokens)  # [B, P]
            dec = T5CachedDecoder(s2s.t5, dec_enc, dec_mask, prefix.shape[1] + s2s.vocab.n_levels)
            prefixed = PrefixedDecoder(dec, lambda log_probs: token_prefix_steps(dec, s2s.t5.shared, prefix, real,
                                                                                 log_probs))
            grouped = sample_sequences(s2s.t5, dec_enc, dec_mask, s2s.vocab, s2s.trie(ids.device), g, 0,
                                       cfg.temperature, cfg.constrained_rollout, step_decoder=prefixed)  # [B, G, m]
            b, m = grouped.shape[0], grouped.shape[-1]
            tokens = grouped.reshape(b * g, m)
            allowed = s2s.policy_mask(tokens, 0, cfg.constrained_rollout)  # [N, m, V]
            rep = {"mask": mask.repeat_interleave(g, 0), "prefix": prefix.repeat_interleave(g, 0),
                   "real": real.repeat_interleave(g, 0)}
            ref_enc = s2s.encode(ids, mask, t5=self.reference).repeat_interleave(g, 0)
            ref = sid_logprobs_after_prefix(s2s, ref_enc, rep["mask"], rep["prefix"], rep["real"], tokens, allowed,
                                            t5=self.reference, temperature=cfg.temperature)
        ro = PrefixRollouts(ids, mask, None, dec_enc, dec_mask, grouped, tokens, allowed, None, 0, None, ref,
                            prefix=rep["prefix"], real=rep["real"], target=interaction[model.POS_ITEM_ID])
        if policy is not None and not cfg.dropout:
            ro.enc, new, _ = policy(ro)
            ro.old = new.detach()
        with torch.no_grad():
            if ro.old is None:
                ro.enc = s2s.encode(ids, mask)
                ro.old = sid_logprobs_after_prefix(s2s, ro.enc.repeat_interleave(g, 0), rep["mask"], ro.prefix,
                                                   ro.real, tokens, allowed, temperature=cfg.temperature)
            ro.enc = ro.enc.detach()
            rewards = ladder_rewards(s2s.item_codes, ro.target, tokens, s2s.vocab, dict(self.twistar.reward_weights))
            ro.advantages, ro.stats = self.advantages(rewards, b, g, m)
            ro.stats["justification_tokens"] = float((ro.real.sum(1) - 1).float().mean())
        return ro

    def current_policy(self, model, r: PrefixRollouts) -> tuple[Tensor, Tensor, None]:
        """The current policy on the SID after each rollout's justification: (encoder states [B, L, D], SID
        token log-probs [N, m], None), with gradient."""
        cfg, g, s2s = self.config, self.config.group_size, model.slow
        enc = s2s.encode(r.ids, r.mask)
        new = sid_logprobs_after_prefix(s2s, enc.repeat_interleave(g, 0), r.mask.repeat_interleave(g, 0), r.prefix,
                                        r.real, r.tokens, r.allowed, temperature=cfg.temperature)
        return enc, new, None

    def loss(self, model, interaction) -> Tensor:
        step = self.policy_step(model, interaction)
        if step.out is None:  # a batch of held-out rows only
            return sum(p.sum() for p in model.slow.parameters()) * 0.0
        self.add_statistics(step.stats)
        return step.out.loss
