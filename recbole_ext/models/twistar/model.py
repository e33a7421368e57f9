"""TwiSTAR: a planner routes each user to fast retrieval, light ranking or slow reasoning.

Source: arXiv 2605.11553 (summary ``../shared/seeds/000_*.txt``, ``../shared/docs/methods.md``) and
the partial official code (github.com/cst20/TwiSTAR: tools and warm-up labels, no planner trainer).
Every choice the sources leave open is a documented key of ``properties/model/TwiSTAR.yaml``.

Tools (:mod:`recbole_ext.models.twistar.routing`: FAST, RANK, SLOW):

* **Fast SID Retriever** = ``self.seq2seq``, the shared :class:`~recbole_ext.modules.sid_seq2seq.SIDSeq2Seq`
  trained with TIGER's own loss (:meth:`recbole_ext.models.tiger.TIGER.calculate_loss`, called on
  the training rows that are not held out). Beam search with ``twistar_fast_beams`` beams gives the
  candidates and their length-normalised scores (summed log-probs / m), the planner's features.
* **Lightweight Candidate Ranker** (:class:`~recbole_ext.models.twistar.ranker.DINRanker`): re-scores
  the fast list; trained on the trained fast model's own lists of held-out rows (target vs the
  others, a missed target injected in training only with its fast score computed as the beams').
* **Slow Reasoning Model** = ``self.slow``, a second SIDSeq2Seq over the same IDs whose vocabulary
  adds text tokens (:class:`~recbole_ext.models.item_text.ItemText`); input: history SIDs plus
  collaborative sentences from Swing over the training sequences
  (:mod:`recbole_ext.models.twistar.knowledge`); output: a justification (the rationale generator's
  sentences) then the SID (:mod:`recbole_ext.models.twistar.slow`); SFT with self-filtering, then
  GRPO with a prefix-ladder reward (:mod:`recbole_ext.models.twistar.rl`).
* **Planner** (:class:`~recbole_ext.models.twistar.planner.Planner`): an MLP over cheap features
  (:func:`~recbole_ext.models.twistar.features.planner_features`); warm-up CE on the oracle labels,
  then REINFORCE on NDCG@10 - beta * cost[tool], cost = each tool's latency per user measured on
  held-out rows when the planner stage begins (``tool_cost``, a buffer: it travels with the weights).

Held-out training prefixes: a fixed share (``twistar_holdout_ratio``) of the training rows, picked by
a hash of the row's content (user id, visible history, target: :func:`~recbole_ext.models.twistar.holdout.holdout_rows`, the same for every
seed), is never used
to train the fast model (nor the slow one); the ranker's and the planner's labels come from those
rows only, never from validation or test targets. The ranker is trained on the same rows the
planner's RL reward later scores, so its NDCG there is in-sample (a documented simplification). The
Swing neighbours behind the collaborative sentences come from the training sequences with the held-out
rows' targets taken out, so a held-out row's sentences never draw on its own target (as a test user's
never draw on its test target).

Evaluation (:meth:`TwiSTAR.full_sort_predict`): per stage (``route_mode``, set by the stage) always
fast / fast+rank / slow, or routed: the fast beam search for every user (the features), the planner
picks one tool per user, that tool's list is the ranking. The target is read only afterwards, for
the record: planner/oracle agreement and, while testing with ``twistar_compare_fixed``, the three
fixed strategies on the same users (their HR/NDCG@5/10 and latency), computed by separate calls
that never feed the served scores.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from recbole_ext.generation import beams_to_scores
from recbole_ext.models.sid_base import SIDGenerativeRecommender
from recbole_ext.models.twistar.holdout import holdout_rows, row_hash
from recbole_ext.models.twistar.planner import PlannerTable
from recbole_ext.models.twistar.stages import (
    ROUTE_MODES,
    FastConfig,
    FastStage,
    PlannerRLConfig,
    PlannerRLStage,
    PlannerWarmupConfig,
    PlannerWarmupStage,
    RankerConfig,
    RankerStage,
    SlowRLConfig,
    SlowSFTConfig,
    SlowSFTStage,
    TwiSTARSettings,
)
from recbole_ext.trainers.stages import Stage, StageSchedule, read_config

logger = logging.getLogger(__name__)

#: top-k of the fixed strategies' metrics in the record (the protocol's)
RECORD_TOPK = (5, 10)


class TwiSTAR(SIDGenerativeRecommender):
    """Fast SID retriever (TIGER), DIN ranker, slow text-then-SID reasoner and a planner; see the module docstring."""

    supports_target_eos = True  # the fast tool is TIGER
    #: keys that change only the test pass: a cached stage is reused and tested with them
    TEST_ONLY_KEYS = frozenset({"twistar_compare_fixed"})
    #: bumped when the code changes what a TwiSTAR stage trains (the stage cache's key): 1 = hold-out rows
    #: by row content (before: by user and capped history length); 2 = Swing without the held-out targets
    STAGE_CACHE_REVISION = 2
    #: read by the runner: ``--nproc``/torchrun refuse TwiSTAR with this reason. Each rank would build the
    #: planner table from its own shard of the held-out rows (different sizes: the per-step gradient
    #: all-reduce would fall out of step; different scalers and tool costs per rank).
    DATA_PARALLEL_UNSUPPORTED = "its planner table, scaler and tool costs would be built per rank from that rank's rows"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # the fast T5 first: the same initial weights as TIGER for a seed
        from recbole_ext.models.item_text import ItemText, TextSettings
        from recbole_ext.models.twistar.knowledge import CollaborativeKnowledge, swing_neighbours
        from recbole_ext.models.twistar.planner import Planner
        from recbole_ext.models.twistar.ranker import DINRanker
        from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq, backbone_settings

        s = self.settings = read_config(TwiSTARSettings, config, "twistar_")
        self.fast_cfg = read_config(FastConfig, config, "fast_")
        self.ranker_cfg = read_config(RankerConfig, config, "ranker_")
        self.slow_sft_cfg = read_config(SlowSFTConfig, config, "slow_sft_")
        self.slow_rl_cfg = read_config(SlowRLConfig, config, "slow_rl_")
        self.planner_warmup_cfg = read_config(PlannerWarmupConfig, config, "planner_warmup_")
        self.planner_rl_cfg = read_config(PlannerRLConfig, config, "planner_rl_")
        if s.fast_beams < max(config["topk"]):
            raise ValueError(f"twistar_fast_beams={s.fast_beams} < max(topk)={max(config['topk'])}")
        self.seed = int(config["seed"])
        self.eval_batch = int(config["eval_batch_size"])
        self.m = self.vocab.n_levels
        self.text = ItemText(config, dataset, read_config(TextSettings, config), self.ITEM_SEQ, self.ITEM_SEQ_LEN,
                             self.ITEM_ID)
        feat = dataset.inter_feat  # the training rows: the model is built on the training split
        held = self.holdout_mask(feat)  # [R]
        neighbour = swing_neighbours(feat[self.USER_ID], feat[self.ITEM_SEQ], feat[self.ITEM_SEQ_LEN],
                                     feat[self.ITEM_ID], self.n_items, s.swing_alpha, s.swing_max_users,
                                     leave_out=held)  # a held-out row's own target never shapes its sentences
        self.knowledge = CollaborativeKnowledge(neighbour, [f.title for f in self.text.facts], s.knowledge_items)
        self.slow_vocab = self.sids.vocab(n_extra=self.text.size)
        with torch.random.fork_rng(devices=[]):  # the extra modules do not shift the global RNG
            torch.manual_seed(self.seed + 1)
            self.slow = SIDSeq2Seq(self.slow_vocab, self.seq2seq.item_codes.cpu(), backbone_settings(config),
                                   history_eos=bool(config["history_eos"]))
            self.ranker = DINRanker(self.n_items, s.ranker_embedding_size, s.ranker_attention_hidden,
                                    tuple(s.ranker_mlp_hidden), s.ranker_max_history, s.ranker_attention_norm)
            self.planner = Planner(hidden=tuple(s.planner_hidden))
        self.knowledge.encode(self.text, s.knowledge_tokens, self.slow_vocab.extra_offset,
                              self.slow_vocab.pad)
        self.register_buffer("tool_cost", torch.zeros(3))  # [3] seconds per user (fast, rank, slow), set by a stage
        self.register_buffer("item_groups", self.seq2seq.item_codes[:, 0].clamp(min=0).clone(), persistent=False)
        self.route_mode = "fast"  # set by each stage (StagedTrainer: before validating / testing it)
        self.evaluating_test = False  # set by the StagedTrainer while it tests

    def build_stages(self, config) -> list[Stage]:
        from recbole_ext.models.twistar.rl import SlowRLStage
        from recbole_ext.trainers.grpo_stage import GRPOConfig

        return [
            FastStage(self.fast_cfg, StageSchedule.read(config, "fast_")),
            RankerStage(self.ranker_cfg, StageSchedule.read(config, "ranker_")),
            SlowSFTStage(self.slow_sft_cfg, StageSchedule.read(config, "slow_sft_")),
            SlowRLStage(read_config(GRPOConfig, config, "slow_rl_"), StageSchedule.read(config, "slow_rl_"),
                        self.slow_rl_cfg),
            PlannerWarmupStage(self.planner_warmup_cfg, StageSchedule.read(config, "planner_warmup_")),
            PlannerRLStage(self.planner_rl_cfg, StageSchedule.read(config, "planner_rl_")),
        ]

    def calculate_loss(self, interaction):
        raise TypeError("TwiSTAR trains in stages: use the StagedTrainer (the registry's trainer for TwiSTAR)")

    def holdout_mask(self, interaction) -> Tensor:
        """[B] bool: the batch's held-out training rows (:func:`~recbole_ext.models.twistar.holdout.holdout_rows`)."""
        return holdout_rows(interaction[self.USER_ID], interaction[self.ITEM_SEQ], interaction[self.ITEM_ID],
                            self.settings.holdout_ratio)

    # --- fast tool -------------------------------------------------------------------------------
    def fast_loss(self, interaction, exclude_holdout: bool = True) -> Tensor:
        """TIGER's loss (its very ``calculate_loss``) on the rows that are not held out."""
        from recbole_ext.models.tiger import TIGER

        if exclude_holdout:
            interaction = interaction[~self.holdout_mask(interaction)]
        if len(interaction) == 0:
            return sum(p.sum() for p in self.seq2seq.parameters()) * 0.0
        return TIGER.calculate_loss(self, interaction)

    @torch.no_grad()
    def fast_beams(self, interaction) -> tuple[Tensor, Tensor]:
        """The fast top-K: items [B, K] (best first, -1 dead) and length-normalised scores [B, K]
        (summed log-probs / m, -inf dead)."""
        ids, mask = self.history_tokens(interaction)
        out = self.seq2seq.beam_search(ids, mask, self.settings.fast_beams, constrain=self.constrained)
        return out.items, out.scores / self.m

    def target_fast_scores(self, interaction) -> Tensor:
        """The fast model's length-normalised score of each row's target [B] (the beams' scoring)."""
        from recbole_ext.rl.grpo import token_logprobs

        ids, mask = self.history_tokens(interaction)
        enc = self.seq2seq.encode(ids, mask)
        labels = self.target_tokens(interaction)  # [B, m]
        hidden = self.seq2seq.decode(enc, mask, input_ids=self.seq2seq.shift(labels))
        return token_logprobs(self.seq2seq.logits(hidden), labels).sum(1) / self.m

    def features(self, interaction, fast_scores: Tensor) -> Tensor:
        """Planner features [B, F] of a batch from its fast beam scores [B, K] (already normalised)."""
        from recbole_ext.models.twistar.features import planner_features

        return planner_features(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], fast_scores,
                                self.item_groups, sid_length=None, top_n=self.settings.fast_k)

    # --- ranker ----------------------------------------------------------------------------------
    def rank_list(self, interaction, items: Tensor, scores: Tensor) -> Tensor:
        """The fast list [B, K] re-ordered by the ranker -> [B, K] (-1 dead)."""
        from recbole_ext.models.twistar.ranker import rerank

        with torch.no_grad():
            logits = self.ranker(interaction[self.ITEM_SEQ], items, scores)
        return rerank(items, logits, items.shape[1])

    def ranker_loss(self, interaction, cfg: RankerConfig) -> tuple[Tensor, dict]:
        """Listwise CE of the target among the frozen fast model's own top-K, held-out rows only."""
        from recbole_ext.models.twistar.ranker import listwise_loss, ranker_batch

        interaction = interaction[self.holdout_mask(interaction)]
        if len(interaction) == 0:
            return sum(p.sum() for p in self.ranker.parameters()) * 0.0, {}
        items, scores = self.fast_beams(interaction)
        target = interaction[self.POS_ITEM_ID]

        def score_targets(rows: Tensor, _targets: Tensor) -> Tensor:
            with torch.no_grad():
                return self.target_fast_scores(interaction[rows])

        batch = ranker_batch(target, items, scores, cfg.inject_target, score_targets)
        logits = self.ranker(interaction[self.ITEM_SEQ], batch.candidates, batch.scores)
        loss = listwise_loss(logits, batch.label, batch.keep)
        found = (items == target[:, None]).any(1).float().mean()
        return loss, {"loss_listwise": loss.detach(), "target_in_fast": found, "rows": float(len(interaction))}

    # --- slow tool -------------------------------------------------------------------------------
    def slow_inputs(self, interaction) -> tuple[Tensor, Tensor]:
        """The slow model's encoder input: history SID tokens then the collaborative sentences -> ids, mask [B, T]."""
        from recbole_ext.models.twistar.slow import compact_tokens

        pad = self.slow_vocab.pad
        hist, _ = self.slow.history_tokens(interaction[self.ITEM_SEQ])  # [B, L*m]
        know = self.knowledge.tokens(interaction[self.ITEM_SEQ])  # [B, n_last * S]
        ids = compact_tokens(hist, know, pad)
        return ids, (ids != pad).long()

    @torch.no_grad()
    def slow_list(self, interaction) -> tuple[Tensor, Tensor]:
        """Greedy justification, then the SID beam -> items [B, num_beams] and justification lengths [B]."""
        from recbole_ext.models.item_text import text_prefix
        from recbole_ext.models.twistar.slow import sid_beams_after_prefix

        ids, mask = self.slow_inputs(interaction)
        enc, dmask = self.slow.encode_for_decoding(ids, mask)
        prefix, real = text_prefix(self.slow, enc, dmask, self.settings.slow_max_tokens)  # [B, P]
        out = sid_beams_after_prefix(self.slow, enc, dmask, prefix, real, self.num_beams, self.constrained)
        return out.items, real.sum(1) - 1

    @torch.no_grad()
    def sampled_hits(self, interaction, cfg: SlowSFTConfig, generator: torch.Generator) -> Tensor:
        """Self-filtering check: G sampled justifications per row, each followed by a SID beam of
        ``filter_topk`` -> [B, G] bool (the target among those beams)."""
        from recbole_ext.models.item_text import text_prefix
        from recbole_ext.models.twistar.slow import sid_beams_after_prefix

        was = self.slow.training
        self.slow.eval()
        try:
            g = cfg.filter_samples
            ids, mask = self.slow_inputs(interaction)
            ids, mask = ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)
            enc, dmask = self.slow.encode_for_decoding(ids, mask)
            prefix, real = text_prefix(self.slow, enc, dmask, self.settings.slow_max_tokens,
                                       cfg.filter_temperature, generator)
            out = sid_beams_after_prefix(self.slow, enc, dmask, prefix, real, cfg.filter_topk, self.constrained)
            target = interaction[self.POS_ITEM_ID].repeat_interleave(g, 0)
            return (out.items == target[:, None]).any(1).view(-1, g)
        finally:
            self.slow.train(was)

    def slow_sft_loss(self, interaction, cfg: SlowSFTConfig, keep: dict | None,
                      generator: torch.Generator) -> tuple[Tensor, dict]:
        """CE of [justification, SID] after [history, collaborative sentences] on the non-held-out rows.

        ``keep`` None (warm epochs): every row's rationale is its target. Otherwise self-filtering: the
        first ``filter_rows`` rows of the batch are checked again (:meth:`sampled_hits`) and the
        decision stored in ``keep`` by the row's :func:`~recbole_ext.models.twistar.holdout.row_hash`; a row keeps its rationale iff its last decision
        says a sampled justification led to a hit (rows never checked keep theirs)."""
        from recbole_ext.models.item_text import text_then_sid_pass
        from recbole_ext.models.twistar.slow import self_filter

        interaction = interaction[~self.holdout_mask(interaction)]
        if len(interaction) == 0:
            return sum(p.sum() for p in self.slow.parameters()) * 0.0, {}
        pad, offset = self.slow_vocab.pad, self.slow_vocab.extra_offset
        cot, ends, _ = self.text.rationale_tokens(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                                  interaction[self.POS_ITEM_ID], offset, pad)
        stats: dict = {}
        if keep is not None:
            rows = row_hash(interaction[self.USER_ID], interaction[self.ITEM_SEQ], interaction[self.ITEM_ID]).tolist()
            n_check = min(cfg.filter_rows, len(rows))
            if n_check:
                hits = self.sampled_hits(interaction[torch.arange(n_check)], cfg, generator)  # [n, G]
                for r, hit in enumerate(hits.any(1).tolist()):
                    keep[rows[r]] = bool(hit)
                stats["filter_hit_rate"] = hits.float().mean()
            decided = torch.tensor([keep.get(r, True) for r in rows], device=cot.device)
            cot, ends, kept = self_filter(cot, ends, decided[:, None], pad)
            stats["rationale_kept"] = kept.float().mean()
        ids, mask = self.slow_inputs(interaction)
        enc = self.slow.encode(ids, mask)
        target = self.slow.item_tokens[interaction[self.POS_ITEM_ID]]  # [B, m]
        loss, _ = text_then_sid_pass(self.slow, enc, mask, cot, ends, target)
        stats["loss_text_sid"] = loss.detach()
        return loss, stats

    # --- planner ---------------------------------------------------------------------------------
    @torch.no_grad()
    def planner_table(self, train_data) -> PlannerTable:
        """Run the three tools on every held-out training row: features, each tool's NDCG@10, the pure
        oracle label and each tool's measured latency per user. Reads only ``train_data``'s rows."""
        from recbole.data.interaction import cat_interactions

        from recbole_ext.models.twistar.routing import ndcg_at_k, oracle_labels, rank_of

        was = self.training
        self.eval()
        try:
            parts = []
            for batch in train_data:
                batch = batch[0] if isinstance(batch, tuple) else batch
                held = self.holdout_mask(batch)
                if bool(held.any()):
                    parts.append(batch[held.to(batch[self.USER_ID].device)])
            if not parts:
                raise ValueError("no held-out training row: raise twistar_holdout_ratio or use more data")
            rows = cat_interactions(parts)
            # deterministic order: by user, then by content (rows of equal content are the same sample)
            keys = row_hash(rows[self.USER_ID], rows[self.ITEM_SEQ], rows[self.ITEM_ID])  # [H] uint64
            order = np.lexsort((keys, rows[self.USER_ID].cpu().numpy()))
            rows, keys = rows[torch.from_numpy(order)].to(self.tool_cost.device), keys[order]
            out: dict[str, list[Tensor]] = {k: [] for k in ("fast", "feat", "ndcg")}
            seconds = torch.zeros(3, dtype=torch.float64)
            for start in range(0, len(rows), self.eval_batch):
                chunk = rows[torch.arange(start, min(start + self.eval_batch, len(rows)))]
                target = chunk[self.POS_ITEM_ID]
                (items, scores), t_fast = self._timed(lambda c=chunk: self.fast_beams(c))
                ranked, t_rank = self._timed(lambda c=chunk, i=items, s=scores: self.rank_list(c, i, s))
                (slow, _), t_slow = self._timed(lambda c=chunk: self.slow_list(c))
                seconds += torch.tensor([t_fast, t_fast + t_rank, t_slow], dtype=torch.float64)
                k = self.settings.fast_k
                out["ndcg"].append(torch.stack([ndcg_at_k(rank_of(target, lst), k) for lst in (items, ranked, slow)], 1))
                out["fast"].append(items)
                out["feat"].append(self.features(chunk, scores))
            fast_items = torch.cat(out["fast"]).cpu()
            target = rows[self.POS_ITEM_ID].cpu()
            oracle = oracle_labels(target, fast_items, 0.0, fast_k=self.settings.fast_k, rank_k=fast_items.shape[1])
            table = PlannerTable(rows[self.USER_ID].cpu(), rows[self.ITEM_SEQ_LEN].cpu(), target, fast_items,
                                 torch.cat(out["feat"]).cpu(), torch.cat(out["ndcg"]).cpu(), oracle,
                                 (seconds / len(rows)).float(), torch.from_numpy(keys.view(np.int64).copy()))
            logger.info("planner table: %d held-out rows, tool cost %s ms/user, NDCG@10 per tool %s", len(rows),
                        [round(1000 * float(c), 3) for c in table.cost], table.ndcg.mean(0).tolist())
            return table
        finally:
            self.train(was)

    def _timed(self, fn):
        """(fn(), seconds), synchronised on CUDA for an honest time."""
        device = self.tool_cost.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return value, time.perf_counter() - start

    # --- evaluation ------------------------------------------------------------------------------
    def reset_decode_stats(self) -> None:
        super().reset_decode_stats()
        self.eval_log: dict[str, list] = {"latency": [], "tool": [], "oracle": [], "served_rank": [],
                                          "justification": [], "steps": []}
        self.fixed_log: dict[str, dict[str, list]] = {}

    @staticmethod
    def _pad(items: Tensor, width: int) -> Tensor:
        return torch.cat([items, items.new_full((items.shape[0], width - items.shape[1]), -1)], 1) \
            if items.shape[1] < width else items

    @torch.no_grad()
    def route(self, interaction) -> tuple[Tensor, Tensor, Tensor | None, dict]:
        """This stage's decoding for a batch: (served items [B, W], per-user seconds [B], tools [B] or
        None, what the record needs: the fast list and timings, ``width`` [B] (how many of a user's W
        positions its tool filled: the rest is padding) and ``steps`` [B] (justification tokens decoded
        for the user: 0 unless the slow tool served it)). Reads no target."""
        from recbole_ext.models.twistar.routing import FAST, RANK, SLOW, select_per_tool

        mode = self.route_mode
        if mode not in ROUTE_MODES:
            raise ValueError(f"route_mode must be one of {ROUTE_MODES}, got {mode!r}")
        b = interaction[self.ITEM_SEQ].shape[0]
        info: dict = {}
        if mode == "slow":
            (items, n_text), t = self._timed(lambda: self.slow_list(interaction))
            info.update(justification=n_text, steps=n_text, width=torch.full((b,), items.shape[1]))
            return items, torch.full((b,), t / b), None, info
        (fast, scores), t_fast = self._timed(lambda: self.fast_beams(interaction))
        info.update(fast=fast, scores=scores, t_fast=t_fast, steps=torch.zeros(b, dtype=torch.long),
                    width=torch.full((b,), fast.shape[1]))
        if mode == "fast":
            return fast, torch.full((b,), t_fast / b), None, info
        if mode == "rank":
            ranked, t_rank = self._timed(lambda: self.rank_list(interaction, fast, scores))
            info["width"] = torch.full((b,), ranked.shape[1])
            return ranked, torch.full((b,), (t_fast + t_rank) / b), None, info
        (tools, _), t_plan = self._timed(lambda: self.planner.act(self.features(interaction, scores), greedy=True))
        latency = torch.full((b,), (t_fast + t_plan) / b)
        width = max(fast.shape[1], self.num_beams)
        lists = torch.stack([self._pad(fast, width)] * 3, 1)  # [B, 3, W], rows replaced per tool below
        for tool in (RANK, SLOW):
            rows = (tools == tool).nonzero(as_tuple=True)[0]
            if not rows.numel():
                continue
            sub = interaction[rows]
            if tool == RANK:
                got, t = self._timed(lambda s=sub, r=rows: self.rank_list(s, fast[r], scores[r]))
            else:
                (got, n_text), t = self._timed(lambda s=sub: self.slow_list(s))
                info["steps"][rows.cpu()] = n_text.cpu().long()
                info.setdefault("justification", []).append(n_text)
            info["width"][rows.cpu()] = got.shape[1]
            lists[rows, tool] = self._pad(got, width)
            latency[rows.cpu()] += t / rows.numel()
        served = select_per_tool(tools, lists)
        assert int((tools == FAST).sum() + (tools == RANK).sum() + (tools == SLOW).sum()) == b
        if "justification" in info:
            info["justification"] = torch.cat(info["justification"])  # the slow tool's users only
        return served, latency, tools, info

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """Scores [B, n_items] from the stage's decoding (:meth:`route`); then, for the record only, the
        target's rank, the oracle tool and (testing, ``twistar_compare_fixed``) the fixed strategies."""
        from recbole_ext.models.twistar.routing import oracle_labels, rank_of

        served, latency, tools, info = self.route(interaction)
        # one width for every tool's list, so a routed user's scores equal its tool's own
        scores, _ = beams_to_scores(self._pad(served, max(self.settings.fast_beams, self.num_beams)), self.n_items)
        width = info["width"].to(served.device)  # [B] positions each user's tool filled (the rest is padding)
        own = torch.arange(served.shape[1], device=served.device)[None, :] < width[:, None]  # [B, W]
        n_invalid = ((served < 0) & own).sum()
        device = scores.device
        self.decode_seconds += float(latency.sum())
        self.decode_users += served.shape[0]
        self.decode_beams += int(width.sum())
        self.invalid_beams = self.invalid_beams.to(device) + n_invalid
        self.ranked_items = self.ranked_items.to(device) + torch.isfinite(scores).sum()
        # --- the record: everything below reads the target and never touches ``scores`` -------------
        target = interaction[self.POS_ITEM_ID]
        log = self.eval_log
        log["latency"] += latency.tolist()
        log["served_rank"] += rank_of(target, served).tolist()
        log["steps"] += info["steps"].tolist()
        if "justification" in info:
            log["justification"] += info["justification"].tolist()
        if tools is not None:
            k = self.settings.fast_k
            fast = info["fast"]
            log["tool"] += tools.tolist()
            log["oracle"] += oracle_labels(target, fast, 0.0, fast_k=k, rank_k=fast.shape[1]).tolist()
            if self.evaluating_test and self.settings.compare_fixed:
                self._fixed_strategies(interaction, target, info)
        return scores

    def _fixed_strategies(self, interaction, target: Tensor, info: dict) -> None:
        """Always fast / always fast+rank / always slow on the same users (record only)."""
        from recbole_ext.models.twistar.routing import rank_of

        b = target.shape[0]
        ranked, t_rank = self._timed(lambda: self.rank_list(interaction, info["fast"], info["scores"]))
        (slow, _), t_slow = self._timed(lambda: self.slow_list(interaction))
        for name, items, seconds in (("fast", info["fast"], info["t_fast"]), ("rank", ranked, info["t_fast"] + t_rank),
                                     ("slow", slow, t_slow)):
            entry = self.fixed_log.setdefault(name, {"rank": [], "latency": []})
            entry["rank"] += rank_of(target, items).tolist()
            entry["latency"] += [seconds / b] * b

    @staticmethod
    def _accuracy(ranks: list[int]) -> dict[str, float]:
        from recbole_ext.models.twistar.routing import ndcg_at_k

        r = torch.tensor(ranks, dtype=torch.long)
        out = {}
        for k in RECORD_TOPK:
            out[f"hit@{k}"] = round(float(((r >= 0) & (r < k)).float().mean()), 6)
            out[f"ndcg@{k}"] = round(float(ndcg_at_k(r, k).mean()), 6)
        return out

    @staticmethod
    def _latency(seconds: list[float]) -> dict[str, float]:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return {"latency_ms_mean": round(float(ms.mean()), 4), "latency_ms_p95": round(float(np.percentile(ms, 95)), 4)}

    def record_extra(self) -> dict:
        from recbole_ext.models.twistar.routing import TOOL_NAMES, agreement, tool_shares

        extra = super().record_extra()
        log = self.eval_log
        extra.update(route_mode=self.route_mode, fast_beams=self.settings.fast_beams,
                     tool_cost_ms=[round(1000 * float(c), 4) for c in self.tool_cost],
                     beta=self.planner_rl_cfg.beta, text_vocab_size=self.text.size)
        if log["latency"]:
            extra.update(self._latency(log["latency"]))
        if log["justification"]:  # over the users the slow tool served
            extra["mean_justification_tokens"] = round(float(np.mean(log["justification"])), 3)
        if log["steps"]:  # reasoning tokens as decoded, over every user (0 where fast or rank served)
            extra["mean_reasoning_steps"] = round(float(np.mean(log["steps"])), 3)
        if self.route_mode in TOOL_NAMES:  # a tool stage serves every user with its own tool
            extra["tool_shares"] = {name: float(name == self.route_mode) for name in TOOL_NAMES}
        elif log["tool"]:
            tools, oracle = torch.tensor(log["tool"]), torch.tensor(log["oracle"])
            extra["tool_shares"] = tool_shares(tools)
            extra["oracle_shares"] = tool_shares(oracle)
            extra["oracle_agreement"] = round(agreement(tools, oracle), 6)
        if self.fixed_log:
            extra["fixed_strategies"] = {name: {**self._accuracy(e["rank"]), **self._latency(e["latency"])}
                                         for name, e in self.fixed_log.items()}
            extra["routed"] = {**self._accuracy(log["served_rank"]), **self._latency(log["latency"])}
        return extra
