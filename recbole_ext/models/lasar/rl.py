"""LASAR's RL stage: GRPO on the SID after a sampled latent depth, terminal-only KL alignment,
REINFORCE on the Policy Head.

Extends the shared :class:`~recbole_ext.trainers.grpo_stage.GRPOStage` (its config, batch reuse
and cap, reward normalisation and advantages, statistics) where LASAR differs:

* a rollout is (k, SID): the depth k is drawn from the Policy Head (``fixed_depth`` in the fixed
  ablation), then k latent steps, then the m SID tokens sampled from the restricted policy
  (:func:`~recbole_ext.generation.sampling.sample_sequences` after a
  :class:`~recbole_ext.generation.latent.PrefixedDecoder`); a user's G rollouts may differ in depth;
* the reference policy is a frozen copy of the T5 *and* the step embeddings, run at the rollout's
  own depth; old / reference / new log-probs are of the SID tokens only (no token is sampled in the
  latent steps);
* terminal-only alignment (``rl_align_weight``): the last latent output of a rollout with k > 0
  is tied to the final anchor of its sample's CoT (bidirectional KL; the anchor from the current
  model, teacher forced, no gradient), so depth may vary;
* the Policy Head gets REINFORCE (:func:`~recbole_ext.rl.reinforce.reinforce_loss`) on the first
  update of each rollout batch (on-policy): reward = the rollout's recommendation reward minus
  ``rl_step_cost`` x k, baseline = the mean over the user's G rollouts, entropy bonus
  ``rl_depth_entropy``.

Rewards (:func:`~recbole_ext.trainers.grpo_stage.sid_match_rewards`, weighted by ``rl_reward_weights``): ``hit`` (1 for the target)
and ``prefix_match`` (the share of the target's m codes matched from the start, the partial credit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recbole_ext.generation.latent import PrefixedDecoder, latent_prefix_steps
from recbole_ext.generation.sampling import sample_sequences
from recbole_ext.generation.t5_decoder import T5CachedDecoder
from recbole_ext.models.lasar.stages import LASARRLConfig
from recbole_ext.rl.alignment import bidirectional_kl
from recbole_ext.rl.reinforce import reinforce_loss
from recbole_ext.rl.rewards import combine_rewards
from recbole_ext.trainers.grpo_stage import GRPOConfig, GRPOStage, Rollouts, sid_match_rewards
from recbole_ext.trainers.stages import StageSchedule

#: rewards LASAR's RL knows; a weight of 0 turns one off
REWARDS = ("hit", "prefix_match")


@dataclass
class LatentRollouts(Rollouts):
    """Rollouts with a latent depth each (N = B*G rows, user-major)."""

    depth: Tensor | None = None  # [N] latent steps of each rollout
    final_anchor: Tensor | None = None  # [N, D] final CoT anchor of the rollout's sample (no gradient)
    rec_reward: Tensor | None = None  # [N] weighted recommendation reward (before group normalisation)
    last: Tensor | None = None  # [N, D] last latent output under the sampling policy


def depth_policy_loss(logits: Tensor, depth: Tensor, rec_reward: Tensor, step_cost: float, entropy_coef: float):
    """REINFORCE on the Policy Head: logits [B, K+1] per user, the depths [N] its G = N / B rollouts
    drew and their recommendation rewards [N]; reward = rec - step_cost * k, baseline = the mean
    over the user's G rollouts (so only depth differences within a user move the head)."""
    b = logits.shape[0]
    g = depth.shape[0] // b
    reward = rec_reward - step_cost * depth.float()  # [N]
    baseline = reward.view(b, g).mean(dim=1).repeat_interleave(g)  # [N]
    return reinforce_loss(logits.repeat_interleave(g, 0), depth, reward, baseline=baseline, entropy_coef=entropy_coef)


class LASARRLStage(GRPOStage):
    """See the module docstring."""

    def __init__(self, config: GRPOConfig, schedule: StageSchedule, lasar: LASARRLConfig):
        super().__init__("rl", "rl_", config, schedule, free_steps=0, reward_config=lasar)
        self.lasar = lasar
        unknown = set(dict(lasar.reward_weights)) - set(REWARDS)
        if unknown:
            raise ValueError(f"unknown rl_reward_weights {sorted(unknown)}; LASAR knows {list(REWARDS)}")

    def begin(self, model) -> None:
        self.reference = model.freeze_reference()
        self._rollouts = None

    def decode_free_steps(self, model) -> int:
        return model.settings.max_depth

    def _sample_depth(self, model, enc: Tensor, mask: Tensor, g: int) -> Tensor:
        b = enc.shape[0]
        if model.settings.depth_mode == "fixed":
            return torch.full((b * g,), model.settings.fixed_depth, dtype=torch.long, device=enc.device)
        probs = torch.softmax(model.depth_logits(enc, mask), dim=-1)  # [B, K+1]
        return torch.multinomial(probs, g, replacement=True).reshape(-1)  # [N]

    def rollouts(self, model, interaction, policy=None) -> LatentRollouts:
        cfg, s2s, g, m = self.config, model.seq2seq, self.config.group_size, model.m
        if self.reference is None:
            self.begin(model)
        with torch.no_grad():
            ids, mask = model.history_tokens(interaction)
            dec_enc, dec_mask = s2s.encode_for_decoding(ids, mask)
            b = ids.shape[0]
            depth = self._sample_depth(model, dec_enc, dec_mask, g)  # [N]
            enc_n, mask_n = dec_enc.repeat_interleave(g, 0), dec_mask.repeat_interleave(g, 0)
            dec = T5CachedDecoder(s2s.t5, enc_n, mask_n, int(depth.max()) + 1 + m)
            bos, steps = s2s.t5.shared.weight[model.vocab.bos], model.step_embedding.weight
            prefixed = PrefixedDecoder(dec, lambda log_probs: latent_prefix_steps(dec, bos, steps, depth,
                                                                                  log_probs)[0])
            tokens = sample_sequences(s2s.t5, enc_n, mask_n, s2s.vocab, s2s.trie(ids.device), 1, 0, cfg.temperature,
                                      cfg.constrained_rollout, step_decoder=prefixed)[:, 0]  # [N, m]
            allowed = s2s.policy_mask(tokens, 0, cfg.constrained_rollout)  # [N, m, V]
            rep_mask = mask.repeat_interleave(g, 0)
            ref_enc = s2s.encode(ids, mask, t5=self.reference["t5"]).repeat_interleave(g, 0)
            ref, _ = model.sid_logprobs(ref_enc, rep_mask, depth, tokens, allowed, cfg.temperature,
                                        modules=self.reference)
        ro = LatentRollouts(ids, mask, None, dec_enc, dec_mask, tokens.view(b, g, m), tokens, allowed, None, 0,
                            None, ref, depth=depth)
        if policy is not None and not cfg.dropout:
            ro.enc, new, last = policy(ro)
            ro.old, ro.last = new.detach(), last.detach()
        with torch.no_grad():
            if ro.old is None:
                ro.enc = s2s.encode(ids, mask)
                ro.old, ro.last = model.sid_logprobs(ro.enc.repeat_interleave(g, 0), rep_mask, depth, tokens, allowed,
                                                     cfg.temperature)
            ro.enc = ro.enc.detach()
            if self.lasar.align_weight:
                cot, ends, n_sent = model.rationale_tokens(interaction)
                _, anchors = model.cot_pass(ro.enc, mask, cot, ends, model.target_tokens(interaction), with_loss=False)
                final = anchors.gather(1, (n_sent - 1)[:, None, None].expand(-1, 1, anchors.shape[-1]))[:, 0]
                ro.final_anchor = final.repeat_interleave(g, 0)  # [N, D]
            rewards = sid_match_rewards(s2s.item_codes, interaction[model.POS_ITEM_ID], tokens, model.vocab,
                                    dict(self.lasar.reward_weights))
            ro.rec_reward = combine_rewards(rewards.components, rewards.weights)[0]  # [N]
            ro.advantages, ro.stats = self.advantages(rewards, b, g, m)
            ro.stats["depth_mean"] = float(depth.float().mean())
        return ro

    def current_policy(self, model, r: LatentRollouts) -> tuple[Tensor, Tensor, Tensor]:
        """The current policy after each rollout's latent steps: (encoder states [B, L, D], SID token
        log-probs [N, m], last latent output [N, D]), with gradient."""
        cfg, g, s2s = self.config, self.config.group_size, model.seq2seq
        enc = s2s.encode(r.ids, r.mask)
        new, last = model.sid_logprobs(enc.repeat_interleave(g, 0), r.mask.repeat_interleave(g, 0), r.depth, r.tokens,
                                       r.allowed, cfg.temperature)
        return enc, new, last

    def loss(self, model, interaction) -> Tensor:
        s2s, lc = model.seq2seq, self.lasar
        step = self.policy_step(model, interaction)
        r, last = step.rollouts, step.states  # last latent output [N, D]
        loss, stats = step.out.loss, step.stats
        deep = r.depth > 0
        if lc.align_weight and r.final_anchor is not None and bool(deep.any()):
            align = bidirectional_kl(s2s.logits(last[deep]), s2s.logits(r.final_anchor[deep])).mean()
            loss = loss + lc.align_weight * align
            stats["align"] = float(align.detach())
        if lc.depth_weight and model.settings.depth_mode == "policy" and self._uses == 1:
            rf = depth_policy_loss(model.depth_logits(r.enc, r.mask), r.depth, r.rec_reward, lc.step_cost,
                                   lc.depth_entropy)
            loss = loss + lc.depth_weight * rf.loss
            stats.update(depth_reward=float((r.rec_reward - lc.step_cost * r.depth).mean()),
                         depth_entropy=float(rf.entropy))
        self.add_statistics(stats)
        return loss


__all__ = ["REWARDS", "LASARRLStage", "LatentRollouts", "depth_policy_loss"]
