"""STREAM-Rec: slow-thinking generative recommendation in three stages (PT → SFT → RL).

Zhang et al., "Slow Thinking for Sequential Recommendation" (arXiv 2504.09627), sections 2.2-2.4;
no public code, so this is a reimplementation from the paper, with every gap filled by a
documented, switchable choice (properties/model/STREAMRec.yaml, layered over
properties/family/sid_generative.yaml). The backbone, the semantic IDs and the constrained
decoding are the shared :class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq`; the equations
live as pure functions in :mod:`recbole_ext.rl`; the stages are
:mod:`recbole_ext.models.stream_rec.stages` (PT, SFT) and the shared
:class:`~recbole_ext.trainers.grpo_stage.GRPOStage` (RL), run by
:class:`~recbole_ext.trainers.staged.StagedTrainer`. This file holds STREAM-Rec's own mathematics.

Stage 1, PT (Eq. 9-11): the decoder generates ``[tokens of the 2 items nearest to the target;
target tokens]`` under a temperature softmax. The one-step *direct* decoder (π_ref of stages 2-3)
is trained here too: a second T5 decoder stack that shares the encoder, the token embeddings and
the (tied) output layer, trained with plain CE on the target's m tokens (weight
``pt_direct_weight``). Neighbours: :mod:`recbole_ext.models.stream_rec.neighbors`
(``neighbor_source``). PT is evaluated in its own format: ``pt_neighbors * m`` free beam steps
(its synthetic "reasoning"), then the constrained target.

Stage 2, SFT (Eq. 12-19): at the start of each round the iterative-inference labeller
(:class:`~recbole_ext.rl.reasoning.IterativeInferenceLabeller`, eval mode, no gradient, decoder
stepped incrementally) labels every training sample with l reasoning tokens drawn from the code
tokens; labels are looked up by the sample's exact content (history, target). The loss is Eq. 19:
temperature NLL of ``[o_1..o_l; target]`` + λ DPO (policy = target tokens after the sample's
reasoning, reference = the direct decoder on the current shared encoder, detached; dispreferred =
an item drawn uniformly from the target's ``sft_dpo_neg_pool`` text neighbours) + μ quantisation
+ δ state InfoNCE (residuals and states recomputed from one teacher-forced pass by
``IterativeInferenceLabeller.teacher_forced``). With ``sft_straight_through`` the reasoning
inputs of the likelihood pass are ``straight_through(r, e_o)`` (value e_o, gradient to the
residual MLP), r coming from a first decoder pass over ``[bos, o_1..o_l]``: the loop form's
gradient truncated after one level. With l = 0 the DPO, quantisation and state terms vanish (no
thinking to compare) and the loss is TIGER's.

Stage 3, RL (Eq. 20-27): GRPO (the shared stage) on G rollouts per sample: l reasoning tokens from
all code tokens, then the m target tokens along valid trie paths (``rl_constrained_rollout``,
default; unconstrained, the paper's literal setting, a 1-epoch CPU run on scientific2018 produced
valid IDs in 0.03 % of rollouts). This model supplies the rewards (:meth:`STREAMRec.grpo_rewards`,
Eq. 21-27, weighted by ``rl_reward_weights``); the "direct" reference of Eq. 26 is the direct
decoder on the current encoder.

Inference: l free beam steps over the code tokens (the reasoning), then the trie-constrained
target; l = 0 is TIGER's decoding.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from recbole_ext.models.sid_base import SIDGenerativeRecommender
from recbole_ext.models.stream_rec.labels import ThoughtLabels
from recbole_ext.models.stream_rec.neighbors import sid_neighbors, text_neighbors
from recbole_ext.models.stream_rec.stages import (
    PTConfig,
    PTStage,
    RewardConfig,
    SFTConfig,
    SFTStage,
    STREAMRecSettings,
)
from recbole_ext.rl.grpo import token_logprobs
from recbole_ext.rl.losses import (
    dpo_loss,
    pretrain_targets,
    quantization_loss,
    sft_objective,
    state_target_infonce,
    temperature_nll,
)
from recbole_ext.rl.reasoning import IterativeInferenceLabeller
from recbole_ext.rl.rewards import (
    DEFAULT_REWARD_WEIGHTS,
    format_reward,
    mean_pool,
    prefix_match_reward,
    similarity_reward,
    thinking_likelihood_reward,
    thinking_ranking_reward,
)
from recbole_ext.trainers.grpo_stage import GRPOConfig, GRPOStage, Rollouts, RewardSet
from recbole_ext.trainers.stages import Stage, StageSchedule, read_config

logger = logging.getLogger(__name__)


class STREAMRec(ThoughtLabels, SIDGenerativeRecommender):
    """TIGER's backbone + direct decoder + iterative-inference labeller; see the module docstring."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # builds the T5 first: same init as TIGER for a seed
        from recbole_ext.modules.t5_backbone import build_t5_decoder

        self.settings = read_config(STREAMRecSettings, config)
        self.pt = read_config(PTConfig, config, "pt_")
        self.sft = read_config(SFTConfig, config, "sft_")
        self.grpo = read_config(GRPOConfig, config, "rl_")
        self.rewards = read_config(RewardConfig, config, "rl_")
        self.reasoning_len = self.settings.reasoning_len
        self.reasoning_decode = self.settings.reasoning_decode
        if self.reasoning_len < 0:
            raise ValueError("reasoning_len must be >= 0")
        self.m = self.vocab.n_levels
        t5 = self.seq2seq.t5
        # the extra modules draw their initial weights from a forked RNG: the global RNG leaves
        # __init__ as TIGER's does, so with l = 0 the data order and dropout draws are TIGER's too
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config["seed"]) + 1)
            self.direct_decoder = build_t5_decoder(t5)
            self.labeller = IterativeInferenceLabeller(
                int(config["d_model"]), self.settings.labeller_inner_size, dropout=self.settings.labeller_dropout,
                init=self.settings.labeller_init)
        if self.sft.dpo_reference not in ("frozen", "live"):
            raise ValueError(f"sft_dpo_reference must be 'frozen' or 'live', got {self.sft.dpo_reference!r}")
        self._dpo_reference = None  # frozen encoder + direct decoder (SFT), outside the module tree
        lo, hi = self.vocab.code_range()
        self.register_buffer("code_ids", torch.arange(lo, hi), persistent=False)  # [V_code]
        weights = dict(DEFAULT_REWARD_WEIGHTS)  # a weight not given is 1: the paper's plain sum
        weights.update({str(k): float(v) for k, v in dict(self.rewards.reward_weights).items()})
        unknown = set(weights) - set(DEFAULT_REWARD_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown rl_reward_weights {sorted(unknown)}; known: {sorted(DEFAULT_REWARD_WEIGHTS)}")
        self.reward_weights = weights

        # --- nearest items (PT targets, DPO negatives, RL hard negatives) ---
        n_real = self.n_items - 1
        self.rl_negatives = min(self.rewards.hard_negatives, max(0, n_real - 1))
        k = max(1, min(max(self.pt.neighbors, self.sft.dpo_neg_pool, self.rl_negatives), n_real - 1))
        if self.pt.neighbors > k:
            raise ValueError(f"pt_neighbors={self.pt.neighbors} > {k} other items in the dataset")
        source = self.settings.neighbor_source
        if source == "text":
            neighbors = text_neighbors(config, dataset, k)
        elif source == "sid":
            neighbors = sid_neighbors(self.seq2seq.item_codes.cpu(), k, seed=int(config["sid_seed"]))
        else:
            raise ValueError(f"neighbor_source must be 'text' or 'sid', got {source!r}")
        self.register_buffer("neighbors", neighbors, persistent=False)  # [n_items, k]


    def build_stages(self, config) -> list[Stage]:
        """PT, SFT, RL (the ``stages`` key picks a subset)."""
        return [
            PTStage(self.pt, StageSchedule.read(config, "pt_")),
            SFTStage(self.sft, StageSchedule.read(config, "sft_")),
            GRPOStage("rl", "rl_", self.grpo, StageSchedule.read(config, "rl_"), free_steps=self.reasoning_len,
                      reward_config=self.rewards),
        ]

    def calculate_loss(self, interaction):
        raise TypeError("STREAM-Rec trains in stages: use the StagedTrainer (the registry's trainer for STREAMRec)")

    def record_extra(self) -> dict:
        extra = super().record_extra()
        extra.update(reasoning_len=self.reasoning_len, neighbor_source=self.settings.neighbor_source,
                     reasoning_decode=self.reasoning_decode)
        return extra

    # --- shared pieces -------------------------------------------------------------------------
    def _encode(self, interaction) -> tuple[Tensor, Tensor]:
        ids, mask = self.history_tokens(interaction)  # [B, L*m]
        return self.seq2seq.encode(ids, mask), mask  # [B, L*m, D]

    def _target_repr(self, target_tokens: Tensor) -> Tensor:
        """t: mean of the target's token embeddings [B, m] -> [B, D]."""
        return self.seq2seq.t5.shared(target_tokens).mean(dim=1)

    def _direct_logprob(self, enc: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
        """log π_ref(y | x) of the direct decoder: sum over the m tokens [B, m] -> [B]."""
        return self.seq2seq.token_logprobs(enc, mask, tokens, decoder=self.direct_decoder)[0].sum(dim=1)

    def freeze_dpo_reference(self) -> None:
        """Keep a frozen copy of the T5 and the direct decoder (one deepcopy: the copy's decoder
        shares the copy's embeddings) as Eq. 16's reference when ``sft_dpo_reference: frozen``."""
        import copy

        pair = copy.deepcopy(torch.nn.ModuleDict({"t5": self.seq2seq.t5, "direct": self.direct_decoder}))
        object.__setattr__(self, "_dpo_reference", pair.eval().requires_grad_(False))  # not a submodule: no state_dict

    @torch.no_grad()
    def _reference_logprob(self, cfg: SFTConfig, interaction, enc: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
        """Eq. 16's reference log-prob of ``tokens`` [B, m]: the direct decoder, live (on the current
        encoder) or frozen at the start of SFT."""
        if cfg.dpo_reference == "live":
            return self._direct_logprob(enc, mask, tokens)
        if self._dpo_reference is None:
            self.freeze_dpo_reference()
        ref, s2s = self._dpo_reference, self.seq2seq
        ids, _ = self.history_tokens(interaction)
        ref_enc = s2s.encode(ids, mask, t5=ref["t5"])
        return s2s.token_logprobs(ref_enc, mask, tokens, decoder=ref["direct"], t5=ref["t5"])[0].sum(dim=1)

    # --- stage 1 -------------------------------------------------------------------------------
    def pretrain_loss(self, interaction, cfg: PTConfig) -> Tensor:
        """Eq. 9-11 on the lengthened target, plus CE of the direct decoder on the target."""
        s2s = self.seq2seq
        enc, mask = self._encode(interaction)
        target_item = interaction[self.POS_ITEM_ID]  # [B]
        target = s2s.item_tokens[target_item]  # [B, m]
        near = self.neighbors[target_item, : cfg.neighbors]  # [B, n]
        labels = pretrain_targets(s2s.item_tokens[near], target)  # [B, (n+1)*m]
        logits = s2s.logits(s2s.decode(enc, mask, input_ids=s2s.shift(labels)))
        loss = temperature_nll(logits, labels, cfg.temperature)
        if cfg.direct_weight:
            d_logits = s2s.logits(s2s.decode(enc, mask, input_ids=s2s.shift(target), decoder=self.direct_decoder))
            loss = loss + cfg.direct_weight * temperature_nll(d_logits, target)
        return loss

    # --- stage 2: loss -------------------------------------------------------------------------
    def sft_loss(self, interaction, cfg: SFTConfig) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 19 = L_SFT + λ L_DPO + μ L_Quant + δ L_State -> (loss, unweighted terms)."""
        l, s2s = self.reasoning_len, self.seq2seq
        enc, mask = self._encode(interaction)  # [B, L, D]
        target_item = interaction[self.POS_ITEM_ID]
        target = s2s.item_tokens[target_item]  # [B, m]
        think = self.reasoning_labels(interaction)  # [B, l]
        labels = torch.cat([think, target], dim=1)  # [B, l+m] (Eq. 13)
        dec_in = s2s.shift(labels)  # [B, l+m]
        t, table = self.labeller_targets(target, cfg)  # [B, D], [V, D]
        terms: dict[str, Tensor] = {}
        lab = None
        if l > 0 and cfg.straight_through:
            h1 = s2s.decode(enc, mask, input_ids=dec_in[:, : l + 1])  # [B, l+1, D]
            lab = self.labeller.teacher_forced(t, h1, think, table)
            embeds = s2s.t5.shared(dec_in)  # [B, l+m, D]
            embeds = torch.cat([embeds[:, :1], lab.quantized_st, embeds[:, l + 1 :]], dim=1)
            hidden = s2s.decode(enc, mask, inputs_embeds=embeds)
        else:
            hidden = s2s.decode(enc, mask, input_ids=dec_in)  # [B, l+m, D]
            if l > 0:
                lab = self.labeller.teacher_forced(t, hidden[:, : l + 1], think, table)
        logits = s2s.logits(hidden)  # [B, l+m, V]
        terms["sft"] = temperature_nll(logits, labels, cfg.temperature)
        with torch.no_grad():  # diagnostics: how well the thoughts and the target are predicted
            nll = -token_logprobs(logits.detach(), labels)  # [B, l+m]
            if l > 0:
                terms["nll_think"] = nll[:, :l].mean()
            terms["nll_target"] = nll[:, l:].mean()
        if lab is not None:
            if cfg.quant_weight:
                terms["quant"] = quantization_loss(lab.residuals, lab.quantized, cfg.quant_beta)
            if cfg.state_weight:
                terms["state"] = state_target_infonce(
                    lab.states, t, cfg.state_schedule, cfg.state_temperature, normalize=cfg.state_normalize)
            if cfg.dpo_weight:
                terms["dpo"] = self._dpo_term(cfg, interaction, enc, mask, target_item, target, logits, lab, dec_in)
        loss = sft_objective(terms["sft"], terms.get("dpo"), terms.get("quant"), terms.get("state"),
                             cfg.dpo_weight, cfg.quant_weight, cfg.state_weight)
        return loss, terms

    def labeller_targets(self, target: Tensor, cfg: SFTConfig) -> tuple[Tensor, Tensor]:
        """t of Eq. 14 (mean target-token embedding) [B, D] and the token table of Eq. 12/15 [V, D];
        with ``sft_vocab_stop_gradient`` both are cut from the shared embeddings' gradient."""
        t, table = self._target_repr(target), self.seq2seq.t5.shared.weight
        return (t.detach(), table.detach()) if cfg.vocab_stop_gradient else (t, table)

    def _dpo_term(self, cfg: SFTConfig, interaction, enc, mask, target_item, target, logits, lab, dec_in) -> Tensor:
        """Eq. 16-18: target vs a similar item, both after the sample's reasoning tokens."""
        l, b, s2s = self.reasoning_len, target.shape[0], self.seq2seq
        pool = max(1, min(cfg.dpo_neg_pool, self.neighbors.shape[1]))
        pick = torch.randint(0, pool, (b,), device=target.device)
        neg_item = self.neighbors[target_item].gather(1, pick[:, None]).squeeze(1)  # [B]
        neg = s2s.item_tokens[neg_item]  # [B, m]
        pos_lp = token_logprobs(logits[:, l:], target).sum(dim=1)  # [B]
        neg_in = torch.cat([dec_in[:, : l + 1], neg[:, :-1]], dim=1)  # [bos, o_1..o_l, c-_1..c-_{m-1}]
        embeds = s2s.t5.shared(neg_in)
        if cfg.straight_through:
            embeds = torch.cat([embeds[:, :1], lab.quantized_st, embeds[:, l + 1 :]], dim=1)
        neg_logits = s2s.logits(s2s.decode(enc, mask, inputs_embeds=embeds)[:, l:])
        neg_lp = token_logprobs(neg_logits, neg).sum(dim=1)  # [B]
        ref_pos = self._reference_logprob(cfg, interaction, enc, mask, target)
        ref_neg = self._reference_logprob(cfg, interaction, enc, mask, neg)
        return dpo_loss(pos_lp, neg_lp, ref_pos, ref_neg, beta=cfg.dpo_beta)

    # --- stage 3: rewards ----------------------------------------------------------------------
    #: rewards on the reasoning tokens (Eq. 26-27); the others (Eq. 21-25) are about the item
    THINKING_REWARDS = frozenset({"think_likelihood", "think_ranking"})

    @torch.no_grad()
    def grpo_rewards(self, interaction, ro: Rollouts) -> RewardSet:
        """Eq. 21-27 for every rollout (unweighted; the GRPO stage weighs and normalises them)."""
        l, m, g, s2s = self.reasoning_len, self.m, self.grpo.group_size, self.seq2seq
        b = ro.grouped.shape[0]
        w = self.reward_weights
        target_item = interaction[self.POS_ITEM_ID]
        target = s2s.item_tokens[target_item]  # [B, m]
        gen_codes = self.vocab.decode(ro.tokens[:, l:])  # [N, m]
        tgt_codes = s2s.item_codes[target_item].repeat_interleave(g, 0)  # [N, m]
        valid = s2s.trie(ro.tokens.device).lookup(gen_codes) >= 0  # [N]
        comps: dict[str, Tensor] = {}
        if w["format"]:
            comps["format"] = format_reward(valid)
        if w["prefix_match"]:
            comps["prefix_match"] = prefix_match_reward(gen_codes, tgt_codes)
        if w["similarity"]:
            t = self._target_repr(target).repeat_interleave(g, 0)  # [N, D]
            comps["similarity"] = similarity_reward(self._predicted_state(ro), t, self.rewards.similarity)
        if w["think_likelihood"] or w["think_ranking"]:
            k = self.rl_negatives if w["think_ranking"] else 0
            cand_items = torch.cat([target_item[:, None], self.neighbors[target_item, :k]], dim=1)  # [B, 1+K]
            cand = s2s.item_tokens[cand_items][:, None].expand(b, g, k + 1, m)
            scores = s2s.score_continuations(ro.decode_enc, ro.decode_mask, ro.grouped[..., :l], cand)  # [B, G, 1+K]
            pos = scores[..., 0].reshape(-1)  # [N]
            if w["think_likelihood"]:
                ref_direct = self._direct_logprob(ro.enc, ro.mask, target).repeat_interleave(g, 0)  # [N]
                comps["think_likelihood"] = thinking_likelihood_reward(pos, ref_direct, self.rewards.likelihood_clip)
            if w["think_ranking"] and k > 0:
                comps["think_ranking"] = thinking_ranking_reward(pos, scores[..., 1:].reshape(b * g, k))
        return RewardSet(comps, {n: w[n] for n in comps}, self.THINKING_REWARDS,
                         {"valid_rate": float(valid.float().mean())})

    def _predicted_state(self, ro: Rollouts) -> Tensor:
        """Eq. 24's predicted state of each rollout [N, D]: the mean of its decoder states
        (``rl_similarity_states: decoder_mean``) or the labeller's state after its reasoning tokens
        (``labeller``: Eq. 14's s_l = StateMLP(d_0 + ... + d_l), d_i the decoder state after o_i;
        with l = 0, s_0 = d_0)."""
        if self.rewards.similarity_states == "decoder_mean":
            return mean_pool(ro.hidden)
        l = self.reasoning_len
        return ro.hidden[:, 0] if l == 0 else self.labeller.state_mlp(ro.hidden[:, : l + 1].sum(dim=1))
