"""TwiSTAR's typed settings and its stages: fast retriever, ranker, slow SFT, planner warm-up, planner RL.

Every value comes from the YAML (``properties/model/TwiSTAR.yaml`` over the family file); the
dataclasses name and type the keys: model keys ``twistar_<field>`` (they shape modules or every
stage's data, so they are part of the data key of every stage), stage keys ``<stage>_<field>``.
The slow model's GRPO stage is :mod:`recbole_ext.models.twistar.rl`; the losses and tools are the
model's (:mod:`recbole_ext.models.twistar.model`).

Each stage tells the model how its weights are evaluated (:meth:`Stage.decode_free_steps` is the
one hook the StagedTrainer calls before validating or testing a stage, also for a cached stage):
``fast`` always fast, ``ranker`` always fast+rank, ``slow_*`` always slow, ``planner_*`` routed.
The returned free steps are the slow model's justification budget where the slow tool may run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from recbole_ext.trainers.stages import Stage

logger = logging.getLogger(__name__)

#: How a stage's weights are evaluated (``TwiSTAR.route_mode``).
ROUTE_MODES = ("fast", "rank", "slow", "route")


@dataclass(frozen=True)
class TwiSTARSettings:
    """Model-level keys (``twistar_<field>``)."""

    fast_beams: int
    fast_k: int
    holdout_ratio: float
    knowledge_items: int
    knowledge_tokens: int
    swing_alpha: float
    swing_max_users: int
    slow_max_tokens: int
    ranker_embedding_size: int
    ranker_attention_hidden: int
    ranker_mlp_hidden: list
    ranker_max_history: int
    ranker_attention_norm: str
    planner_hidden: list
    compare_fixed: bool

    def __post_init__(self):
        if not 0.0 < self.holdout_ratio < 1.0:
            raise ValueError(f"twistar_holdout_ratio must lie in (0, 1), got {self.holdout_ratio}")
        if not 0 < self.fast_k <= self.fast_beams:
            raise ValueError(f"need 0 < twistar_fast_k <= twistar_fast_beams, got {self.fast_k}, {self.fast_beams}")


@dataclass(frozen=True)
class FastConfig:
    """Stage ``fast`` (keys ``fast_<field>``): the fast SID retriever, TIGER's loss."""

    exclude_holdout: bool


@dataclass(frozen=True)
class RankerConfig:
    """Stage ``ranker`` (keys ``ranker_<field>``): DIN ranker on the fast model's own lists of held-out rows."""

    inject_target: bool


@dataclass(frozen=True)
class SlowSFTConfig:
    """Stage ``slow_sft`` (keys ``slow_sft_<field>``): [justification, SID] CE with self-filtering."""

    warm_epochs: int
    filter_rows: int
    filter_samples: int
    filter_topk: int
    filter_temperature: float


@dataclass(frozen=True)
class SlowRLConfig:
    """Stage ``slow_rl``'s TwiSTAR keys (``slow_rl_<field>``; GRPO's own are the shared GRPOConfig)."""

    reward_weights: dict


@dataclass(frozen=True)
class PlannerWarmupConfig:
    """Stage ``planner_warmup`` (keys ``planner_warmup_<field>``): CE on the oracle labels."""

    up_share: float
    up_to_slow: float
    balanced: bool
    passes: int
    batch_size: int


@dataclass(frozen=True)
class PlannerRLConfig:
    """Stage ``planner_rl`` (keys ``planner_rl_<field>``; beta is ``twistar_beta``): REINFORCE on
    NDCG@10 - beta * cost[tool]."""

    beta: float = field(metadata={"key": "twistar_beta"})
    entropy: float
    passes: int
    batch_size: int
    tool_cost: list | None


class FastStage(Stage):
    """History -> next SID with TIGER's loss on the non-held-out training rows; decoded always-fast."""

    name, prefix = "fast", "fast_"

    def loss(self, model, interaction):
        return model.fast_loss(interaction, self.config.exclude_holdout)

    def decode_free_steps(self, model) -> int:
        model.route_mode = "fast"
        return 0


class RankerStage(Stage):
    """Listwise CE of the target in the (frozen) fast model's top-K of held-out rows; decoded fast+rank."""

    name, prefix = "ranker", "ranker_"

    def train_mode(self, model) -> None:
        model.eval()
        model.ranker.train()

    def loss(self, model, interaction):
        loss, stats = model.ranker_loss(interaction, self.config)
        self.add_statistics(stats)
        return loss

    def decode_free_steps(self, model) -> int:
        model.route_mode = "rank"
        return 0


class SlowSFTStage(Stage):
    """The slow model's [justification, SID] CE after [history SIDs, collaborative sentences], with
    self-filtering of the rationale targets (see :meth:`TwiSTAR.slow_sft_loss`); decoded always-slow."""

    name, prefix = "slow_sft", "slow_sft_"

    def __init__(self, config, schedule):
        super().__init__(config, schedule)
        self.epoch = 0
        #: a training row's content hash (holdout.row_hash) -> keep the rationale target (the last self-filtering decision)
        self.keep: dict[int, bool] = {}
        self.generator = torch.Generator()

    def begin(self, model) -> None:
        self.keep = {}
        self.generator.manual_seed(model.seed)

    def begin_epoch(self, model, train_data, epoch: int) -> None:
        self.epoch = epoch

    def train_mode(self, model) -> None:
        model.eval()
        model.slow.train()

    def loss(self, model, interaction):
        filtering = self.epoch >= self.config.warm_epochs
        loss, stats = model.slow_sft_loss(interaction, self.config, self.keep if filtering else None, self.generator)
        self.add_statistics(stats)
        return loss

    def decode_free_steps(self, model) -> int:
        model.route_mode = "slow"
        return model.settings.slow_max_tokens


class PlannerStage(Stage):
    """Shared part of the planner stages: the held-out table (built once when the stage trains),
    minibatches of its row indices, everything but the planner frozen; decoded routed."""

    def __init__(self, config, schedule):
        super().__init__(config, schedule)
        self.table = None
        #: [3] the tool costs this stage trained with (seconds per user), once known
        self.cost: torch.Tensor | None = None
        self.generator = torch.Generator()

    def begin(self, model) -> None:
        self.table, self.cost = None, None
        self.generator.manual_seed(model.seed)

    def begin_epoch(self, model, train_data, epoch: int) -> None:
        if self.table is None:
            # the planner stages train the planner only: the tools, hence the table, are those the warm-up
            # saw, so the RL stage of the same process reuses its table (the slow tool decodes each row once)
            self.table = getattr(model, "planner_table_built", None) or model.planner_table(train_data)
            model.planner_table_built = self.table
            self.prepare(model)
            self.notes.update(self.table.notes())

    def prepare(self, model) -> None:
        """After the table is built (labels, costs)."""

    def batches(self, train_data, epoch: int):
        n, cfg = self.table.features.shape[0], self.config
        out = []
        for _ in range(cfg.passes):
            order = torch.randperm(n, generator=self.generator)
            out += list(order.split(max(1, cfg.batch_size)))
        return out

    def train_mode(self, model) -> None:
        model.eval()
        model.planner.train()

    def decode_free_steps(self, model) -> int:
        model.route_mode = "route"
        if self.cost is not None:  # the costs stay with the weights even when the incumbent (older weights) won
            model.tool_cost.copy_(self.cost.to(model.tool_cost.device))
        return model.settings.slow_max_tokens


class PlannerWarmupStage(PlannerStage):
    """Cross-entropy on the oracle labels of held-out rows (official up-routing of easy samples)."""

    name, prefix = "planner_warmup", "planner_warmup_"

    def prepare(self, model) -> None:
        from recbole_ext.models.twistar.planner import balanced_class_weights
        from recbole_ext.models.twistar.routing import oracle_labels, tool_shares

        cfg, t = self.config, self.table
        model.planner.fit_scaler(t.features)
        self.cost = t.cost.clone()
        model.tool_cost.copy_(self.cost.to(model.tool_cost.device))
        g = torch.Generator().manual_seed(model.seed)
        self.labels = oracle_labels(t.target, t.fast_items, cfg.up_share, g, fast_k=model.settings.fast_k,
                                    rank_k=t.fast_items.shape[1], up_to_slow=cfg.up_to_slow)  # [H]
        self.weights = balanced_class_weights(self.labels) if cfg.balanced else None
        self.notes["warmup_label_shares"] = tool_shares(self.labels) if len(self.labels) else {}

    def loss(self, model, index):
        from recbole_ext.models.twistar.planner import warmup_loss

        t = self.table
        logits = model.planner(t.features[index.cpu()].to(model.tool_cost.device))
        loss = warmup_loss(logits, self.labels[index.cpu()].to(logits.device), self.weights)
        self.add_statistics({"warmup_ce": loss.detach()})
        return loss


class PlannerRLStage(PlannerStage):
    """REINFORCE on held-out rows: reward = NDCG@10 of the sampled tool's list - beta * cost[tool]."""

    name, prefix = "planner_rl", "planner_rl_"

    def prepare(self, model) -> None:
        cfg, t = self.config, self.table
        if not bool(model.planner.scaler.fitted):
            model.planner.fit_scaler(t.features)  # planner_rl without a warm-up stage
        if cfg.tool_cost is not None:
            cost, source = torch.tensor([float(c) for c in cfg.tool_cost]), "planner_rl_tool_cost"
        elif bool((model.tool_cost > 0).all()):
            # measured once by the warm-up and kept with its (cached) weights: every cell of a beta sweep
            # trains against the same costs
            cost, source = model.tool_cost.detach().cpu().clone(), "warmup"
        else:
            cost, source = t.cost, "measured"  # no warm-up stage before this one
        if cost.shape != (3,):
            raise ValueError(f"planner_rl_tool_cost must list 3 costs (fast, rank, slow) in seconds, got {cfg.tool_cost}")
        self.cost = cost.float()
        model.tool_cost.copy_(self.cost.to(model.tool_cost.device))
        self.notes["planner_rl_cost_source"] = source

    def loss(self, model, index):
        from recbole_ext.models.twistar.planner import reinforce_step
        from recbole_ext.models.twistar.routing import route_reward

        cfg, t = self.config, self.table
        rows = index.cpu()
        logits = model.planner(t.features[rows].to(model.tool_cost.device))  # [b, 3]
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        tools = torch.multinomial(probs, 1, generator=self.generator)[:, 0]  # [b]
        ndcg = t.ndcg[rows].gather(1, tools[:, None])[:, 0]  # [b]
        reward = route_reward(ndcg, tools, model.tool_cost.cpu(), cfg.beta)  # [b]
        out = reinforce_step(logits, tools.to(logits.device), reward.to(logits.device), entropy_coef=cfg.entropy)
        self.add_statistics({"reward": reward.mean(), "ndcg": ndcg.mean(), "entropy": out.entropy,
                             "share_fast": (tools == 0).float().mean(), "share_slow": (tools == 2).float().mean()})
        return out.loss
