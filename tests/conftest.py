"""Shared test fixtures: tiny synthetic RecBole datasets, CUDA marker, one thread for torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # the package, and shared test helpers (synthetic_data.py)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from synthetic_data import write_sequences  # noqa: E402

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


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> tuple[str, str]:
    """(data_path, dataset name) of a 40-user synthetic sequential dataset."""
    write_sequences(tmp_path / "data", "tiny")
    return str(tmp_path / "data"), "tiny"
