"""Known datasets: name -> where the raw files come from and what the result should look like.

Each entry is a :class:`DatasetSpec`. Download URLs are ``base_url + "/" + path``; the base URL of
a source can be overridden per call (``base_url=``) or by an environment variable
(``RECBOLE_EXT_URL_AMAZON2023``, ``RECBOLE_EXT_URL_AMAZON2014``), e.g. for a mirror or for the
loopback server used by the tests.

Sources
- ``amazon2023``: Amazon Reviews 2023 (Hou et al., 2024), official 5-core ``rating_only`` CSVs
  (``user_id,parent_asin,rating,timestamp`` with millisecond timestamps) and per-category item
  metadata JSONL (``title, features, description, store, categories, parent_asin``).
- ``amazon2014``: Amazon 2014 (McAuley et al.), 5-core review JSON lines
  (``reviewerID, asin, unixReviewTime``) and python-literal metadata lines
  (``asin, title, brand, categories, description``), as used by TIGER.
- ``offline``: RecBole atomic files (plain or gzip'd) already on disk under the data path.
- ``recbole``: a dataset shipped inside RecBole's wheel (ml-100k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "DatasetStats",
    "RawFile",
    "DatasetSpec",
    "CATALOG",
    "SOURCE_BASE_URLS",
    "get_spec",
    "resolve_url",
]


@dataclass(frozen=True)
class DatasetStats:
    """Size of a sequential dataset (one sequence per user)."""

    users: int
    items: int
    actions: int

    @property
    def mean_length(self) -> float:
        """Mean number of actions per user."""
        return self.actions / self.users if self.users else 0.0

    @property
    def sparsity(self) -> float:
        """1 - density of the user x item matrix."""
        cells = self.users * self.items
        return 1.0 - self.actions / cells if cells else 1.0

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for logging, JSON and the runner's records)."""
        return {
            "users": self.users,
            "items": self.items,
            "actions": self.actions,
            "mean_length": round(self.mean_length, 4),
            "sparsity": round(self.sparsity, 6),
        }


@dataclass(frozen=True)
class RawFile:
    """One raw file: its role (``inter`` or ``meta``) and its path relative to the source base URL."""

    role: str
    path: str
    sha256: str | None = None  # pinned checksum when known; otherwise recorded on first download

    @property
    def filename(self) -> str:
        """Local file name (last path component)."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """How to obtain and prepare one dataset."""

    name: str
    source: str  # amazon2023 | amazon2014 | offline | recbole
    category: str = ""
    files: tuple[RawFile, ...] = ()
    k_core: int | None = None  # iterative k-core filter applied after loading (None: none)
    expected: DatasetStats | None = None  # published statistics to compare against
    expected_ref: str = ""
    text_kind: str = "amazon"  # template family used by recbole_ext.text
    notes: str = ""


#: Official base URLs per source (overridable, see :func:`resolve_url`).
SOURCE_BASE_URLS: dict[str, str] = {
    "amazon2023": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023",
    "amazon2014": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles",
}

#: Environment variables overriding :data:`SOURCE_BASE_URLS`.
SOURCE_URL_ENV: dict[str, str] = {
    "amazon2023": "RECBOLE_EXT_URL_AMAZON2023",
    "amazon2014": "RECBOLE_EXT_URL_AMAZON2014",
}


def _amazon2023(name: str, category: str, expected: DatasetStats) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        source="amazon2023",
        category=category,
        files=(
            RawFile("inter", f"benchmark/5core/rating_only/{category}.csv.gz"),
            RawFile("meta", f"raw/meta_categories/meta_{category}.jsonl.gz"),
        ),
        k_core=5,
        expected=expected,
        expected_ref="STREAM-Rec paper, Table 1 (= Amazon Reviews 2023 5-core)",
    )


def _amazon2014(name: str, category: str, expected: DatasetStats) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        source="amazon2014",
        category=category,
        files=(
            RawFile("inter", f"reviews_{category}_5.json.gz"),
            RawFile("meta", f"meta_{category}.json.gz"),
        ),
        k_core=5,
        expected=expected,
        expected_ref="TIGER paper (Rajput et al., 2023), Table 1",
    )


CATALOG: dict[str, DatasetSpec] = {
    "instruments": _amazon2023("instruments", "Musical_Instruments", DatasetStats(57_439, 24_587, 511_836)),
    "scientific": _amazon2023("scientific", "Industrial_and_Scientific", DatasetStats(50_985, 25_848, 412_947)),
    "beauty": _amazon2014("beauty", "Beauty", DatasetStats(22_363, 12_101, 198_502)),
    "sports": _amazon2014("sports", "Sports_and_Outdoors", DatasetStats(35_598, 18_357, 296_337)),
    "toys": _amazon2014("toys", "Toys_and_Games", DatasetStats(19_412, 11_924, 167_597)),
    "scientific2018": DatasetSpec(
        name="scientific2018",
        source="offline",
        category="Industrial_and_Scientific",
        expected=DatasetStats(8_317, 4_344, 58_492),
        expected_ref="../shared/datasets/README.md",
        notes="timestamps are synthetic (1-based position in the user's sequence)",
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        source="recbole",
        expected=DatasetStats(943, 1_682, 100_000),
        expected_ref="MovieLens 100K",
        text_kind="movielens",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """Return the catalog entry for ``name`` or raise ``KeyError`` listing the known names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(CATALOG))}") from None


def resolve_url(spec: DatasetSpec, raw: RawFile, base_url: str | None = None) -> str:
    """Download URL of ``raw``: ``base_url`` arg > env var > official base URL."""
    base = base_url or os.environ.get(SOURCE_URL_ENV.get(spec.source, ""), "") or SOURCE_BASE_URLS.get(spec.source, "")
    if not base:
        raise ValueError(f"dataset {spec.name!r} ({spec.source}) has no download URL")
    return base.rstrip("/") + "/" + raw.path
