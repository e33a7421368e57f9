"""Known-bad input ends in one ``error: ...`` line that says what to change (exit code 2), checked
before any dataset is prepared or loaded; a failure during training loses no finished work."""

from __future__ import annotations

import json

import pytest

from recbole_ext import runner
from recbole_ext.cli import main
from recbole_ext.sid.cache import METHODS
from recbole_ext.validate import ConfigValueError, check_value_types
from synthetic_data import TINY_GENERATIVE

DEFAULTS = {"epochs": 300, "learning_rate": 0.001, "reproducibility": True, "train_time_budget_s": None,
            "topk": [5, 10]}


def test_value_kinds_follow_the_defaults():
    ok = {"epochs": 2, "learning_rate": 1, "reproducibility": False, "train_time_budget_s": "x", "topk": [5]}
    check_value_types(DEFAULTS, ok, ok)  # an int for a float default is a number; keys without one are free
    with pytest.raises(ConfigValueError) as info:
        check_value_types(DEFAULTS, {"epochs": "abc"}, {"epochs": "abc"})
    assert str(info.value) == "epochs='abc': epochs must be a number (its default is 300); write e.g. --epochs=300"
    with pytest.raises(ConfigValueError, match=r"reproducibility=1: reproducibility must be True or False"):
        check_value_types(DEFAULTS, {"reproducibility": 1}, {"reproducibility": 1})
    check_value_types(DEFAULTS, {}, {"epochs": "abc"})  # only what the user set is checked


def test_counts_take_no_fraction():
    with pytest.raises(ConfigValueError) as info:
        check_value_types(DEFAULTS, {"epochs": 1.5}, {"epochs": 1.5})
    assert str(info.value) == ("epochs=1.5: epochs counts something and takes a whole number (its default is 300); "
                               "write e.g. --epochs=2")
    check_value_types(DEFAULTS, {"epochs": 2.0}, {"epochs": 2.0})  # a whole float is fine
    check_value_types({"weight_decay": 0}, {"weight_decay": 0.5}, {"weight_decay": 0.5})  # 0 may stand for a float


def test_typed_stage_keys_take_no_fraction():
    from recbole_ext.models.lasar.stages import LASARSettings
    from recbole_ext.trainers.stages import read_config

    keys = {"max_depth": 4, "depth_mode": "policy", "fixed_depth": 2, "test_decoding": "latent",
            "compare_decodings": [], "explicit_max_tokens": 80}
    assert read_config(LASARSettings, {**keys, "max_depth": 3.0}).max_depth == 3
    with pytest.raises(ValueError, match=r"'max_depth' \(LASARSettings.max_depth\) takes a whole number, got 2.5"):
        read_config(LASARSettings, {**keys, "max_depth": 2.5})


def test_the_cli_rejects_a_fractional_epoch_count_before_any_data(capsys, no_preparation):
    assert main(["--model=SASRec", "--dataset=ml-100k", "--epochs=1.5"]) == 2
    assert "epochs=1.5: epochs counts something" in capsys.readouterr().err


@pytest.fixture
def no_preparation(monkeypatch):
    """Fails the test if a dataset preparation starts (every check must come first)."""
    def prepare(*args, **kwargs):
        raise AssertionError("the dataset was prepared before the input was checked")

    monkeypatch.setattr(runner, "resolve_dataset", prepare)


def cli(capsys, *args):
    rc = main(list(args))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model=GRU4Rec", "--epochs=abc"], "error: epochs='abc': epochs must be a number (its default is 300)"),
    (["--model=TIGER", "--sid_tokenizer=bogus"],
     f"error: sid_tokenizer='bogus' is not a tokenizer; choose one of {', '.join(METHODS)} (e.g. --sid_tokenizer=rqvae)"),
    (["--model=TIGER", "--topk=[5,50]"], "error: num_beams=20 < max(topk)=50: beam search ranks only num_beams items; "
                                         "set --num_beams=50 or more, or a smaller topk"),
    (["--model=STREAMRec", "--sid_tokenizer=external"], "error: sid_tokenizer=external needs the semantic-ID file"),
    (["--model=TIGER", "--sid_tokenizer=external", "--sid_path=nope.index.json"], "error: sid_path: no such file "),
    (["--model=GRU4Rec", "--config_files=missing.yaml"], "error: config file not found: "),
])
def test_bad_options_are_one_line_before_any_data(no_preparation, capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    rc, err = cli(capsys, *args, "--dataset=instruments", f"--output_dir={tmp_path / 'out'}")
    assert rc == 2 and err.startswith(message) and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_malformed_sid_file_is_named_before_any_data(no_preparation, capsys, tmp_path):
    bad = tmp_path / "ids.index.json"
    bad.write_text('{"i1": ["<a_1>", ')
    rc, err = cli(capsys, "--model=TIGER", "--sid_tokenizer=external", f"--sid_path={bad}", "--dataset=instruments",
                  f"--output_dir={tmp_path}")
    assert rc == 2 and err.startswith(f"error: sid_path {bad} is not readable JSON (") and '{"item1": [' in err
    bad.write_text(json.dumps([["<a_1>", "<b_2>"]]))
    rc, err = cli(capsys, "--model=TIGER", "--sid_tokenizer=external", f"--sid_path={bad}", "--dataset=instruments",
                  f"--output_dir={tmp_path}")
    assert rc == 2 and err.startswith(f"error: sid_path {bad} holds a JSON list, not an object")


def test_sid_file_for_other_items_is_one_line_before_the_data_is_loaded(tiny_dataset, capsys, tmp_path, monkeypatch):
    data_path, name = tiny_dataset

    def load(*args, **kwargs):
        raise AssertionError("RecBole loaded the dataset before the ID file's keys were checked")

    monkeypatch.setattr(runner, "_execute", load)
    ids = tmp_path / "other.index.json"
    args = ["--model=TIGER", f"--dataset={name}", f"--data_path={data_path}", "--sid_tokenizer=external",
            f"--sid_path={ids}", f"--output_dir={tmp_path / 'out'}", "--use_gpu=False"]
    ids.write_text(json.dumps({"not-an-item": ["<a_1>", "<b_2>"]}))
    rc, err = cli(capsys, *args)
    last = err.strip().splitlines()[-1]  # after the run's own log lines
    assert rc == 2 and last == (f"error: {ids}: 1 items are not in the dataset, e.g. 'not-an-item' (are the keys raw "
                                "item tokens of this dataset? --sid_allow_extra_items=True ignores them)")
    # keyed by positions 0..N: the hint says a key is read as an item token, never as a position
    ids.write_text(json.dumps({str(i): ["<a_1>", "<b_2>"] for i in range(200)}))
    rc, err = cli(capsys, *args)
    assert rc == 2 and "The file's keys are the integers 0..199: each key is read as an item token" in err
    assert "Traceback" not in err


def test_sid_file_with_extra_items_may_be_allowed(tiny_dataset, capsys, tmp_path):
    data_path, name = tiny_dataset
    items = sorted({line.split("\t")[1] for line in
                    (open(f"{data_path}/{name}/{name}.inter").read().splitlines()[1:])})
    ids = tmp_path / "extra.index.json"
    ids.write_text(json.dumps({**{t: [f"<a_{i % 4}>", f"<b_{i}>"] for i, t in enumerate(items)},
                               "not-an-item": ["<a_0>", "<b_999>"]}))
    rc = main(["--model=TIGER", f"--dataset={name}", f"--data_path={data_path}", "--sid_tokenizer=external",
               f"--sid_path={ids}", "--sid_allow_extra_items=True", f"--output_dir={tmp_path / 'out'}",
               f"--sid_cache_dir={tmp_path / 'sid'}", "--epochs=1", "--no_tables",
               *(f"--{k}={v}" for k, v in TINY_GENERATIVE.items() if not k.startswith("sid_") and k != "epochs")])
    assert rc == 0 and list((tmp_path / "out" / "runs").rglob("*.json"))


def test_non_finite_loss_is_one_line_and_keeps_the_best_checkpoint(tiny_dataset, capsys, tmp_path):
    data_path, name = tiny_dataset
    args = [f"--{k}={v}" for k, v in TINY_GENERATIVE.items() if k != "epochs"]
    rc, err = cli(capsys, "--model=TIGER", f"--dataset={name}", f"--data_path={data_path}", *args,
                  f"--sid_cache_dir={tmp_path / 'sid'}", "--learning_rate=1e30", "--clip_grad_norm=None",
                  "--weight_decay=0.0", "--epochs=3", f"--output_dir={tmp_path / 'out'}",
                  "--run_id=nan")
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("error: ") and "the best checkpoint so far" in last and "Traceback" not in err
    assert not (tmp_path / "out" / "runs").exists()


def test_early_sid_key_check_leaves_other_dataset_layouts_to_the_loader(tmp_path):
    """No ``<dataset>.inter`` (e.g. RecBole's benchmark_filename splits): the early check steps aside; an
    unreadable ID file is still one SIDFileError."""
    from recbole_ext.sid.external import SIDFileError, check_keys_in_interactions

    ids = tmp_path / "ids.index.json"
    ids.write_text(json.dumps({"i1": ["<a_1>", "<b_2>"]}))
    assert check_keys_in_interactions(ids, tmp_path / "absent.inter", "item_id") is None
    ids.write_text("{not json")
    with pytest.raises(SIDFileError, match=r"cannot read the ID file"):
        check_keys_in_interactions(ids, tmp_path / "absent.inter", "item_id")
