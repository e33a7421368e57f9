"""Provenance: the git state names the exact code (commit + uncommitted changes), versions name the libraries."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import pytest

from recbole_ext.provenance import LIBRARIES, distribution_version, git_state, run_provenance, versions

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _repo(root: Path) -> Path:
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "model.py").write_text("LR = 1e-3\n")
    (root / ".gitignore").write_text("*.log\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    return root


@needs_git
def test_git_state_names_the_commit_and_hashes_every_uncommitted_change(tmp_path):
    a, b = _repo(tmp_path / "a"), _repo(tmp_path / "b")
    clean = git_state(a)
    assert clean == {"commit": _git(a, "rev-parse", "HEAD"), "dirty": False, "diff_sha256": None, "changed_files": []}

    (a / "model.py").write_text("LR = 2e-3\n")
    edited = git_state(a)
    assert edited["dirty"] is True and edited["changed_files"] == ["model.py"] and len(edited["diff_sha256"]) == 64
    (b / "model.py").write_text("LR = 2e-3\n")
    assert git_state(b)["diff_sha256"] == edited["diff_sha256"]  # the same change in another checkout
    (b / "model.py").write_text("LR = 3e-3\n")
    assert git_state(b)["diff_sha256"] != edited["diff_sha256"]  # another change

    (a / "run.log").write_text("ignored by git\n")
    assert git_state(a) == edited  # ignored files are not code
    (a / "new_module.py").write_text("X = 1\n")  # an untracked module the run imports
    with_new = git_state(a)
    assert with_new["changed_files"] == ["model.py", "new_module.py"] and with_new["diff_sha256"] != edited["diff_sha256"]
    (a / "new_module.py").write_text("X = 2\n")
    assert git_state(a)["diff_sha256"] != with_new["diff_sha256"]  # its content counts, not only its name

    (a / "new_module.py").unlink()
    (a / "model.py").write_text("LR = 1e-3\n")
    assert git_state(a) == clean


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "diff_sha256": None, "changed_files": None}


def test_versions_are_the_installed_libraries():
    import numpy
    import pandas
    import scipy
    import torch

    v = versions({"commit": "abc", "dirty": True})
    assert v["git_commit"] == "abc-dirty" and versions({"commit": None, "dirty": None})["git_commit"] == "unknown"
    assert (v["numpy"], v["pandas"], v["scipy"]) == (numpy.__version__, pandas.__version__, scipy.__version__)
    assert v["torch"] == torch.__version__ and v["recbole"] == importlib.metadata.version("recbole")
    for key in ("transformers", "sentence_transformers", "faiss"):
        assert key in LIBRARIES and v[key] == distribution_version(LIBRARIES[key])
    assert v["transformers"] == importlib.metadata.version("transformers")
    assert v["cuda"] == torch.version.cuda
    if not torch.cuda.is_available():
        assert v["gpus"] == [] and v["nvidia_driver"] is None and v["cudnn"] is None


def test_distribution_version_names_a_substitute_build():
    assert distribution_version(("no-such-dist-x",)) is None
    numpy_version = importlib.metadata.version("numpy")
    assert distribution_version(("numpy",)) == numpy_version
    assert distribution_version(("no-such-dist-x", "numpy")) == f"numpy {numpy_version}"


def test_run_provenance_keeps_the_command_and_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_provenance(["run_benchmark.py", "--model=SASRec"], git={"commit": "c"})
    assert p["argv"] == ["run_benchmark.py", "--model=SASRec"] and p["cwd"] == str(tmp_path) and p["git"] == {"commit": "c"}


def test_benchmark_output_header_names_command_commit_and_versions():
    from recbole_ext.provenance import git_state, output_header

    lines = output_header(["bench.py", "--batch", "8"])
    assert lines[0] == "# command: bench.py --batch 8" and lines[1].startswith("# cwd: ")
    commit = git_state().get("commit") or "unknown"
    assert lines[2].startswith(f"# commit: {commit}")
    assert lines[3].startswith("# versions: python ") and " torch " in lines[3]
