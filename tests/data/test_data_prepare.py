"""Download-and-convert path for the Amazon 2023 and 2014 formats, on miniature files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recbole_ext.data import DownloadError, ensure_dataset, prepare_dataset
from recbole_ext.data.__main__ import main as cli_main
from recbole_ext.data.catalog import get_spec, resolve_url
from recbole_ext.data.download import ChecksumError
from recbole_ext.text import load_item_texts, read_item_fields

# (dataset, files builder attribute, category)
CASES = [
    ("instruments", "amazon2023_files", "Musical_Instruments"),
    ("beauty", "amazon2014_files", "Beauty"),
]


def _serve(server, mini, builder: str, category: str) -> dict[str, bytes]:
    files = getattr(mini, builder)(category)
    server.files.update(files)
    return files


def _read_inter(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.inter", sep="\t", dtype=str)


@pytest.mark.parametrize(("name", "builder", "category"), CASES)
def test_download_and_convert(server, mini, isolated_cache, caplog, name, builder, category):
    _serve(server, mini, builder, category)
    with caplog.at_level(logging.INFO, logger="recbole_ext.data"):
        result = prepare_dataset(name, base_url=server.url)
    assert result.stats.as_dict()["users"] == mini.stats["users"]
    assert (result.stats.users, result.stats.items, result.stats.actions) == (6, 5, 30)
    assert result.stats.mean_length == 5.0
    assert result.stats.sparsity == 0.0  # every core user saw every core item
    assert result.matches_expected is False  # the paper's numbers are not the miniature's
    assert "STATISTICS MISMATCH" in caplog.text
    assert result.data_path == str(isolated_cache / "datasets")
    assert result.folder == isolated_cache / "datasets" / name

    inter = _read_inter(result.folder, name)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert set(inter["user_id:token"]) == {f"u{u}" for u in range(6)}
    # odd users saw items in reverse order: sequences are sorted by time
    assert list(inter[inter["user_id:token"] == "u1"]["item_id:token"]) == ["i4", "i3", "i2", "i1", "i0"]
    assert float(inter["timestamp:float"].iloc[0]) == 1_600_000_000.0  # seconds, also for 2023 ms

    items = read_item_fields(result.folder / f"{name}.item")
    assert sorted(items) == [f"i{i}" for i in range(5)]
    assert items["i0"]["title"] == "Item 0 with tabs and newline"
    assert items["i2"]["brand"] == "Brand2"
    assert items["i2"]["categories"].startswith("Cat, Sub0")
    texts = load_item_texts(name)
    assert texts["i2"].startswith("Title: Item 2; Brand: Brand2; Categories: Cat, Sub0")
    assert "Description: Description of item 2." in texts["i2"]

    marker = json.loads((result.folder / "prepared.json").read_text())
    assert marker["stats"]["actions"] == 30
    raw = isolated_cache / "raw" / name
    assert (raw / "SHA256SUMS").read_text().count("\n") == 2
    assert mini.leftovers(isolated_cache) == []

    # second call: prepared files are reused, nothing is requested
    count = len(server.requests)
    assert ensure_dataset(name, base_url=server.url) == result.data_path
    assert len(server.requests) == count


def test_url_override_by_environment(server, mini, monkeypatch):
    _serve(server, mini, "amazon2023_files", "Industrial_and_Scientific")
    monkeypatch.setenv("RECBOLE_EXT_URL_AMAZON2023", server.url)
    spec = get_spec("scientific")
    assert resolve_url(spec, spec.files[0]).startswith(server.url)
    assert prepare_dataset("scientific").stats.actions == 30


def test_official_urls():
    spec = get_spec("instruments")
    assert [resolve_url(spec, f) for f in spec.files] == [
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/benchmark/5core/"
        "rating_only/Musical_Instruments.csv.gz",
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw/meta_categories/"
        "meta_Musical_Instruments.jsonl.gz",
    ]
    spec = get_spec("toys")
    assert resolve_url(spec, spec.files[0]) == (
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/" "reviews_Toys_and_Games_5.json.gz"
    )


@pytest.mark.parametrize("mode", ["html", "truncate", "404"])
def test_failed_download_leaves_no_dataset(server, mini, isolated_cache, mode):
    files = _serve(server, mini, "amazon2023_files", "Musical_Instruments")
    meta_path = next(p for p in files if "meta_" in p)
    server.modes[meta_path] = mode
    with pytest.raises(DownloadError):
        prepare_dataset("instruments", base_url=server.url)
    assert not (isolated_cache / "datasets" / "instruments").exists()
    assert not (isolated_cache / "raw" / "instruments" / Path(meta_path).name).exists()
    assert mini.leftovers(isolated_cache) == []


def test_checksum_mismatch_leaves_no_dataset(server, mini, isolated_cache):
    files = _serve(server, mini, "amazon2014_files", "Beauty")
    prepare_dataset("beauty", base_url=server.url)
    meta_path = next(p for p in files if p.startswith("meta_"))
    (isolated_cache / "raw" / "beauty" / meta_path).unlink()
    server.files[meta_path] = mini.gz("{'asin': 'i0', 'title': 'changed upstream'}\n")
    folder = isolated_cache / "datasets" / "beauty"
    before = (folder / "prepared.json").read_text()
    with pytest.raises(ChecksumError):
        prepare_dataset("beauty", base_url=server.url, force=True)
    # a failed rebuild leaves the previous complete dataset untouched ...
    assert (folder / "prepared.json").read_text() == before
    shutil.rmtree(folder)
    with pytest.raises(ChecksumError):
        prepare_dataset("beauty", base_url=server.url)
    # ... and a failed first build leaves no dataset at all
    assert not folder.exists()
    assert not (isolated_cache / "raw" / "beauty" / meta_path).exists()
    assert mini.leftovers(isolated_cache) == []


def test_raw_dir_without_network(mini, tmp_path, isolated_cache):
    raw = tmp_path / "firewalled"
    raw.mkdir()
    for path, data in mini.amazon2014_files("Toys_and_Games").items():
        (raw / path).write_bytes(data)
    result = prepare_dataset("toys", download=False, raw_dir=raw)
    assert (result.stats.users, result.stats.items, result.stats.actions) == (6, 5, 30)
    assert (raw / "SHA256SUMS").exists()  # checksums recorded for later verification


def test_missing_raw_files_without_download(isolated_cache):
    with pytest.raises(FileNotFoundError, match="meta_Sports_and_Outdoors.json.gz"):
        ensure_dataset("sports", download=False)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError, match="instruments"):
        ensure_dataset("no-such-dataset")


def test_plain_atomic_files_in_data_path_are_used_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mine" / "mine"
    folder.mkdir(parents=True)
    (folder / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\na\tx\t1\na\ty\t2\nb\tx\t1\n")
    result = prepare_dataset("mine", "mine")  # relative paths come back absolute
    assert result.data_path == str(tmp_path.resolve() / "mine")
    assert (result.stats.users, result.stats.items, result.stats.actions) == (2, 2, 3)
    assert result.stats.sparsity == pytest.approx(0.25)
    assert result.matches_expected is None


def test_cli_prepare(server, mini, isolated_cache):
    _serve(server, mini, "amazon2014_files", "Sports_and_Outdoors")
    assert cli_main(["prepare", "sports", "--base_url", server.url]) == 0
    assert (isolated_cache / "datasets" / "sports" / "sports.inter").exists()
    assert cli_main(["prepare", "sports", "--no_download", "--base_url", "http://127.0.0.1:9"]) == 0
    assert cli_main(["prepare", "no-such-dataset"]) == 1
