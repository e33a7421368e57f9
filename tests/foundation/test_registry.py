"""Registry: plugins, fall-through to RecBole's built-ins, no silent shadowing, lazy imports."""

import os
import subprocess
import sys

import pytest

from recbole_ext import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_builtin_falls_through_to_recbole():
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer

    resolved = registry.resolve("SASRec")
    assert resolved.builtin and resolved.model_class is SASRec and resolved.trainer_class is Trainer


@pytest.mark.parametrize("name", ["Caser", "GRU4Rec", "SASRec", "BERT4Rec"])
def test_baselines_are_listed(name):
    assert name in registry.available_models()


def test_unknown_model_names_it_and_lists_available():
    with pytest.raises(registry.UnknownModelError) as info:
        registry.resolve("SASRek")
    message = str(info.value)
    assert "'SASRek'" in message and "Did you mean SASRec" in message and "GRU4Rec" in message


def test_plugin_may_not_shadow_builtin():
    with pytest.raises(ValueError, match="shadow RecBole's built-in"):
        registry.register("sasrec", "foundation.tiny_plugin:MeanPoolRec", group="traditional")


def test_plugin_resolves_class_trainer_and_yaml(tmp_path):
    yaml_file = tmp_path / "MeanPoolRec.yaml"
    yaml_file.write_text("embedding_size: 8\n")
    registry.register("MeanPoolRec", "foundation.tiny_plugin:MeanPoolRec", yaml=yaml_file, group="traditional")
    try:
        from foundation.tiny_plugin import MeanPoolRec
        from recbole.trainer import Trainer

        resolved = registry.resolve("MeanPoolRec")
        assert resolved.model_class is MeanPoolRec and resolved.trainer_class is Trainer
        assert resolved.yaml_files == [yaml_file] and not resolved.builtin
        assert "MeanPoolRec" in registry.available_models()
    finally:
        registry.unregister("MeanPoolRec")


def test_importing_registry_does_not_import_transformers_or_models():
    code = "import sys, recbole_ext.registry as r; r.available_models(); print('transformers' in sys.modules, 'recbole.model' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.parametrize("name, group", [("TIGER", "generative"), ("STREAMRec", "reasoning"),
                                         ("SASRec", "traditional"), ("Caser", "traditional"),
                                         ("BPR", "traditional")])  # BPR: a built-in outside the paper's four
def test_every_model_has_a_group(name, group):
    assert registry.model_group(name) == group


def test_group_of_unknown_model_names_it():
    with pytest.raises(registry.UnknownModelError, match="'TIGRE'.*Did you mean TIGER"):
        registry.model_group("TIGRE")


def test_register_requires_a_known_group():
    expected = r"'ThinkRec': unknown group 'thinking'; choose one of \['traditional', 'generative', 'reasoning'\]"
    with pytest.raises(ValueError, match=expected):
        registry.register("ThinkRec", "foundation.tiny_plugin:MeanPoolRec", group="thinking")
    with pytest.raises(TypeError, match="group"):
        registry.register("ThinkRec", "foundation.tiny_plugin:MeanPoolRec")  # no default group
    assert "ThinkRec" not in registry.plugin_names()


def test_register_requires_an_existing_family():
    with pytest.raises(ValueError, match="family 'sid_generativ' has no file .*known families: \\['sid_generative'\\]"):
        registry.register("ThinkRec", "foundation.tiny_plugin:MeanPoolRec", group="reasoning", family="sid_generativ")
    assert "ThinkRec" not in registry.plugin_names()


def test_plugin_group_is_resolved_without_importing():
    registry.register("ThinkRec", "foundation.not_a_module:ThinkRec", group="reasoning")  # never imported
    try:
        assert registry.model_group("ThinkRec") == "reasoning" and registry.yaml_files("ThinkRec") == []
    finally:
        registry.unregister("ThinkRec")
    with pytest.raises(registry.UnknownModelError):
        registry.model_group("ThinkRec")
