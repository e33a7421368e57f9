"""STREAM-Rec: slow-thinking generative recommendation in three stages (PT → SFT → RL).

Zhang et al., "Slow Thinking for Sequential Recommendation" (arXiv 2504.09627), sections 2.2-2.4;
no public code, so this is a reimplementation from the paper, with every gap filled by a
documented, switchable choice (properties/model/STREAMRec.yaml). The backbone, the semantic IDs
and the trie-constrained beam search are TIGER's
(:class:`~recbole_ext.models.sid_base.SIDGenerativeRecommender`); the equations live as pure
functions in :mod:`recbole_ext.rl`; the stage loop and its cache are
:class:`recbole_ext.trainers.stream_rec.STREAMRecTrainer`. The trainer sets :attr:`STREAMRec.stage`
and ``calculate_loss`` dispatches on it.

Stage 1, PT (Eq. 9-11): the decoder generates ``[tokens of the 2 items nearest to the target;
target tokens]`` under a temperature softmax. The one-step *direct* decoder (π_ref of stages 2-3)
is trained here too: a second T5 decoder stack that shares the encoder, the token embeddings and
the (tied) output layer, trained with plain CE on the target's m tokens (weight
``pt_direct_weight``). Neighbours come from item text embeddings (faiss exact kNN, cosine),
``neighbor_source: text``; ``sid`` ranks items by the length of the semantic-ID prefix they share
with the target (random tie-break), for datasets without item text (e.g. the random-tokenizer
ablation on a text-less dataset). PT is evaluated in its own format: ``pt_neighbors * m`` free
beam steps (its synthetic "reasoning"), then the constrained target.

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

Stage 3, RL (Eq. 20-27): per training sample, G rollouts are sampled (temperature
``rl_temperature``): l reasoning tokens from all code tokens, then the m target tokens, each from
its level's codes and, with ``rl_constrained_rollout`` (default), only along valid trie paths, as
at inference. The format reward is then always 0; unconstrained (``False``, the paper's literal
setting, where the format reward teaches validity) a 1-epoch CPU run on scientific2018 produced
valid IDs in 0.03 % of rollouts, so format was -1 almost everywhere and carried no signal. The
policy's probability of a rollout is the product of these restricted softmaxes, for sampling,
ratio and KL alike. Rewards (Eq. 21-27, :mod:`recbole_ext.rl.rewards`) are combined with
``rl_reward_weights``; the KL reference is a frozen copy of the SFT model (taken when RL
starts); the "direct" reference of Eq. 26 is the direct decoder on the current encoder. RL runs
with dropout off (``rl_dropout``), so π_old = π_θ at the first update of a batch; the batch is
reused for ``rl_updates_per_batch`` updates (the trainer repeats it), where the clipped ratio acts.

Inference: l free beam steps over the code tokens (the reasoning), then the trie-constrained
target (base class); l = 0 is TIGER's decoding.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recbole_ext.models.sid_base import SIDGenerativeRecommender, _embeddings_for
from recbole_ext.rl.grpo import group_advantages, grpo_loss, token_logprobs
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
    combine_rewards,
    format_reward,
    mean_pool,
    prefix_match_reward,
    similarity_reward,
    thinking_likelihood_reward,
    thinking_ranking_reward,
)

logger = logging.getLogger(__name__)

STAGES = ("pt", "sft", "rl")


def parse_stages(value: Any) -> list[str]:
    """``stages`` from YAML (a list) or the command line (``"pt,sft"``) -> ordered stage names."""
    if value is None:
        return list(STAGES)
    items = value.replace("+", ",").split(",") if isinstance(value, str) else list(value)
    names = [str(s).strip().lower() for s in items if str(s).strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ValueError(f"stages must be a non-empty ordered subset of {list(STAGES)}, got {value!r}")
    if names != sorted(set(names), key=STAGES.index):
        raise ValueError(f"stages must be distinct and in the order pt, sft, rl; got {value!r}")
    return names


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    value = config[key]
    return default if value is None else value


def text_neighbors(config: Any, dataset: Any, k: int) -> Tensor:
    """[n_items, k] RecBole ids of each item's k nearest items by text embedding (cosine, exact
    faiss search, the item itself excluded); row 0 (padding) is 0."""
    import faiss

    id2token = list(dataset.field2id_token[dataset.iid_field])
    try:
        vectors = _embeddings_for(config, [str(t) for t in id2token[1:]])
    except Exception as exc:  # missing .item text, no encoder, ...
        raise ValueError(
            f"STREAM-Rec needs item text embeddings for its nearest-item retrieval "
            f"(neighbor_source: text) but they are unavailable for {config['dataset']!r}: {exc}. "
            "Add item text to the .item file, or set neighbor_source: sid to rank neighbours by "
            "shared semantic-ID prefix."
        ) from exc
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, min(k + 1, x.shape[0]))  # [n, k+1]
    n = x.shape[0]
    out = np.zeros((n + 1, k), dtype=np.int64)
    for i in range(n):
        row = [j for j in found[i] if j != i and j >= 0][:k]
        out[i + 1, : len(row)] = np.asarray(row, dtype=np.int64) + 1
    return torch.from_numpy(out)


def sid_neighbors(codes: Tensor, k: int, seed: int = 0, chunk: int = 128) -> Tensor:
    """[n_items, k] nearest items by shared semantic-ID prefix length (ties broken at random with
    ``seed``); ``codes`` [n_items, m] in RecBole order with row 0 = padding (-1)."""
    real = codes[1:].long()  # [n, m]
    n = real.shape[0]
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(n + 1, k, dtype=torch.long)
    for start in range(0, n, chunk):
        block = real[start : start + chunk]  # [c, m]
        prefix = (block[:, None, :] == real[None, :, :]).long().cumprod(-1).sum(-1).float()  # [c, n]
        score = prefix + 0.5 * torch.rand(prefix.shape, generator=gen)
        rows = torch.arange(block.shape[0])
        score[rows, rows + start] = -1.0  # not itself
        out[start + 1 : start + 1 + block.shape[0]] = score.topk(k, dim=1).indices + 1
    return out


class STREAMRec(SIDGenerativeRecommender):
    """TIGER's backbone + direct decoder + iterative-inference labeller; see the module docstring."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # builds self.t5 first: same init as TIGER for a seed
        from recbole_ext.modules.t5_backbone import build_t5_decoder

        self.stages = parse_stages(config["stages"])
        self.stage = self.stages[0]
        self.reasoning_len = int(_cfg(config, "reasoning_len", 0))
        if self.reasoning_len < 0:
            raise ValueError("reasoning_len must be >= 0")
        self.m = self.vocab.n_levels
        d_model = int(config["d_model"])
        # the extra modules draw their initial weights from a forked RNG: the global RNG leaves
        # __init__ as TIGER's does, so with l = 0 the data order and dropout draws are TIGER's too
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(_cfg(config, "seed", 0)) + 1)
            self.direct_decoder = build_t5_decoder(self.t5)
            self.labeller = IterativeInferenceLabeller(
                d_model, config["labeller_inner_size"], dropout=float(_cfg(config, "labeller_dropout", 0.0)))
        lo, hi = self.vocab.code_range()
        self.register_buffer("code_ids", torch.arange(lo, hi), persistent=False)  # [V_code]

        # --- stage settings ---
        self.pt_neighbors = int(_cfg(config, "pt_neighbors", 2))
        self.pt_temperature = float(_cfg(config, "pt_temperature", 1.0))
        self.pt_direct_weight = float(_cfg(config, "pt_direct_weight", 1.0))
        self.sft_temperature = float(_cfg(config, "sft_temperature", 1.0))
        self.dpo_weight = float(_cfg(config, "sft_dpo_weight", 1.0))
        self.dpo_beta = float(_cfg(config, "sft_dpo_beta", 0.1))
        self.dpo_neg_pool = int(_cfg(config, "sft_dpo_neg_pool", 10))
        self.quant_weight = float(_cfg(config, "sft_quant_weight", 0.1))
        self.quant_beta = float(_cfg(config, "sft_quant_beta", 0.25))
        self.state_weight = float(_cfg(config, "sft_state_weight", 0.1))
        self.state_schedule = str(_cfg(config, "sft_state_schedule", "linear"))
        self.state_temperature = float(_cfg(config, "sft_state_temperature", 1.0))
        self.state_normalize = bool(_cfg(config, "sft_state_normalize", False))
        self.straight_through = bool(_cfg(config, "sft_straight_through", True))
        self.rl_group = int(_cfg(config, "rl_group_size", 8))
        self.rl_temperature = float(_cfg(config, "rl_temperature", 1.0))
        self.rl_clip_eps = float(_cfg(config, "rl_clip_eps", 0.2))
        self.rl_kl_beta = float(_cfg(config, "rl_kl_beta", 0.04))
        self.rl_kl_estimator = str(_cfg(config, "rl_kl_estimator", "k3"))
        self.rl_level = str(_cfg(config, "rl_level", "sequence"))
        self.rl_updates = int(_cfg(config, "rl_updates_per_batch", 1))
        self.rl_dropout = bool(_cfg(config, "rl_dropout", False))
        self.rl_constrained = bool(_cfg(config, "rl_constrained_rollout", True))
        self.rl_similarity = str(_cfg(config, "rl_similarity", "dot"))
        self.rl_likelihood_clip = config["rl_likelihood_clip"]
        weights = dict(DEFAULT_REWARD_WEIGHTS)
        weights.update({str(k): float(v) for k, v in dict(_cfg(config, "rl_reward_weights", {})).items()})
        unknown = set(weights) - set(DEFAULT_REWARD_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown rl_reward_weights {sorted(unknown)}; known: {sorted(DEFAULT_REWARD_WEIGHTS)}")
        self.reward_weights = weights

        # --- nearest items (PT targets, DPO negatives, RL hard negatives) ---
        n_real = self.n_items - 1
        self.rl_negatives = min(int(_cfg(config, "rl_hard_negatives", 50)), max(0, n_real - 1))
        k = max(1, min(max(self.pt_neighbors, self.dpo_neg_pool, self.rl_negatives), n_real - 1))
        if self.pt_neighbors > k:
            raise ValueError(f"pt_neighbors={self.pt_neighbors} > {k} other items in the dataset")
        self.neighbor_source = str(_cfg(config, "neighbor_source", "text"))
        if self.neighbor_source == "text":
            neighbors = text_neighbors(config, dataset, k)
        elif self.neighbor_source == "sid":
            neighbors = sid_neighbors(self.item_codes.cpu(), k, seed=int(_cfg(config, "sid_seed", 0)))
        else:
            raise ValueError(f"neighbor_source must be 'text' or 'sid', got {self.neighbor_source!r}")
        self.register_buffer("neighbors", neighbors, persistent=False)  # [n_items, k]

        self._labels: dict[bytes, int] = {}  # sample content -> row of _label_tokens
        self._label_tokens: Tensor | None = None  # [N, l] on CPU
        self._warned_unlabelled = False
        self._ref_t5 = None  # frozen SFT policy (RL), kept out of the module tree and state_dict
        self._rollouts: dict | None = None
        self._rollout_uses = 0
        self.reset_rl_stats()
        self.reset_sft_stats()

    # --- stages --------------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.stage = stage
        self._rollouts = None

    def begin_stage(self, stage: str) -> None:
        """Called by the trainer before a stage is trained (not when it is loaded from cache)."""
        self.set_stage(stage)
        if stage == "rl":
            self.snapshot_reference()
        if stage == "sft":
            self.clear_labels()

    def snapshot_reference(self) -> None:
        """Freeze a copy of the current policy as the KL reference of Eq. 20."""
        ref = copy.deepcopy(self.t5).eval().requires_grad_(False)
        object.__setattr__(self, "_ref_t5", ref)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.stage == "rl" and not self.rl_dropout:
            self.t5.eval()  # RL without dropout: ratio and KL compare deterministic policies
            self.direct_decoder.eval()
        return self

    def free_steps(self) -> int:
        """Free decoding steps before the target: PT's neighbour tokens, else the reasoning."""
        return self.pt_neighbors * self.m if self.stage == "pt" else self.reasoning_len

    def decode_kwargs(self, interaction) -> dict:
        return {"free_steps": self.free_steps()}

    def reset_decode_stats(self) -> None:
        super().reset_decode_stats()
        self.ranked_items = torch.zeros((), dtype=torch.long)

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """The base's beam ranking; also counts the distinct items ranked per user (several reasoning
        paths may end in the same item, leaving fewer than num_beams distinct items)."""
        scores = super().full_sort_predict(interaction)  # [B, n_items]
        self.ranked_items = self.ranked_items.to(scores.device) + torch.isfinite(scores).sum()
        return scores

    def record_extra(self) -> dict:
        extra = super().record_extra()
        extra.update(reasoning_len=self.reasoning_len, stage=self.stage, decode_free_steps=self.free_steps(),
                     neighbor_source=self.neighbor_source,
                     mean_ranked_items=round(float(self.ranked_items) / max(1, self.decode_users), 3))
        return extra

    # --- shared pieces -------------------------------------------------------------------------
    def _encode(self, interaction) -> tuple[Tensor, Tensor]:
        ids, mask = self.history_tokens(interaction)  # [B, L*m]
        return self.t5.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask  # [B, L*m, D]

    def _shift(self, labels: Tensor) -> Tensor:
        """Decoder inputs: [bos, labels[:, :-1]]."""
        bos = labels.new_full((labels.shape[0], 1), self.vocab.bos)
        return torch.cat([bos, labels[:, :-1]], dim=1)

    def _decode(self, decoder, enc: Tensor, mask: Tensor, input_ids=None, inputs_embeds=None) -> Tensor:
        """Decoder hidden states [B, T, D] (after the final norm, as T5CachedDecoder.last_hidden)."""
        return decoder(input_ids=input_ids, inputs_embeds=inputs_embeds, encoder_hidden_states=enc,
                       encoder_attention_mask=mask, use_cache=False).last_hidden_state

    def _logits(self, hidden: Tensor, t5=None) -> Tensor:
        t5 = t5 or self.t5
        if t5.config.scale_decoder_outputs:
            hidden = hidden * (t5.config.d_model**-0.5)
        return t5.lm_head(hidden)  # [B, T, V]

    def _target_repr(self, target_tokens: Tensor) -> Tensor:
        """t: mean of the target's token embeddings [B, m] -> [B, D]."""
        return self.t5.shared(target_tokens).mean(dim=1)

    def _direct_logprob(self, enc: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
        """log π_ref(y | x) of the direct decoder: sum over the m tokens [B, m] -> [B]."""
        logits = self._logits(self._decode(self.direct_decoder, enc, mask, input_ids=self._shift(tokens)))
        return token_logprobs(logits, tokens).sum(dim=1)

    def calculate_loss(self, interaction):
        if self.stage == "pt":
            return self.pretrain_loss(interaction)
        if self.stage == "sft":
            return self.sft_loss(interaction)
        return self.rl_loss(interaction)

    # --- stage 1 -------------------------------------------------------------------------------
    def pretrain_loss(self, interaction) -> Tensor:
        """Eq. 9-11 on the lengthened target, plus CE of the direct decoder on the target."""
        enc, mask = self._encode(interaction)
        target_item = interaction[self.POS_ITEM_ID]  # [B]
        target = self.item_tokens[target_item]  # [B, m]
        near = self.neighbors[target_item, : self.pt_neighbors]  # [B, n]
        labels = pretrain_targets(self.item_tokens[near], target)  # [B, (n+1)*m]
        logits = self._logits(self._decode(self.t5.decoder, enc, mask, input_ids=self._shift(labels)))
        loss = temperature_nll(logits, labels, self.pt_temperature)
        if self.pt_direct_weight:
            d_logits = self._logits(self._decode(self.direct_decoder, enc, mask, input_ids=self._shift(target)))
            loss = loss + self.pt_direct_weight * temperature_nll(d_logits, target)
        return loss

    # --- stage 2 -------------------------------------------------------------------------------
    def _keys(self, interaction) -> list[bytes]:
        """Exact content of each sample (history items, then the target) as compact bytes."""
        seqs = interaction[self.ITEM_SEQ].cpu().numpy().astype(np.int32)  # [B, L]
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy().astype(np.int32)
        return [seqs[i, :n].tobytes() + b"|" + targets[i].tobytes() for i, n in enumerate(lengths)]

    def clear_labels(self) -> None:
        self._labels, self._label_tokens = {}, None

    @torch.no_grad()
    def label_batch(self, interaction) -> Tensor:
        """Eq. 12-13 with the current model (eval mode): reasoning tokens [B, l]."""
        from recbole_ext.generation.t5_decoder import T5CachedDecoder, encode

        l = self.reasoning_len
        ids, mask = self.history_tokens(interaction)
        if l == 0:
            return ids.new_zeros(ids.shape[0], 0)
        was_training = self.training
        self.eval()
        try:
            enc, emask = encode(self.t5, ids, mask)
            dec = T5CachedDecoder(self.t5, enc, emask, l + 1)
            dec.step(ids.new_full((ids.shape[0], 1), self.vocab.bos))
            d0 = dec.last_hidden[:, 0]  # [B, D]

            def step(so_far: Tensor) -> Tensor:
                dec.step(so_far[:, -1:])
                return dec.last_hidden[:, 0]  # d_i [B, D]

            t = self._target_repr(self.target_tokens(interaction))  # [B, D]
            out = self.labeller(t.to(d0.dtype), d0, self.t5.shared.weight, step, l, allowed_ids=self.code_ids)
        finally:
            self.train(was_training)
        return out.tokens  # [B, l]

    @torch.no_grad()
    def collect_labels(self, batches) -> int:
        """Label every sample of ``batches`` (an iterable of interactions) with the current model."""
        keys: list[bytes] = []
        chunks: list[Tensor] = []
        for interaction in batches:
            interaction = interaction.to(self.item_tokens.device)
            chunks.append(self.label_batch(interaction).cpu())
            keys.extend(self._keys(interaction))
        tokens = torch.cat(chunks) if chunks else torch.zeros(0, self.reasoning_len, dtype=torch.long)
        self._labels = {k: i for i, k in enumerate(keys)}
        self._label_tokens = tokens
        return len(keys)

    def reasoning_labels(self, interaction) -> Tensor:
        """Collected labels of a batch [B, l]; samples never collected are labelled now."""
        b = interaction[self.POS_ITEM_ID].shape[0]
        device = self.item_tokens.device
        if self.reasoning_len == 0:
            return torch.zeros(b, 0, dtype=torch.long, device=device)
        rows = [self._labels.get(k, -1) for k in self._keys(interaction)] if self._labels else [-1] * b
        rows_t = torch.tensor(rows, dtype=torch.long)
        missing = rows_t < 0
        if not missing.any():
            return self._label_tokens[rows_t].to(device)
        if not self._warned_unlabelled:
            logger.warning("SFT batch with %d/%d samples without collected labels: labelling them now",
                           int(missing.sum()), b)
            self._warned_unlabelled = True
        fresh = self.label_batch(interaction)  # [B, l]
        if missing.all():
            return fresh
        known = self._label_tokens[rows_t.clamp(min=0)].to(device)
        return torch.where(missing.to(device)[:, None], fresh, known)

    def sft_loss(self, interaction, return_terms: bool = False):
        """Eq. 19 = L_SFT + λ L_DPO + μ L_Quant + δ L_State (see the module docstring)."""
        l = self.reasoning_len
        enc, mask = self._encode(interaction)  # [B, L, D]
        target_item = interaction[self.POS_ITEM_ID]
        target = self.item_tokens[target_item]  # [B, m]
        think = self.reasoning_labels(interaction)  # [B, l]
        labels = torch.cat([think, target], dim=1)  # [B, l+m] (Eq. 13)
        dec_in = self._shift(labels)  # [B, l+m]
        table = self.t5.shared.weight  # [V, D]
        terms: dict[str, Tensor] = {}
        lab = None
        if l > 0 and self.straight_through:
            h1 = self._decode(self.t5.decoder, enc, mask, input_ids=dec_in[:, : l + 1])  # [B, l+1, D]
            t = self._target_repr(target)
            lab = self.labeller.teacher_forced(t, h1, think, table)
            embeds = self.t5.shared(dec_in)  # [B, l+m, D]
            embeds = torch.cat([embeds[:, :1], lab.quantized_st, embeds[:, l + 1 :]], dim=1)
            hidden = self._decode(self.t5.decoder, enc, mask, inputs_embeds=embeds)
        else:
            hidden = self._decode(self.t5.decoder, enc, mask, input_ids=dec_in)  # [B, l+m, D]
            if l > 0:
                t = self._target_repr(target)
                lab = self.labeller.teacher_forced(t, hidden[:, : l + 1], think, table)
        logits = self._logits(hidden)  # [B, l+m, V]
        terms["sft"] = temperature_nll(logits, labels, self.sft_temperature)
        if lab is not None:
            if self.quant_weight:
                terms["quant"] = quantization_loss(lab.residuals, lab.quantized, self.quant_beta)
            if self.state_weight:
                terms["state"] = state_target_infonce(
                    lab.states, t, self.state_schedule, self.state_temperature, normalize=self.state_normalize)
            if self.dpo_weight:
                terms["dpo"] = self._dpo_term(enc, mask, target_item, target, logits, hidden, lab, dec_in)
        loss = sft_objective(terms["sft"], terms.get("dpo"), terms.get("quant"), terms.get("state"),
                             self.dpo_weight, self.quant_weight, self.state_weight)
        if self.training:
            self.sft_steps += 1
            for name, value in terms.items():  # tensors: no host sync per step
                self.sft_sums[name] = self.sft_sums.get(name, 0.0) + value.detach().float()
        return (loss, terms) if return_terms else loss

    def reset_sft_stats(self) -> None:
        self.sft_sums: dict[str, Tensor] = {}
        self.sft_steps = 0

    def sft_stats(self) -> dict[str, float]:
        """Mean of each Eq. 19 term (unweighted) since the last reset."""
        return {f"loss_{k}": round(float(v) / max(1, self.sft_steps), 5) for k, v in self.sft_sums.items()}

    def _dpo_term(self, enc, mask, target_item, target, logits, hidden, lab, dec_in) -> Tensor:
        """Eq. 16-18: target vs a similar item, both after the sample's reasoning tokens."""
        l, b = self.reasoning_len, target.shape[0]
        pool = max(1, min(self.dpo_neg_pool, self.neighbors.shape[1]))
        pick = torch.randint(0, pool, (b,), device=target.device)
        neg_item = self.neighbors[target_item].gather(1, pick[:, None]).squeeze(1)  # [B]
        neg = self.item_tokens[neg_item]  # [B, m]
        pos_lp = token_logprobs(logits[:, l:], target).sum(dim=1)  # [B]
        neg_in = torch.cat([dec_in[:, : l + 1], neg[:, :-1]], dim=1)  # [bos, o_1..o_l, c-_1..c-_{m-1}]
        embeds = self.t5.shared(neg_in)
        if self.straight_through:
            embeds = torch.cat([embeds[:, :1], lab.quantized_st, embeds[:, l + 1 :]], dim=1)
        neg_logits = self._logits(self._decode(self.t5.decoder, enc, mask, inputs_embeds=embeds)[:, l:])
        neg_lp = token_logprobs(neg_logits, neg).sum(dim=1)  # [B]
        with torch.no_grad():
            ref_pos = self._direct_logprob(enc, mask, target)
            ref_neg = self._direct_logprob(enc, mask, neg)
        return dpo_loss(pos_lp, neg_lp, ref_pos, ref_neg, beta=self.dpo_beta)

    # --- stage 3 -------------------------------------------------------------------------------
    def reset_rl_stats(self) -> None:
        self.rl_stats: dict[str, float] = {}
        self.rl_steps = 0

    def _position_mask(self, length: int, device) -> Tensor:
        """Additive mask [T, V]: position < l may take any code token, position l+d level d's codes."""
        l = self.reasoning_len
        mask = torch.full((length, self.vocab.vocab_size), float("-inf"), device=device)
        lo, hi = self.vocab.code_range()
        mask[:l, lo:hi] = 0.0
        for d in range(self.m):
            a, b = self.vocab.level_range(d)
            mask[l + d, a:b] = 0.0
        return mask

    @torch.no_grad()
    def sample_rollouts(self, enc: Tensor, emask: Tensor, group: int) -> Tensor:
        """G sampled sequences per user [B, G, l+m]: reasoning, then per-level target tokens."""
        from recbole_ext.generation.t5_decoder import T5CachedDecoder

        l, b = self.reasoning_len, enc.shape[0]
        length = l + self.m
        dec = T5CachedDecoder(self.t5, enc, emask, length)
        allowed = self._position_mask(length, enc.device)  # [T, V]
        trie = self.trie(enc.device)
        node = torch.zeros(b, group, dtype=torch.long, device=enc.device)  # trie root
        cur = torch.full((b, group), self.vocab.bos, dtype=torch.long, device=enc.device)
        out = []
        for pos in range(length):
            logp = dec.step(cur) + allowed[pos]  # [B, G, V]
            d = pos - l
            if self.rl_constrained and d >= 0:
                self._mask_off_trie(logp, trie, d, node)
            probs = torch.softmax(logp / self.rl_temperature, dim=-1)
            cur = torch.multinomial(probs.reshape(b * group, -1), 1).view(b, group)
            if d >= 0:
                node = trie.advance(d, node, cur - self.vocab.level_range(d)[0])
            out.append(cur)
        return torch.stack(out, dim=-1)  # [B, G, l+m]

    def rollout_mask(self, tokens: Tensor) -> Tensor:
        """Additive mask [N, T, V] defining the rollout policy at each position of ``tokens`` [N, T]:
        the position's token range, plus (``rl_constrained_rollout``) the trie below the prefix."""
        n, length = tokens.shape
        mask = self._position_mask(length, tokens.device).expand(n, -1, -1).clone()  # [N, T, V]
        if self.rl_constrained:
            l, trie = self.reasoning_len, self.trie(tokens.device)
            codes = self.vocab.decode(tokens[:, l:])  # [N, m]
            node = torch.zeros(n, dtype=torch.long, device=tokens.device)
            for d in range(self.m):
                self._mask_off_trie(mask[:, l + d], trie, d, node)
                node = trie.advance(d, node, codes[:, d])
        return mask

    def _mask_off_trie(self, scores: Tensor, trie, d: int, node: Tensor) -> None:
        """In place: -inf on the level-d codes of ``scores`` [..., V] that are no child of ``node`` [...]."""
        lo_d, hi_d = self.vocab.level_range(d)
        ok = trie.children(d, node) >= 0  # [..., K_d]
        scores[..., lo_d:hi_d] = scores[..., lo_d:hi_d].masked_fill(~ok, float("-inf"))

    @torch.no_grad()
    def score_after_thinking(self, t5, enc: Tensor, emask: Tensor, think: Tensor, cand: Tensor) -> Tensor:
        """log p(item | think, s_u), summed over the item's m tokens (full softmax), for C candidate
        items per rollout: think [B, G, l], cand tokens [B, G, C, m] -> [B, G, C]. The reasoning
        prefix is decoded once per rollout and forked into its C candidates (shared caches)."""
        from recbole_ext.generation.t5_decoder import T5CachedDecoder

        b, g, c, m = cand.shape
        dec = T5CachedDecoder(t5, enc, emask, think.shape[-1] + m)
        logp = dec.step(torch.full((b, g), self.vocab.bos, dtype=torch.long, device=enc.device))
        for i in range(think.shape[-1]):
            logp = dec.step(think[..., i])  # [B, G, V]
        dec.reorder(torch.arange(g, device=enc.device).repeat_interleave(c)[None].expand(b, -1))
        flat = cand.reshape(b, g * c, m)
        logp = logp.repeat_interleave(c, dim=1)  # [B, G*C, V]
        score = logp.gather(-1, flat[..., :1]).squeeze(-1)  # [B, G*C]
        for d in range(1, m):
            logp = dec.step(flat[..., d - 1])
            score = score + logp.gather(-1, flat[..., d : d + 1]).squeeze(-1)
        return score.view(b, g, c)

    def _policy_logprobs(self, t5, enc: Tensor, mask: Tensor, tokens: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced token log-probs of rollouts under the restricted policy and hidden states:
        enc [N, L, D], tokens [N, T] -> ([N, T], [N, T, D])."""
        hidden = self._decode(t5.decoder, enc, mask, input_ids=self._shift(tokens))
        logits = self._logits(hidden, t5) + allowed  # allowed: rollout_mask(tokens) [N, T, V]
        return token_logprobs(logits, tokens, self.rl_temperature), hidden

    @torch.no_grad()
    def _build_rollouts(self, interaction) -> dict:
        """Rollouts, rewards (Eq. 21-27), advantages and old/reference log-probs of one batch."""
        from recbole_ext.generation.t5_decoder import encode

        l, m, g = self.reasoning_len, self.m, self.rl_group
        ids, mask = self.history_tokens(interaction)
        b = ids.shape[0]
        target_item = interaction[self.POS_ITEM_ID]
        target = self.item_tokens[target_item]  # [B, m]
        enc0, emask0 = encode(self.t5, ids, mask)
        rollouts = self.sample_rollouts(enc0, emask0, g)  # [B, G, l+m]
        tokens = rollouts.reshape(b * g, l + m)  # [N, T], prompt-major
        allowed = self.rollout_mask(tokens)  # [N, T, V]
        enc_full = self.t5.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        old_lp, hidden = self._policy_logprobs(self.t5, enc_full.repeat_interleave(g, 0),
                                               mask.repeat_interleave(g, 0), tokens, allowed)
        if self._ref_t5 is None:
            self.snapshot_reference()
        ref = self._ref_t5
        ref_enc = ref.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        ref_lp, _ = self._policy_logprobs(ref, ref_enc.repeat_interleave(g, 0), mask.repeat_interleave(g, 0), tokens,
                                          allowed)

        w = self.reward_weights
        comps: dict[str, Tensor] = {}
        gen_codes = self.vocab.decode(tokens[:, l:])  # [N, m]
        tgt_codes = self.item_codes[target_item].repeat_interleave(g, 0)  # [N, m]
        if w["format"]:
            valid = self.trie(tokens.device).lookup(gen_codes) >= 0
            comps["format"] = format_reward(valid)
        if w["prefix_match"]:
            comps["prefix_match"] = prefix_match_reward(gen_codes, tgt_codes)
        if w["similarity"]:
            t = self._target_repr(target).repeat_interleave(g, 0)  # [N, D]
            comps["similarity"] = similarity_reward(mean_pool(hidden), t, self.rl_similarity)
        if w["think_likelihood"] or w["think_ranking"]:
            k = self.rl_negatives if w["think_ranking"] else 0
            cand_items = torch.cat([target_item[:, None], self.neighbors[target_item, :k]], dim=1)  # [B, 1+K]
            cand = self.item_tokens[cand_items][:, None].expand(b, g, k + 1, m)
            scores = self.score_after_thinking(self.t5, enc0, emask0, rollouts[..., :l], cand)  # [B, G, 1+K]
            pos = scores[..., 0].reshape(-1)  # [N]
            if w["think_likelihood"]:
                ref_direct = self._direct_logprob(enc_full, mask, target).repeat_interleave(g, 0)  # [N]
                comps["think_likelihood"] = thinking_likelihood_reward(pos, ref_direct, self.rl_likelihood_clip)
            if w["think_ranking"] and k > 0:
                comps["think_ranking"] = thinking_ranking_reward(pos, scores[..., 1:].reshape(b * g, k))
        total, weighted = combine_rewards(comps, {n: w[n] for n in comps})
        adv = group_advantages(total.view(b, g))  # [B, G]
        stats = {f"reward_{n}": float(v.mean()) for n, v in weighted.items()}
        stats["reward_total"] = float(total.mean())
        stats["valid_rate"] = float((self.trie(tokens.device).lookup(gen_codes) >= 0).float().mean())
        return {"tokens": tokens, "allowed": allowed, "old": old_lp, "ref": ref_lp, "adv": adv.reshape(-1),
                "stats": stats}

    def rl_stats_mean(self) -> dict[str, float]:
        """Mean of the rewards and GRPO statistics since the last reset."""
        return {k: round(v / max(1, self.rl_steps), 5) for k, v in self.rl_stats.items()}

    def rl_loss(self, interaction) -> Tensor:
        """Eq. 20 on G rollouts per sample (negated, to minimise)."""
        if self._rollouts is None or self._rollout_uses >= max(1, self.rl_updates):
            self._rollouts = self._build_rollouts(interaction)
            self._rollout_uses = 0
        r = self._rollouts
        self._rollout_uses += 1
        g = self.rl_group
        enc, mask = self._encode(interaction)
        new_lp, _ = self._policy_logprobs(self.t5, enc.repeat_interleave(g, 0), mask.repeat_interleave(g, 0),
                                          r["tokens"], r["allowed"])
        out = grpo_loss(new_lp, r["old"], r["ref"], r["adv"], clip_eps=self.rl_clip_eps, beta=self.rl_kl_beta,
                        kl_estimator=self.rl_kl_estimator, level=self.rl_level)
        stats = dict(r["stats"], kl=float(out.kl), clip_fraction=float(out.clip_fraction),
                     ratio=float(out.ratio_mean))
        self.rl_steps += 1
        for key, value in stats.items():
            self.rl_stats[key] = self.rl_stats.get(key, 0.0) + value
        return out.loss
