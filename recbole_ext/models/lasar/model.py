"""LASAR: latent adaptive semantic-aligned reasoning for semantic-ID generation (SFT then RL).

Source: the abstract of arXiv 2605.10207 (``../shared/seeds/003_*.txt``) and
``../shared/docs/methods.md``; no public code, so every choice the abstract leaves open is a
documented key of ``properties/model/LASAR.yaml``. The backbone, IDs, trie and decoding are the
shared :class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq`; the vocabulary adds text tokens
learned from the dataset's item text (:mod:`recbole_ext.text_vocab`, HF ``tokenizers``) after the
code tokens. Stages (:mod:`recbole_ext.models.lasar.stages`, run by the StagedTrainer):

1. ``ground`` - SID grounding: history -> next SID, title -> SID, SID -> title (multi-task CE),
   decoded with no reasoning. The abstract's claim that mixing this with stage 2 converges worse
   is testable: ``--stages=reason,rl --reason_ground_weight=1`` trains both at once.
2. ``reason`` - latent reasoning: after the history the decoder takes k continuous steps: the
   input at step j is z_j = h_{j-1} + e_j, h_{j-1} the decoder's last hidden state at the previous
   position (after the final norm), e_j a learned step embedding; no token is sampled. Then the
   SID under the trie. Each training sample also gets explicit CoT text from the deterministic
   rationale generator (:mod:`recbole_ext.rationale`: history items' text, the target's category
   and text, training co-occurrence counts), decoded teacher-forced after the history (its CE,
   ``reason_cot_weight``, trains the text path: with a T5 trained from scratch the anchors mean
   nothing without it; not in the abstract). The decoder outputs at the end of each CoT sentence
   are the anchors (stop-gradient); latent output o_j is tied to anchor j by KL(p||q) + KL(q||p) of
   the output head's distributions (:func:`~recbole_ext.rl.alignment.bidirectional_kl`), the last
   latent step always to the last anchor. The number of sentences (<= ``max_depth``) is the depth
   label: training decodes at that depth, and the Policy Head (an MLP on the mean encoder state,
   detached: it does not move the encoder) learns it with CE.
3. ``rl`` - GRPO on the SID tokens with terminal-only KL alignment and REINFORCE on the Policy Head
   (:mod:`recbole_ext.models.lasar.rl`).

Batches mix depths by left padding (:mod:`recbole_ext.generation.latent`): a row with k steps
among rows of at most K starts with K - k masked positions, so every row reaches its SID at the
same position (exact under T5's relative positions). Inference reads nothing of the target: the
depth comes from the Policy Head (or ``fixed_depth``), the CoT exists only in training.
``test_decoding`` decodes the test set with the same weights as latent (the method), explicit
(greedy CoT text, then the SID) or none (k = 0), for the efficiency comparison.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_ext.models.item_text import text_prefix, text_then_sid_pass
from recbole_ext.models.lasar.stages import (
    GroundConfig,
    GroundStage,
    LASARRLConfig,
    LASARSettings,
    ReasonConfig,
    ReasonStage,
)
from recbole_ext.models.sid_base import SIDGenerativeRecommender
from recbole_ext.rl.alignment import anchor_index, bidirectional_kl
from recbole_ext.rl.grpo import token_logprobs
from recbole_ext.trainers.grpo_stage import GRPOConfig
from recbole_ext.trainers.stages import Stage, StageSchedule, read_config

logger = logging.getLogger(__name__)


class LASAR(SIDGenerativeRecommender):
    """SID T5 with a text vocabulary, latent reasoning steps and a depth Policy Head."""

    #: keys that change only the test decoding: a cached stage is reused and tested with them
    TEST_ONLY_KEYS = frozenset({"test_decoding", "compare_decodings", "explicit_max_tokens"})

    def extra_vocab_size(self, config, dataset) -> int:
        """Train (or load) the text vocabulary and the rationale generator; their size."""
        from recbole_ext.models.item_text import ItemText, TextSettings

        self.settings = read_config(LASARSettings, config)
        self.text = ItemText(config, dataset, read_config(TextSettings, config), self.ITEM_SEQ, self.ITEM_SEQ_LEN,
                             self.ITEM_ID)
        return self.text.size

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # the T5 first: the same initial weights as TIGER for a seed
        s = self.settings
        self.ground = read_config(GroundConfig, config, "ground_")
        self.reason = read_config(ReasonConfig, config, "reason_")
        self.grpo = read_config(GRPOConfig, config, "rl_")
        self.rl = read_config(LASARRLConfig, config, "rl_")
        self.m = self.vocab.n_levels
        d = int(config["d_model"])
        with torch.random.fork_rng(devices=[]):  # the extra modules do not shift the global RNG
            torch.manual_seed(int(config["seed"]) + 1)
            self.step_embedding = nn.Embedding(max(1, s.max_depth), d)  # e_j, row j-1 for step j
            nn.init.normal_(self.step_embedding.weight, std=0.02)
            self.policy_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, s.max_depth + 1))
        self.register_buffer("title_tokens", self.text.titles(self.vocab.extra_offset, self.vocab.pad),
                             persistent=False)  # [n_items, T_title]
        self.reasoning_decode = "joint"
        self.evaluating_test = False  # set by the StagedTrainer while it tests
        self.test_variant: str | None = None  # set by the StagedTrainer for each of compare_decodings

    def build_stages(self, config) -> list[Stage]:
        from recbole_ext.models.lasar.rl import LASARRLStage

        return [
            GroundStage(self.ground, StageSchedule.read(config, "ground_")),
            ReasonStage(self.reason, StageSchedule.read(config, "reason_")),
            LASARRLStage(self.grpo, StageSchedule.read(config, "rl_"), self.rl),
        ]

    def calculate_loss(self, interaction):
        raise TypeError("LASAR trains in stages: use the StagedTrainer (the registry's trainer for LASAR)")

    # --- shared pieces -------------------------------------------------------------------------
    def _encode(self, interaction) -> tuple[Tensor, Tensor]:
        ids, mask = self.history_tokens(interaction)  # [B, L]
        return self.seq2seq.encode(ids, mask), mask  # [B, L, D]

    def depth_logits(self, enc: Tensor, mask: Tensor) -> Tensor:
        """Policy Head: [B, L, D] encoder states -> [B, max_depth + 1] logits over k (encoder detached)."""
        w = mask.to(enc.dtype)[..., None]  # [B, L, 1]
        pooled = (enc.detach() * w).sum(1) / w.sum(1).clamp(min=1.0)  # [B, D]
        return self.policy_head(pooled.float())

    def choose_depth(self, enc: Tensor, mask: Tensor) -> Tensor:
        """k per user [B]: the Policy Head's most likely depth, or ``fixed_depth``."""
        if self.settings.depth_mode == "fixed":
            return torch.full((enc.shape[0],), self.settings.fixed_depth, dtype=torch.long, device=enc.device)
        return self.depth_logits(enc, mask).argmax(dim=-1)

    def depth_labels(self, n_sentences: Tensor) -> Tensor:
        """The depth a training sample is decoded at and the Policy Head learns: its number of CoT
        sentences, at most ``max_depth`` (``fixed_depth`` in the fixed ablation)."""
        if self.settings.depth_mode == "fixed":
            return torch.full_like(n_sentences, self.settings.fixed_depth)
        return n_sentences.clamp(max=self.settings.max_depth)

    def latent_prefix(self, enc: Tensor, mask: Tensor, depth: Tensor, modules=None) -> tuple[Tensor, Tensor]:
        """Teacher-side latent loop (with gradient): decoder inputs [B, K+1, D] =
        ``[pad x (K - k_b), bos, z_1..z_k_b]`` and their mask [B, K+1] (K = max depth in the batch).
        ``modules``: a {"t5", "step"} pair (default: this model's; the RL reference passes its copy)."""
        t5 = modules["t5"] if modules is not None else self.seq2seq.t5
        step = modules["step"] if modules is not None else self.step_embedding
        b = depth.shape[0]
        k_max = int(depth.max()) if b else 0
        start = k_max - depth  # [B] position of each row's bos
        bos = t5.shared.weight[self.vocab.bos].expand(b, -1)  # [B, D]
        cols = [bos]
        positions = torch.arange(k_max + 1, device=depth.device)
        for t in range(1, k_max + 1):
            prefix = torch.stack(cols, dim=1)  # [B, t, D]
            real = (positions[:t][None, :] >= start[:, None]).long()  # [B, t]
            h = self.seq2seq.decode(enc, mask, inputs_embeds=prefix, decoder=t5.decoder, self_mask=real)[:, -1]
            j = (t - start - 1).clamp(min=0, max=step.num_embeddings - 1)  # [B] 0-based step index
            z = h + step(j)  # [B, D]
            cols.append(torch.where((t > start)[:, None], z, bos))
        real = positions[None, :] >= start[:, None]  # [B, K+1]
        return torch.stack(cols, dim=1), real

    def decode_after_latent(self, enc: Tensor, mask: Tensor, depth: Tensor, labels: Tensor,
                            modules=None) -> tuple[Tensor, int]:
        """Decoder states [B, K + T, D] of ``[latent prefix, labels[:, :-1]]`` (teacher forced) and K:
        columns K..K+T-1 predict ``labels`` [B, T]; columns 1..K hold the latent outputs o_j,
        right-aligned (row b's step j at column K - k_b + j)."""
        t5 = modules["t5"] if modules is not None else self.seq2seq.t5
        prefix, real = self.latent_prefix(enc, mask, depth, modules)
        k_max = prefix.shape[1] - 1
        embeds = torch.cat([prefix, t5.shared(labels[:, :-1])], dim=1)  # [B, K+T, D]
        self_mask = torch.cat([real, real.new_ones(labels.shape[0], labels.shape[1] - 1)], dim=1).long()
        return self.seq2seq.decode(enc, mask, inputs_embeds=embeds, decoder=t5.decoder, self_mask=self_mask), k_max

    def rationale_tokens(self, interaction) -> tuple[Tensor, Tensor, Tensor]:
        """The training sample's CoT: tokens [B, T] (right-padded), sentence ends [B, S], n [B]."""
        return self.text.rationale_tokens(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                          interaction[self.POS_ITEM_ID], self.vocab.extra_offset, self.vocab.pad)

    def cot_pass(self, enc: Tensor, mask: Tensor, cot: Tensor, ends: Tensor, target: Tensor,
                 with_loss: bool = True) -> tuple[Tensor | None, Tensor]:
        """Teacher-forced ``[bos, CoT, SID]`` -> (its mean token CE, or None without ``with_loss``;
        the anchors [B, S, D]: decoder outputs at each sentence's end, detached)."""
        return text_then_sid_pass(self.seq2seq, enc, mask, cot, ends, target, with_loss)

    # --- stage 1 -------------------------------------------------------------------------------
    def grounding_loss(self, interaction, cfg: GroundConfig) -> tuple[Tensor, dict[str, Tensor]]:
        """history -> SID + title -> SID + SID -> title (each a mean token CE), weighted."""
        s2s, pad = self.seq2seq, self.vocab.pad
        terms: dict[str, Tensor] = {}
        if cfg.rec_weight:
            ids, mask = self.history_tokens(interaction)
            terms["rec"] = s2s.lm_loss(ids, mask, self.target_tokens(interaction))
        n = max(1, round(cfg.item_ratio * interaction[self.ITEM_SEQ].shape[0]))
        items = torch.randint(1, self.n_items, (n,), device=s2s.item_tokens.device)  # [n]
        titles = self.title_tokens[items]  # [n, T]
        items, titles = items[(titles != pad).any(1)], titles[(titles != pad).any(1)]
        if items.numel() and cfg.title_to_sid_weight:
            terms["title_to_sid"] = s2s.lm_loss(titles, (titles != pad).long(), s2s.item_tokens[items])
        if items.numel() and cfg.sid_to_title_weight:
            sid = s2s.item_tokens[items]  # [n, m]
            labels = torch.cat([titles, titles.new_full((titles.shape[0], 1), pad)], dim=1)
            labels = labels.scatter(1, (labels != pad).sum(1, keepdim=True), self.vocab.eos)  # EOS after the title
            terms["sid_to_title"] = s2s.lm_loss(sid, torch.ones_like(sid), labels.masked_fill(labels == pad, -100))
        weights = {"rec": cfg.rec_weight, "title_to_sid": cfg.title_to_sid_weight,
                   "sid_to_title": cfg.sid_to_title_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss, terms

    # --- stage 2 -------------------------------------------------------------------------------
    def reasoning_loss(self, interaction, cfg: ReasonConfig) -> tuple[Tensor, dict[str, Tensor]]:
        """SID CE after the latent steps + CoT CE + step-wise bidirectional KL to the anchors +
        Policy Head CE (+ grounding replay, ``reason_ground_weight``)."""
        s2s = self.seq2seq
        enc, mask = self._encode(interaction)  # [B, L, D]
        target = self.target_tokens(interaction)  # [B, m]
        cot, ends, n_sent = self.rationale_tokens(interaction)
        label = self.depth_labels(n_sent)  # [B]
        terms: dict[str, Tensor] = {}
        anchors = None
        if cfg.cot_weight or cfg.align_weight:
            cot_loss, anchors = self.cot_pass(enc, mask, cot, ends, target, with_loss=bool(cfg.cot_weight))
            if cfg.cot_weight:
                terms["cot"] = cot_loss
        hidden, k_max = self.decode_after_latent(enc, mask, label, target)
        logits = s2s.logits(hidden[:, k_max:])  # [B, m, V]
        terms["rec"] = -token_logprobs(logits, target).mean()
        if cfg.align_weight and k_max > 0:
            terms["align"] = self.alignment(hidden[:, 1 : k_max + 1], anchors, label, n_sent)
        if cfg.depth_weight and self.settings.depth_mode == "policy":
            terms["depth_ce"] = F.cross_entropy(self.depth_logits(enc, mask), label)
        if cfg.ground_weight:
            terms["ground"] = self.grounding_loss(interaction, self.ground)[0]
        weights = {"rec": 1.0, "cot": cfg.cot_weight, "align": cfg.align_weight, "depth_ce": cfg.depth_weight,
                   "ground": cfg.ground_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        terms["depth_mean"] = label.float().mean()
        return loss, terms

    def alignment(self, latent: Tensor, anchors: Tensor, depth: Tensor, n_sent: Tensor) -> Tensor:
        """Mean bidirectional KL between latent outputs [B, K, D] (right-aligned) and their anchors
        [B, S, D] (:func:`~recbole_ext.rl.alignment.anchor_index`: step j to anchor j, the last step to
        the last anchor)."""
        keep, index = anchor_index(latent.shape[1], depth, n_sent)  # [B, K] each
        if not bool(keep.any()):
            return latent.sum() * 0.0
        target = anchors.gather(1, index[..., None].expand(-1, -1, anchors.shape[-1]))  # [B, K, D]
        s2s = self.seq2seq
        return bidirectional_kl(s2s.logits(latent[keep]), s2s.logits(target[keep]).detach()).mean()

    # --- decoding ------------------------------------------------------------------------------
    def reset_decode_stats(self) -> None:
        super().reset_decode_stats()
        self.depth_counts = torch.zeros(self.settings.max_depth + 1, dtype=torch.long)
        self.cot_tokens = 0
        self.decode_mode = None

    def test_variants(self, stage: Stage) -> list[str]:
        """Decodings the trainer also tests a reasoning stage with (``compare_decodings``), on the same users."""
        if stage.decode_free_steps(self) == 0:
            return []
        return [d for d in self.settings.compare_decodings if d != self.settings.test_decoding]

    def generate(self, interaction, prefix=None, free_steps: int = 0, free_range=None):
        """``free_steps`` = 0: plain SID beam search (grounding); > 0: latent reasoning (validation),
        or the test decoding ``test_decoding`` while the trainer tests."""
        if free_steps == 0:
            return super().generate(interaction, prefix=prefix)
        from recbole_ext.generation.beam_search import beam_search
        from recbole_ext.generation.latent import PrefixedDecoder, latent_prefix_steps, token_prefix_steps
        from recbole_ext.generation.t5_decoder import T5CachedDecoder

        s2s, t5 = self.seq2seq, self.seq2seq.t5
        ids, mask = self.history_tokens(interaction)
        enc, dmask = s2s.encode_for_decoding(ids, mask)
        mode = (self.test_variant or self.settings.test_decoding) if self.evaluating_test else "latent"
        self.decode_mode = mode
        if mode == "explicit":
            tokens, real = text_prefix(s2s, enc, dmask, self.settings.explicit_max_tokens)  # [B, P]
            self.cot_tokens += int(real.sum()) - tokens.shape[0]  # generated text tokens (bos excluded)
            dec = T5CachedDecoder(t5, enc, dmask, tokens.shape[1] + self.m)

            def first(log_probs: bool) -> Tensor:
                return token_prefix_steps(dec, t5.shared, tokens, real, log_probs)
        else:
            depth = torch.zeros(enc.shape[0], dtype=torch.long, device=enc.device) if mode == "none" \
                else self.choose_depth(enc, dmask)
            self.depth_counts += torch.bincount(depth.cpu(), minlength=self.settings.max_depth + 1)
            dec = T5CachedDecoder(t5, enc, dmask, int(depth.max()) + 1 + self.m)
            bos = t5.shared.weight[self.vocab.bos]

            def first(log_probs: bool) -> Tensor:
                return latent_prefix_steps(dec, bos, self.step_embedding.weight, depth, log_probs)[0]
        return beam_search(PrefixedDecoder(dec, first), s2s.trie(enc.device), self.vocab, enc.shape[0],
                           self.num_beams, enc.device, constrain=self.constrained)

    def record_extra(self) -> dict:
        extra = super().record_extra()
        counts = self.depth_counts.tolist()
        users = max(1, sum(counts))
        extra.update(
            test_decoding=self.decode_mode or "sid",
            depth_mode=self.settings.depth_mode,
            max_depth=self.settings.max_depth,
            depth_histogram=counts,
            mean_depth=round(sum(k * c for k, c in enumerate(counts)) / users, 4),
            text_vocab_size=self.text.size,
            text_vocab_sha256=self.text.vocab.digest,
        )
        if self.decode_mode == "explicit":
            extra["mean_cot_tokens"] = round(self.cot_tokens / max(1, self.decode_users), 3)
        # the efficiency table's "reasoning steps": latent steps, or generated CoT tokens when explicit
        extra["mean_reasoning_steps"] = extra["mean_cot_tokens"] if self.decode_mode == "explicit" \
            else extra["mean_depth"]
        return extra

    # --- stage 3 helpers (used by recbole_ext.models.lasar.rl) -----------------------------------
    def freeze_reference(self) -> nn.ModuleDict:
        """A frozen copy of the T5 and the step embeddings: the RL reference policy."""
        pair = copy.deepcopy(nn.ModuleDict({"t5": self.seq2seq.t5, "step": self.step_embedding}))
        return pair.eval().requires_grad_(False)

    def sid_logprobs(self, enc: Tensor, mask: Tensor, depth: Tensor, tokens: Tensor, allowed: Tensor,
                     temperature: float = 1.0, modules=None) -> tuple[Tensor, Tensor]:
        """log p of the SID tokens [N, m] after ``depth`` [N] latent steps, under the restricted policy
        ``allowed`` [N, m, V], and the last latent output [N, D] (the SID's first decoder state
        when k = 0)."""
        hidden, k_max = self.decode_after_latent(enc, mask, depth, tokens, modules)
        t5 = modules["t5"] if modules is not None else None
        logits = self.seq2seq.logits(hidden[:, k_max:], t5) + allowed
        return token_logprobs(logits, tokens, temperature), hidden[:, k_max]
