"""Suite parsing, cell expansion, stable ids and error messages (file + line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recbole_ext.benchmark.launch import default_command
from recbole_ext.benchmark.suite import SuiteError, available_suites, cell_id, load_suite

SUITE = """\
name: demo
datasets: [ml-100k, scientific]
seeds: [1, 2]
overrides: {epochs: 2}
dataset_overrides:
  scientific: {train_batch_size: 512}
models:
  - SASRec
  - model: STREAMRec
    label: "STREAMRec (l={reasoning_len})"
    datasets: [scientific]
    seeds: [7]
    sweep: {reasoning_len: [0, 2, 4]}
  - model: TIGER
    group: Traditional
    variants:
      - {name: rqvae, overrides: {sid_tokenizer: rqvae}}
      - {name: random, label: "TIGER random", overrides: {sid_tokenizer: random, epochs: 1}}
table: {reference: TIGER, digits: 3}
"""


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expansion_counts_labels_and_precedence(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, SUITE))
    assert s.name == "demo"
    assert len(s.cells) == 4 + 3 + 8  # SASRec 2x2; STREAMRec 3 l x 1 ds x 1 seed; TIGER 2x2x2
    sas = [c for c in s.cells if c.model == "SASRec" and c.dataset == "scientific"]
    assert sas[0].overrides == {"epochs": 2, "train_batch_size": 512}
    assert sas[0].group == "Traditional"
    stream = [c for c in s.cells if c.model == "STREAMRec"]
    assert [c.label for c in stream] == [f"STREAMRec (l={n})" for n in (0, 2, 4)]
    assert {c.seed for c in stream} == {7} and stream[0].group == "Reasoning"  # the registry's group
    tiger = [c for c in s.cells if c.model == "TIGER" and c.dataset == "ml-100k" and c.seed == 1]
    assert [(c.label, c.variant, c.group) for c in tiger] == [
        ("TIGER (rqvae)", "rqvae", "Traditional"), ("TIGER random", "random", "Traditional")]
    assert tiger[1].overrides == {"epochs": 1, "sid_tokenizer": "random"}
    assert len({c.id for c in s.cells}) == len(s.cells)
    assert s.manifest()["table"] == {"reference": "TIGER", "digits": 3,
                                     "datasets": ["ml-100k", "scientific"]}


def test_extra_overrides_win_and_change_ids(tmp_path: Path) -> None:
    path = write(tmp_path, SUITE)
    plain = load_suite(path)
    fast = load_suite(path, {"epochs": 1})
    assert all(c.overrides["epochs"] == 1 for c in fast.cells)
    changed = [(a.id, b.id) for a, b in zip(plain.cells, fast.cells)]
    # Only the cells whose overrides changed get new ids (TIGER random had epochs: 1 already).
    assert [x == y for x, y in changed] == [a.overrides == b.overrides
                                            for a, b in zip(plain.cells, fast.cells)]
    assert sum(x == y for x, y in changed) == 4


def test_command_line_strings_match_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, SUITE)
    from_cli = load_suite(path, {"epochs": "1", "learning_rate": "1e-3", "topk": "[5, 10]",
                                 "state": "INFO"})
    from_py = load_suite(path, {"epochs": 1, "learning_rate": 0.001, "topk": [5, 10],
                                "state": "INFO"})
    assert [c.id for c in from_cli.cells] == [c.id for c in from_py.cells]


def test_ids_stable_across_processes_and_order(tmp_path: Path) -> None:
    a = cell_id("SASRec", "ml-100k", 2020, {"epochs": 2, "learning_rate": 0.001})
    b = cell_id("SASRec", "ml-100k", 2020, {"learning_rate": 0.001, "epochs": 2})
    assert a == b
    assert a == "SASRec-ml-100k-s2020-" + a.rsplit("-", 1)[1]
    code = ("from recbole_ext.benchmark.suite import cell_id; "
            "print(cell_id('SASRec', 'ml-100k', 2020, {'learning_rate': 0.001, 'epochs': 2}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                           cwd=Path(__file__).parents[2]).stdout.strip()
    assert other == a
    # Reordering the models and keys in the file gives the same ids.
    reordered = SUITE.replace("  - SASRec\n", "").replace(
        "models:\n", "models:\n  - SASRec\n").replace(
        "overrides: {epochs: 2}", "overrides:\n  epochs: 2")
    s1 = load_suite(write(tmp_path, SUITE))
    s2 = load_suite(write(tmp_path, reordered, "other.yaml"))
    assert sorted(c.id for c in s1.cells) == sorted(c.id for c in s2.cells)


def test_pinned_cell_id() -> None:
    """Ids must not change between versions of this code either, or reruns would not resume."""
    assert cell_id("SASRec", "ml-100k", 2020, {"epochs": 2}) == "SASRec-ml-100k-s2020-3b42fb6407d7"


@pytest.mark.parametrize("text, line, words", [
    ("datasets: [a]\nmodels: [SASRec]\nbogus: 1\n", 3, "unknown key 'bogus'"),
    ("datasets: [a]\nmodels:\n  - model: SASRec\n    epochs: 3\n", 4, "unknown key 'epochs'"),
    ("datasets: [a]\nmodels: [SASRec\n", 3, "invalid YAML"),
    ("datasets: [a]\n", 1, "missing required key 'models'"),
    ("datasets: [a]\nmodels: [SASRec]\ntable:\n  reference: TIGER\n  colour: red\n", 5,
     "unknown table keys"),
    ("datasets: [a]\nmodels:\n  - SASRec\n  - 42\n", 4, "model name or a mapping"),
    ("datasets: [a]\nseeds: [1, x]\nmodels: [SASRec]\n", 2, "wrong type"),
    ("datasets: [a]\nmodels: [SASRec, SASRec]\n", 2, "duplicate cell"),
    ("datasets: [a]\nmodels:\n  - model: M\n    sweep: {l: 3}\n", 4, "non-empty list"),
    ("datasets: [a]\ndatasets: [b]\nmodels: [M]\n", 2, "duplicate key"),
])
def test_malformed_suites_name_file_and_line(tmp_path: Path, text: str, line: int,
                                             words: str) -> None:
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert words in msg


def test_unknown_suite_lists_available() -> None:
    with pytest.raises(SuiteError, match="unknown suite 'nope'.*quickstart"):
        load_suite("nope")


def test_shipped_suites_parse_and_take_any_model() -> None:
    names = available_suites()
    for required in ("quickstart", "paper_table2", "ablation_reasoning_length",
                     "ablation_tokenizer", "efficiency"):
        assert required in names
    for name in names:
        assert load_suite(name).cells, name
    quick = load_suite("quickstart")
    from recbole_ext import registry

    # the README's main job runs every registered method (RecBole's four baselines and every plugin)
    assert {c.model for c in quick.cells} >= {"Caser", "GRU4Rec", "SASRec", "BERT4Rec", *registry.plugin_names()}
    assert {c.dataset for c in quick.cells} == {"ml-100k"}
    ab = load_suite("ablation_reasoning_length")
    assert sorted({c.overrides["reasoning_len"] for c in ab.cells}) == [0, 2, 4, 6, 8]
    tok = load_suite("ablation_tokenizer")
    assert {c.overrides["sid_tokenizer"] for c in tok.cells} == {"rqvae", "random"}
    p2 = load_suite("paper_table2")
    assert {c.model for c in p2.cells} == {"Caser", "GRU4Rec", "SASRec", "BERT4Rec", "TIGER",
                                           "STREAMRec"}


def test_default_command(tmp_path: Path) -> None:
    s = load_suite(write(tmp_path, SUITE))
    c = [c for c in s.cells if c.model == "SASRec" and c.dataset == "scientific"][0]
    cmd = default_command(c, tmp_path)
    assert cmd[0] == sys.executable and cmd[1].endswith("run_benchmark.py")
    assert cmd[2:] == ["--model=SASRec", "--dataset=scientific", f"--seed={c.seed}",
                       f"--output_dir={tmp_path}", f"--run_id={c.id}", "--no_tables", "--epochs=2",
                       "--train_batch_size=512"]
