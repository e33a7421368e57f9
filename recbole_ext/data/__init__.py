"""Datasets: catalog of known sources, download, and conversion to RecBole atomic files.

The runner calls :func:`ensure_dataset` before building RecBole's ``Config`` and passes the
returned folder as ``data_path``. ``python -m recbole_ext.data prepare NAME`` does the same from
the command line. Importing this package imports neither RecBole nor torch.
"""

from .catalog import CATALOG, DatasetSpec, DatasetStats, get_spec
from .download import ChecksumError, DownloadError
from .prepare import (
    PreparedDataset,
    compute_stats,
    default_cache_dir,
    ensure_dataset,
    k_core_filter,
    prepare_dataset,
)

__all__ = [
    "CATALOG",
    "ChecksumError",
    "DatasetSpec",
    "DatasetStats",
    "DownloadError",
    "PreparedDataset",
    "compute_stats",
    "default_cache_dir",
    "ensure_dataset",
    "get_spec",
    "k_core_filter",
    "prepare_dataset",
]
