"""Shared test fixtures: tiny synthetic RecBole datasets, CUDA marker, one thread for torch."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def write_sequences(root: Path, name: str, n_users: int = 40, n_items: int = 30, min_len: int = 5,
                    max_len: int = 9, seed: int = 0) -> Path:
    """Write ``root/name/name.inter`` with random user sequences; returns ``root``."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        length = rng.randint(min_len, max_len)
        for step in range(length):
            lines.append(f"u{user}\ti{rng.randrange(n_items)}\t{step + 1}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> tuple[str, str]:
    """(data_path, dataset name) of a 40-user synthetic sequential dataset."""
    write_sequences(tmp_path / "data", "tiny")
    return str(tmp_path / "data"), "tiny"
