"""The offline scientific2018 copy: materialised into the cache, statistics as in its README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from recbole_ext.data import ensure_dataset, prepare_dataset
from recbole_ext.text import load_item_texts

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
pytestmark = pytest.mark.skipif(
    not (SHARED / "scientific2018" / "scientific2018.inter.gz").exists(),
    reason=f"offline datasets not available at {SHARED} (see shared/datasets/README.md)",
)


def test_statistics_match_readme(isolated_cache, monkeypatch):
    monkeypatch.setenv("RECBOLE_EXT_DATA", str(SHARED))  # the env var works like --data_path
    result = prepare_dataset("scientific2018")
    assert (result.stats.users, result.stats.items, result.stats.actions) == (8_317, 4_344, 58_492)
    assert round(result.stats.mean_length, 2) == 7.03
    assert result.matches_expected is True
    assert result.folder == isolated_cache / "datasets" / "scientific2018"
    assert result.data_path == str(isolated_cache / "datasets")
    for ext in ("inter", "item"):  # plain atomic files in the cache, not in the shared folder
        assert (result.folder / f"scientific2018.{ext}").is_file()
    assert not (SHARED / "scientific2018" / "scientific2018.inter").exists()
    mtime = (result.folder / "scientific2018.inter").stat().st_mtime_ns
    assert ensure_dataset("scientific2018", str(SHARED)) == result.data_path
    assert (result.folder / "scientific2018.inter").stat().st_mtime_ns == mtime  # reused


def test_item_texts(isolated_cache):
    texts = load_item_texts("scientific2018", str(SHARED))
    assert len(texts) == 4_344
    assert all(t.startswith("Title: ") for t in texts.values())  # every item has a title
    assert texts["0"].startswith("Title: SUPCO SPP6 Relay/Capacitor Hard Start Kit")
    assert "; Brand: Sealed Unit Parts Co., Inc.; Categories: Industrial & Scientific," in texts["0"]


def test_missing_offline_copy_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="RECBOLE_EXT_DATA"):
        ensure_dataset("scientific2018", str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("recbole_ext.config") is None, reason="recbole_ext.config absent")
def test_recbole_loads_prepared_files(isolated_cache):
    from recbole_ext.config import ExtConfig
    from recbole_ext.registry import resolve

    from recbole.data import create_dataset

    data_path = ensure_dataset("scientific2018", str(SHARED))
    config = ExtConfig(resolve("GRU4Rec"), "scientific2018", config_dict={"data_path": data_path})
    dataset = create_dataset(config)
    assert dataset.user_num - 1 == 8_317 and dataset.item_num - 1 == 4_344  # minus [PAD]
    assert dataset.inter_num == 58_492
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
