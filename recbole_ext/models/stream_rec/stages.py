"""STREAM-Rec's typed settings and its three stages: PT, SFT (with relabelling rounds), RL (GRPO).

Every value comes from the YAML (``properties/model/STREAMRec.yaml``, over the family file); the
dataclasses below only name and type the keys (prefix ``pt_``, ``sft_``, ``rl_``). The losses are
the model's (:mod:`recbole_ext.models.stream_rec.model`); the stages say when they run, what an
epoch iterates and how each stage decodes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from recbole_ext.trainers.stages import Stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class STREAMRecSettings:
    """Model-level keys (unprefixed)."""

    reasoning_len: int
    neighbor_source: str
    labeller_inner_size: int | None
    labeller_dropout: float
    labeller_init: str
    reasoning_decode: str

    def __post_init__(self):
        if self.reasoning_decode not in REASONING_DECODES:
            raise ValueError(f"reasoning_decode must be one of {REASONING_DECODES}, got {self.reasoning_decode!r}")


#: joint: one beam over reasoning and item tokens, each item ranked by its best path | best_thought:
#: the best reasoning path alone (beam over the reasoning tokens), then the item beam after it |
#: path_sum: the joint beam, each item ranked by the probability summed over the paths reaching it
REASONING_DECODES = ("joint", "best_thought", "path_sum")


@dataclass(frozen=True)
class PTConfig:
    """Stage 1, Eq. 9-11 (keys ``pt_<field>``)."""

    neighbors: int
    temperature: float
    direct_weight: float


@dataclass(frozen=True)
class SFTConfig:
    """Stage 2, Eq. 12-19 (keys ``sft_<field>``; ``reasoning_len`` is the model's)."""

    reasoning_len: int = dataclasses.field(metadata={"key": "reasoning_len"})
    rounds: int | None
    round_epochs: int
    temperature: float
    dpo_weight: float
    dpo_beta: float
    dpo_neg_pool: int
    quant_weight: float
    quant_beta: float
    state_weight: float
    state_schedule: str
    state_temperature: float
    state_normalize: bool
    straight_through: bool
    vocab_stop_gradient: bool
    dpo_reference: str


@dataclass(frozen=True)
class RewardConfig:
    """Stage 3's rewards, Eq. 21-27 (keys ``rl_<field>``)."""

    reward_weights: dict
    hard_negatives: int
    similarity: str
    similarity_states: str
    likelihood_clip: float | None

    def __post_init__(self):
        if self.similarity_states not in ("decoder_mean", "labeller"):
            raise ValueError(f"rl_similarity_states must be decoder_mean or labeller, got {self.similarity_states!r}")


class PTStage(Stage):
    """Pretraining on neighbour-lengthened targets (+ the direct decoder's CE)."""

    name, prefix = "pt", "pt_"

    def loss(self, model, interaction):
        return model.pretrain_loss(interaction, self.config)

    def decode_free_steps(self, model) -> int:
        return self.config.neighbors * model.m  # PT's own format: neighbour tokens, then the target


class SFTStage(Stage):
    """Fine-tuning on slow-thinking labels, relabelled with the current model every
    ``round_epochs`` epochs, ``rounds`` times (~ = until early stopping ends the stage)."""

    name, prefix = "sft", "sft_"

    def begin(self, model) -> None:
        model.clear_labels()
        model.freeze_dpo_reference()  # the direct path as PT left it (used when dpo_reference: frozen)
        self.rounds_done = 0

    def begin_epoch(self, model, train_data, epoch: int) -> None:
        cfg = self.config
        if cfg.reasoning_len == 0:
            return
        every = max(1, cfg.round_epochs)
        if (cfg.rounds is None or self.rounds_done < cfg.rounds) and epoch % every == 0:
            start = time.perf_counter()
            n = model.collect_labels(train_data)
            self.rounds_done += 1
            logger.info("SFT round %d/%s: labelled %d samples with %d reasoning tokens in %.1fs", self.rounds_done,
                        cfg.rounds or "until early stopping", n, cfg.reasoning_len, time.perf_counter() - start)
            diagnostics = {**model.label_statistics(), **model.thought_diagnostics(next(iter(train_data)))}
            self.notes.setdefault("label_rounds", []).append(diagnostics)
            logger.info("SFT round %d labels: %s", self.rounds_done, diagnostics)

    def loss(self, model, interaction):
        loss, terms = model.sft_loss(interaction, self.config)
        self.add_statistics({k if k.startswith("nll_") else f"loss_{k}": v for k, v in terms.items()})
        return loss

    def decode_free_steps(self, model) -> int:
        return self.config.reasoning_len
