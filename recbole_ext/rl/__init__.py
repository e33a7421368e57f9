"""Pure RL / preference / auxiliary-loss math shared by the reasoning recommenders.

* :mod:`recbole_ext.rl.grpo` - group advantages, clipped surrogate, KL estimators (Eq. 20).
* :mod:`recbole_ext.rl.rewards` - STREAM-Rec's five rewards and their combiner (Eq. 21-27).
* :mod:`recbole_ext.rl.losses` - pretraining NLL, InfoNCE, quantisation, DPO (Eq. 9-19).
* :mod:`recbole_ext.rl.reasoning` - the iterative-inference labeller (Eq. 12-13).
* :mod:`recbole_ext.rl.reinforce` - REINFORCE with baseline and entropy bonus (depth heads, planners).

Only torch is needed; nothing here imports transformers or RecBole.
"""

from recbole_ext.rl.grpo import GRPOOutput, group_advantages, grpo_loss, sequence_logprob, token_logprobs
from recbole_ext.rl.losses import (
    dpo_loss,
    pretrain_targets,
    quantization_loss,
    sft_objective,
    state_target_infonce,
    step_weights,
    temperature_nll,
)
from recbole_ext.rl.reasoning import IterativeInferenceLabeller, LabellerOutput, nearest_tokens, straight_through
from recbole_ext.rl.reinforce import ReinforceOutput, RunningBaseline, categorical_entropy, reinforce_loss
from recbole_ext.rl.rewards import REWARD_NAMES, combine_rewards

__all__ = [
    "GRPOOutput",
    "group_advantages",
    "grpo_loss",
    "sequence_logprob",
    "token_logprobs",
    "dpo_loss",
    "pretrain_targets",
    "quantization_loss",
    "sft_objective",
    "state_target_infonce",
    "step_weights",
    "temperature_nll",
    "IterativeInferenceLabeller",
    "LabellerOutput",
    "nearest_tokens",
    "straight_through",
    "ReinforceOutput",
    "RunningBaseline",
    "categorical_entropy",
    "reinforce_loss",
    "REWARD_NAMES",
    "combine_rewards",
]
