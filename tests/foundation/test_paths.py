"""Path options resolve against the directory the command ran from (not the artifacts folder), ~ expanded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from recbole_ext.config import HUB_OR_PATH_KEYS, PATH_KEYS, resolve_paths
from synthetic_data import TINY_GENERATIVE, write_sequences

ROOT = Path(__file__).resolve().parents[2]


def test_resolve_paths_hand_cases(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    base = tmp_path / "work"
    (base / "my-encoder").mkdir(parents=True)
    values = {
        "sid_path": "ids.index.json",
        "data_path": "../data/",
        "sid_cache_dir": "~/sid",
        "checkpoint_dir": "/abs/ckpt",
        "stage_cache_dir": "None",  # RecBole's command line reads it as None
        "dataloaders_save_path": Path("dl"),  # the Python API may pass Path objects
        "dataset_save_path": None,
        "text_encoder": "my-encoder",  # an existing folder here
        "epochs": "3",
        "model_dir": "not/a/path/key",
    }
    out = resolve_paths(values, base)
    assert out == {
        "sid_path": str(base / "ids.index.json"),
        "data_path": str(tmp_path / "data"),
        "sid_cache_dir": str(home / "sid"),
        "checkpoint_dir": "/abs/ckpt",
        "stage_cache_dir": "None",
        "dataloaders_save_path": str(base / "dl"),
        "dataset_save_path": None,
        "text_encoder": str(base / "my-encoder"),
        "epochs": "3",
        "model_dir": "not/a/path/key",
    }
    assert values["sid_path"] == "ids.index.json"  # the input is not changed


def test_text_encoder_hub_name_stays_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    resolve = lambda v: resolve_paths({"text_encoder": v}, tmp_path)["text_encoder"]  # noqa: E731
    assert resolve("sentence-transformers/sentence-t5-base") == "sentence-transformers/sentence-t5-base"
    assert resolve("./st5") == str(tmp_path / "st5")  # written as a path, even before it exists
    assert resolve("~/models/st5") == str(tmp_path / "home" / "models" / "st5")


def test_every_path_key_resolves_and_default_base_is_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = resolve_paths({key: "./sub/x" for key in PATH_KEYS})
    assert out == {key: str(tmp_path / "sub" / "x") for key in PATH_KEYS}
    assert set(HUB_OR_PATH_KEYS) <= set(PATH_KEYS)


# ---------------------------------------------------------------------------------------- end to end


def _external_index(data_root: Path, name: str, target: Path) -> dict[str, list[int]]:
    """Write a 2-level LC-Rec ``*.index.json`` for the dataset's items; returns token -> codes."""
    lines = (data_root / name / f"{name}.inter").read_text().splitlines()[1:]
    tokens = sorted({line.split("\t")[1] for line in lines}, key=lambda t: int(t[1:]))
    codes = {t: [int(t[1:]) % 5, int(t[1:]) // 5] for t in tokens}  # unique: i0 .. i29
    target.write_text(json.dumps({t: [f"<a_{a}>", f"<b_{b}>"] for t, (a, b) in codes.items()}))
    return codes


def _assert_run_used(record: dict, codes: dict[str, list[int]], cache: Path) -> None:
    expected_sizes = [max(c[level] for c in codes.values()) + 1 for level in (0, 1)]
    sid = record["extra"]["sid"]
    assert sid["method"] == "external" and sid["codebook_sizes"] == expected_sizes
    from recbole_ext.sid.cache import SemanticIDs

    (cached,) = cache.glob("sid-external-*.pt")  # the cache folder of the cwd
    ids = SemanticIDs.load(cached)
    assert ids.codes_for_tokens(list(codes)).tolist() == list(codes.values())


def test_run_resolves_relative_paths_against_the_cwd(tmp_path, monkeypatch):
    from recbole_ext.runner import run

    work = tmp_path / "work"
    write_sequences(work / "data", "tiny")
    codes = _external_index(work / "data", "tiny", work / "ids.index.json")
    monkeypatch.chdir(work)
    overrides = {**TINY_GENERATIVE, "sid_tokenizer": "external", "sid_path": "ids.index.json",
                 "data_path": "data", "sid_cache_dir": "sid"}
    record = run("TIGER", "tiny", overrides=overrides, output_dir="out", run_id="rel")

    assert record["config"]["sid_path"] == str(work / "ids.index.json")
    assert record["config"]["data_path"] == str(work / "data" / "tiny")  # RecBole appends the dataset
    _assert_run_used(record, codes, work / "sid")
    assert (work / "out" / "runs" / "tiny" / "TIGER" / "rel.json").is_file()
    assert not (work / "out" / "artifacts" / "tiny" / "TIGER" / "rel" / "sid").exists()


def test_cli_expands_home_in_config_file_paths(tmp_path):
    """Through run_benchmark.py: ~ in a --config_files YAML and in --output_dir is $HOME; the file's
    data_path and checkpoint_dir are used (not the runner's defaults)."""
    home, work = tmp_path / "home", tmp_path / "work"
    write_sequences(home / "data", "tiny")
    codes = _external_index(home / "data", "tiny", home / "ids.index.json")
    work.mkdir()
    (work / "paths.yaml").write_text(yaml.safe_dump({
        **TINY_GENERATIVE, "sid_tokenizer": "external", "sid_path": "~/ids.index.json",
        "data_path": "~/data", "sid_cache_dir": "~/sid", "checkpoint_dir": "~/ckpt",
    }))
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_benchmark.py"), "--model=TIGER", "--dataset=tiny",
         "--config_files=paths.yaml", "--output_dir=~/out", "--run_id=home", "--no_tables"],
        capture_output=True, text=True, cwd=work, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((home / "out" / "runs" / "tiny" / "TIGER" / "home.json").read_text())
    assert record["config"]["sid_path"] == str(home / "ids.index.json")
    _assert_run_used(record, codes, home / "sid")
    assert record["config"]["checkpoint_dir"] == str(home / "ckpt") and list((home / "ckpt").glob("TIGER-*.pth"))
    assert sorted(p.name for p in work.iterdir()) == ["paths.yaml"]  # nothing named ~ in the cwd


def test_cli_tables_and_suites_get_the_expanded_output_dir(tmp_path, monkeypatch):
    from recbole_ext import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    seen = []
    monkeypatch.setattr(cli, "_build_tables", lambda output_dir, suite=None: seen.append(output_dir) or 0)
    monkeypatch.setattr(cli, "_run_suite", lambda own, overrides, output_dir: seen.append(output_dir) or 0)
    assert cli.main(["--tables", "--output_dir=~/out"]) == 0
    assert cli.main(["--suite=quickstart", "--output_dir=~/out"]) == 0
    assert seen == [str(tmp_path / "out")] * 2
