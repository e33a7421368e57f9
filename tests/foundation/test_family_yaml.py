"""Family YAML: the keys TIGER and STREAM-Rec share live once in properties/family/, layered before
each model's own file, and resolve to the same values for both models."""

import pytest
import yaml

from recbole_ext import registry
from recbole_ext.config import ExtConfig

FAMILY = registry.FAMILY_YAML_DIR / "sid_generative.yaml"


def keys_of(path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def test_family_is_layered_before_the_model():
    for name in ("TIGER", "STREAMRec"):
        assert registry.yaml_files(name) == [FAMILY, registry.MODEL_YAML_DIR / f"{name}.yaml"]
        assert registry.resolve(name).yaml_files == registry.yaml_files(name)  # one source for both


def test_shared_keys_resolve_identically():
    family = keys_of(FAMILY)
    assert len(family) >= 25 and {"sid_levels", "d_model", "num_beams", "learning_rate", "lr_decay"} <= set(family)
    tiger = ExtConfig("TIGER", "ml-100k").final_config_dict
    stream = ExtConfig("STREAMRec", "ml-100k").final_config_dict
    differing = {k: (tiger.get(k), stream.get(k)) for k in family if not (tiger.get(k) == stream.get(k) == family[k])}
    assert differing == {}, f"family keys that do not resolve to the family's value in both models: {differing}"
    # the family's values, over overall.yaml's 2048 and 0.0
    assert (tiger["train_batch_size"], tiger["weight_decay"]) == (256, 0.01)
    assert "stages" in stream and "stages" not in tiger  # a model's own keys stay its own


def test_each_family_key_is_defined_once():
    """No model file repeats a key of its family: a shared value is set in one place only."""
    specs = [registry.plugin_spec(name) for name in registry.plugin_names()]
    families = [(spec.name, spec) for spec in specs if spec.family is not None]
    assert {name for name, _ in families} >= {"TIGER", "STREAMRec"}
    for name, spec in families:
        repeated = sorted(set(keys_of(spec.family_file)) & set(keys_of(spec.yaml_file)))
        assert repeated == [], f"{spec.yaml_file} repeats keys of {spec.family_file}: {repeated}"


@pytest.fixture
def family_plugin(tmp_path, monkeypatch):
    (tmp_path / "pooled.yaml").write_text("embedding_size: 4\nhidden_dropout_prob: 0.2\n")
    model_yaml = tmp_path / "MeanPoolRec.yaml"
    model_yaml.write_text("embedding_size: 8\n")
    monkeypatch.setattr(registry, "FAMILY_YAML_DIR", tmp_path)
    registry.register("MeanPoolRec", "foundation.tiny_plugin:MeanPoolRec", yaml=model_yaml,
                      group="traditional", family="pooled")
    yield tmp_path
    registry.unregister("MeanPoolRec")


def test_model_file_wins_over_its_family(family_plugin, tiny_dataset):
    data_path, name = tiny_dataset
    assert registry.yaml_files("MeanPoolRec") == [family_plugin / "pooled.yaml", family_plugin / "MeanPoolRec.yaml"]
    config = ExtConfig("MeanPoolRec", name, config_dict={"data_path": data_path})
    assert config["embedding_size"] == 8  # model file over family
    assert config["hidden_dropout_prob"] == 0.2  # family over RecBole's and overall.yaml's defaults
