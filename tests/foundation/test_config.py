"""Config precedence: RecBole defaults < our overall < dataset < model YAML < files < dict < command line."""

import pytest

from recbole_ext import registry
from recbole_ext.config import ConfigFileError, ExtConfig, load_yaml_file


@pytest.fixture
def plugin(tmp_path):
    yaml_file = tmp_path / "MeanPoolRec.yaml"
    yaml_file.write_text("embedding_size: 8\nhidden_dropout_prob: 0.3\nstopping_step: 4\n")
    registry.register("MeanPoolRec", "foundation.tiny_plugin:MeanPoolRec", yaml=yaml_file, group="traditional")
    yield "MeanPoolRec"
    registry.unregister("MeanPoolRec")


def test_precedence_layers(plugin, tmp_path, tiny_dataset):
    data_path, name = tiny_dataset
    first = tmp_path / "a.yaml"
    first.write_text("hidden_dropout_prob: 0.4\nlearning_rate: 0.005\n")
    second = tmp_path / "b.yaml"
    second.write_text("learning_rate: 0.007\ntrain_batch_size: 64\n")
    config = ExtConfig(
        plugin, name, config_file_list=[str(first), str(second)],
        config_dict={"data_path": data_path, "train_batch_size": 32, "eval_batch_size": 16},
        cmd_dict={"eval_batch_size": "8"},
    )
    assert config["metrics"] == ["Hit", "NDCG"] and config["topk"] == [5, 10]  # our overall.yaml over RecBole's
    assert config["MAX_ITEM_LIST_LENGTH"] == 20  # overall over RecBole's 50
    assert config["stopping_step"] == 4  # model YAML over overall
    assert config["embedding_size"] == 8  # model YAML
    assert config["hidden_dropout_prob"] == 0.4  # file over model YAML
    assert config["learning_rate"] == 0.007  # later file over earlier file
    assert config["train_batch_size"] == 32  # dict over files
    assert config["eval_batch_size"] == 8  # command line (string converted) over dict
    assert config["model"] == "MeanPoolRec"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"


def test_sys_argv_is_not_read(plugin, tiny_dataset, monkeypatch):
    data_path, name = tiny_dataset
    monkeypatch.setattr("sys.argv", ["run_benchmark.py", "--learning_rate=0.9", "--suite=x"])
    config = ExtConfig(plugin, name, config_dict={"data_path": data_path})
    assert config["learning_rate"] == 0.001 and "suite" not in config


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: [0.1, 0.2\nseed: 1\n")
    with pytest.raises(ConfigFileError) as info:
        load_yaml_file(bad)
    assert f"{bad}:" in str(info.value) and "malformed YAML" in str(info.value)
    line = int(str(info.value).split(f"{bad}:")[1].split(":")[0])
    assert line in (3, 4)


def test_missing_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigFileError, match="not found"):
        load_yaml_file(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigFileError, match="mapping"):
        load_yaml_file(listy)
