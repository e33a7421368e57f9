"""Evaluation never reads the target: for every generative and reasoning model in the registry, and
every stage of a staged one (each with its own decoding), the batch's target items replaced by
other random items give identical scores. A model added to the registry is checked without a change here."""

from __future__ import annotations

import pytest
import torch

from recbole_ext import registry
from synthetic_data import TINY_GENERATIVE

GENERATORS = [n for n in registry.plugin_names() if registry.model_group(n) != registry.BUILTIN_GROUP]
TINY = {**TINY_GENERATIVE, "sid_collision_codebook_size": 4, "neighbor_source": "sid", "reasoning_len": 2,
        "rl_group_size": 4, "rl_hard_negatives": 6}


def build(model_name, data_path, name, tmp_path):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_ext.config import ExtConfig

    resolved = registry.resolve(model_name)
    config = ExtConfig(resolved, name, config_dict={"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY})
    init_seed(config["seed"], True)
    _, valid, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    model = resolved.model_class(config, test._dataset).eval()
    return config, model, [valid, test]


def other_items(items: torch.Tensor, n_items: int, generator: torch.Generator) -> torch.Tensor:
    """Random real items (1..n_items-1), each different from the one it replaces."""
    shift = torch.randint(1, n_items - 1, items.shape, generator=generator)
    return 1 + (items - 1 + shift) % (n_items - 1)


def assert_scores_ignore_the_target(model, loaders, what: str) -> int:
    """Every evaluation batch scored twice, the second time with random targets; returns the users checked."""
    generator = torch.Generator().manual_seed(0)
    users = 0
    for loader in loaders:
        for interaction, *_ in loader:
            with torch.no_grad():
                scores = model.full_sort_predict(interaction)
                target = interaction[model.POS_ITEM_ID]
                swapped = other_items(target, model.n_items, generator)
                assert (swapped != target).all() and (swapped > 0).all()
                interaction[model.POS_ITEM_ID] = swapped
                assert torch.equal(model.full_sort_predict(interaction), scores), f"{what} reads the target"
                interaction[model.POS_ITEM_ID] = target
            users += len(target)
    return users


def test_every_generator_is_checked():
    assert {"TIGER", "STREAMRec"} <= set(GENERATORS)


@pytest.mark.parametrize("model_name", GENERATORS)
def test_scores_do_not_depend_on_the_target(model_name, tiny_dataset, tmp_path):
    config, model, loaders = build(model_name, *tiny_dataset, tmp_path)
    stages = model.build_stages(config) if hasattr(model, "build_stages") else []
    decodings = [(s.name, s.decode_free_steps(model)) for s in stages] or [("single stage", None)]
    if stages:
        assert any(steps > 0 for _, steps in decodings), "no stage decodes free (reasoning) steps"
    for stage_name, free_steps in decodings:
        if free_steps is not None:
            model.free_steps = free_steps  # what StagedTrainer.evaluate sets for the stage
        users = assert_scores_ignore_the_target(model, loaders, f"{model_name} ({stage_name})")
        assert users == 2 * 40  # valid and test: every user once each


def test_the_check_catches_a_model_that_peeks(tiny_dataset, tmp_path):
    _, model, loaders = build("TIGER", *tiny_dataset, tmp_path)
    honest = model.full_sort_predict

    def peeking(interaction):
        scores = honest(interaction)
        scores[torch.arange(len(scores)), interaction[model.POS_ITEM_ID]] += 1.0  # a leak of the target
        return scores

    model.full_sort_predict = peeking
    with pytest.raises(AssertionError, match="reads the target"):
        assert_scores_ignore_the_target(model, loaders, "peeking TIGER")
