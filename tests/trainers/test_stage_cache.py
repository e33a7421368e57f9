"""Stage cache: chained keys (a changed stage invalidates itself and what follows), atomic files."""

import json

import torch

from recbole_ext.trainers.stage_cache import StageCache, stage_key


def chain(configs: dict, data: str = "d") -> dict:
    keys, previous = {}, None
    for name in ("pt", "sft", "rl"):
        previous = keys[name] = stage_key(name, configs.get(name, {}), previous, data)
    return keys


def test_changing_a_stage_changes_it_and_later_keys_only():
    base = chain({"pt": {"pt_lr": 1e-3}, "sft": {"sft_rounds": 3, "reasoning_len": 4}, "rl": {"rl_lr": 1e-5}})
    sft_changed = chain(
        {"pt": {"pt_lr": 1e-3}, "sft": {"sft_rounds": 2, "reasoning_len": 4}, "rl": {"rl_lr": 1e-5}})
    assert sft_changed["pt"] == base["pt"]
    assert sft_changed["sft"] != base["sft"] and sft_changed["rl"] != base["rl"]
    rl_changed = chain({"pt": {"pt_lr": 1e-3}, "sft": {"sft_rounds": 3, "reasoning_len": 4}, "rl": {"rl_lr": 2e-5}})
    assert (rl_changed["pt"], rl_changed["sft"]) == (base["pt"], base["sft"]) and rl_changed["rl"] != base["rl"]
    other_data = chain({"pt": {"pt_lr": 1e-3}, "sft": {"sft_rounds": 3, "reasoning_len": 4}, "rl": {"rl_lr": 1e-5}}, "e")
    assert all(other_data[s] != base[s] for s in base)


def test_key_ignores_dict_order_and_is_stable():
    a = stage_key("sft", {"x": 1, "w": {"b": 2, "a": 1}}, "p", "d")
    b = stage_key("sft", {"w": {"a": 1, "b": 2}, "x": 1}, "p", "d")
    assert a == b and len(a) == 20
    assert stage_key("sft", {"x": 1}, "p", "d") != stage_key("rl", {"x": 1}, "p", "d")


def test_save_load_round_trip_and_weights_only(tmp_path):
    cache = StageCache(tmp_path)
    state = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(2, dtype=torch.long)}
    assert cache.load("pt", "k1") is None
    path = cache.save("pt", "k1", state, {"valid": {"ndcg@10": 0.5}})
    loaded, meta = cache.load("pt", "k1")
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])
    assert meta["valid"] == {"ndcg@10": 0.5} and meta["stage"] == "pt" and meta["key"] == "k1"
    assert torch.load(path, weights_only=True).keys() == state.keys()  # a later process can read it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pt-k1.json", "pt-k1.pt"]  # no temp files left


def test_broken_or_partial_entries_are_misses(tmp_path):
    cache = StageCache(tmp_path)
    cache.save("sft", "k", {"w": torch.zeros(1)}, {})
    (tmp_path / "sft-k.pt").write_bytes(b"garbage")
    assert cache.load("sft", "k") is None
    cache.save("rl", "k", {"w": torch.zeros(1)}, {})
    (tmp_path / "rl-k.json").unlink()  # weights without their description: incomplete write
    assert cache.load("rl", "k") is None
    json.loads((tmp_path / "sft-k.json").read_text())


def test_disabled_cache_never_hits_or_writes(tmp_path):
    cache = StageCache(tmp_path / "c", enabled=False)
    assert cache.save("pt", "k", {"w": torch.zeros(1)}, {}) is None
    assert cache.load("pt", "k") is None and not (tmp_path / "c").exists()
