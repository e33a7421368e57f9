"""The issue-11 GPU suite: 4 tokenizers x 3 seeds under the reference recipe, which it repeats from
properties/presets/scientific2018_reference.yaml (kept equal here); its script parses."""

import subprocess
from pathlib import Path

import yaml

from recbole_ext.benchmark.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_issue11_tiger_tokenizers.yaml"
PRESET = ROOT / "properties" / "presets" / "scientific2018_reference.yaml"
SCRIPT = ROOT / "benchmarks" / "gpu" / "issue11_tiger_tokenizers.sh"


def test_cells_and_recipe():
    suite = load_suite(SUITE, {"epochs": 20, "train_time_budget_s": 330})  # the script's command-line overrides
    assert len(suite.cells) == 12 and {c.seed for c in suite.cells} == {2020, 2021, 2022}
    tokenizers = {(c.overrides["sid_tokenizer"], Path(c.overrides.get("sid_path") or "").name,
                   c.overrides.get("sid_levels"), c.overrides.get("sid_collision")) for c in suite.cells}
    assert tokenizers == {("external", "scientific2018.rqvae_zcr.index.json", None, None),
                          ("external", "scientific2018.rkmeans_zcr.index.json", None, None),
                          ("rqvae", "", 4, "reassign"), ("random", "", 4, "reassign")}
    preset = yaml.safe_load(PRESET.read_text())
    suite_recipe = yaml.safe_load(SUITE.read_text())["overrides"]
    assert {k: suite_recipe[k] for k in preset} == preset  # the suite runs the preset's recipe ...
    assert set(suite_recipe) - set(preset) == {"eval_batch_size"}  # ... plus evaluation speed only
    cell = suite.cells[0]
    assert (cell.overrides["epochs"], cell.overrides["train_time_budget_s"]) == (20, 330)  # the script's caps win


def test_script_parses_and_needs_out():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "set OUT" in done.stderr
