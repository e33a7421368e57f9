"""LASAR's typed settings and its stages: SID grounding, latent reasoning, RL.

Every value comes from the YAML (``properties/model/LASAR.yaml`` over the family file); the
dataclasses name and type the keys (model keys unprefixed, stage keys ``ground_``, ``reason_``,
``rl_``). The losses are the model's (:mod:`recbole_ext.models.lasar.model`); the RL stage
(:mod:`recbole_ext.models.lasar.rl`) extends the shared GRPO stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from recbole_ext.trainers.stages import Stage

#: How the number of latent steps is chosen: policy = the Policy Head (trained on depth labels,
#: then by REINFORCE) | fixed = ``fixed_depth`` for every sample (the ablation).
DEPTH_MODES = ("policy", "fixed")
#: How the test set is decoded (validation always uses ``latent``, so the checkpoint is chosen the
#: same way): latent = the method | explicit = generate the CoT text, then the SID | none = the
#: same weights with no reasoning step (k = 0).
TEST_DECODINGS = ("latent", "explicit", "none")


@dataclass(frozen=True)
class LASARSettings:
    """Model-level keys (unprefixed)."""

    max_depth: int
    depth_mode: str
    fixed_depth: int
    test_decoding: str
    compare_decodings: tuple
    explicit_max_tokens: int

    def __post_init__(self):
        if self.depth_mode not in DEPTH_MODES:
            raise ValueError(f"depth_mode must be one of {DEPTH_MODES}, got {self.depth_mode!r}")
        object.__setattr__(self, "compare_decodings", tuple(self.compare_decodings or ()))
        for d in (self.test_decoding, *self.compare_decodings):
            if d not in TEST_DECODINGS:
                raise ValueError(f"test_decoding and compare_decodings take {TEST_DECODINGS}, got {d!r}")
        if self.max_depth < 0 or not 0 <= self.fixed_depth <= self.max_depth:
            raise ValueError(f"need 0 <= fixed_depth <= max_depth, got fixed_depth={self.fixed_depth}, "
                             f"max_depth={self.max_depth}")


@dataclass(frozen=True)
class GroundConfig:
    """Stage 1, SID grounding (keys ``ground_<field>``): multi-task CE."""

    rec_weight: float
    title_to_sid_weight: float
    sid_to_title_weight: float
    item_ratio: float


@dataclass(frozen=True)
class ReasonConfig:
    """Stage 2, latent reasoning with CoT alignment (keys ``reason_<field>``)."""

    cot_weight: float
    align_weight: float
    depth_weight: float
    ground_weight: float


@dataclass(frozen=True)
class LASARRLConfig:
    """Stage 3's LASAR-specific keys (``rl_<field>``; GRPO's own are the shared GRPOConfig)."""

    reward_weights: dict
    step_cost: float
    depth_entropy: float
    depth_weight: float
    align_weight: float


class GroundStage(Stage):
    """History -> next SID, title -> SID, SID -> title; decoded without reasoning (k = 0)."""

    name, prefix = "ground", "ground_"

    def loss(self, model, interaction):
        loss, terms = model.grounding_loss(interaction, self.config)
        self.add_statistics({f"loss_{k}": v for k, v in terms.items()})
        return loss


class ReasonStage(Stage):
    """Latent reasoning: SID CE after k latent steps + explicit CoT CE + step-wise bidirectional KL
    to the CoT anchors + the Policy Head's depth CE (+ grounding replay in the mixed schedule)."""

    name, prefix = "reason", "reason_"

    def loss(self, model, interaction):
        loss, terms = model.reasoning_loss(interaction, self.config)
        self.add_statistics({k if k.startswith(("depth_", "n_")) else f"loss_{k}": v for k, v in terms.items()})
        return loss

    def decode_free_steps(self, model) -> int:
        return model.settings.max_depth  # latent reasoning on: the depth is chosen per user
