"""Raw files -> RecBole atomic files, with statistics.

Entry point for the runner: :func:`ensure_dataset` returns the ``data_path`` to give RecBole so
that ``<data_path>/<name>/<name>.inter`` (``user_id:token item_id:token timestamp:float``) and
``<name>.item`` (``item_id:token`` + free-text columns) exist.

Where things live
- data path (``data_path=`` or env ``RECBOLE_EXT_DATA``): read-only input. Prepared atomic files
  found there (``<data_path>/<name>/<name>.inter``) are used as they are; gzip'd atomic files
  (``<name>.inter.gz``, e.g. ``../shared/datasets/scientific2018``) are materialised into the
  cache; raw Amazon files found in ``<data_path>/<name>/`` are used instead of downloading.
- cache (``cache_dir=`` or env ``RECBOLE_EXT_CACHE``, default ``~/.cache/recbole_ext``):
  ``raw/<name>/`` downloads with their ``SHA256SUMS``, ``datasets/<name>/`` prepared files plus
  ``prepared.json`` (statistics, source checksums). Never the repository.

Each prepared folder is built in a temporary sibling and renamed into place, so a failure never
leaves a partial dataset.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recbole_ext.locks import exclusive_lock

from .catalog import CATALOG, SOURCE_URL_ENV, DatasetSpec, DatasetStats, get_spec, resolve_url
from .download import DownloadError, download, sha256_file, verify_file
from .readers import (
    ITEM_TEXT_FIELDS,
    read_amazon2014_inter,
    read_amazon2014_meta,
    read_amazon2023_inter,
    read_amazon2023_meta,
)

__all__ = [
    "PreparedDataset",
    "default_cache_dir",
    "recbole_example_dir",
    "k_core_filter",
    "compute_stats",
    "log_stats",
    "write_atomic_files",
    "prepare_dataset",
    "ensure_dataset",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DATA_ENV = "RECBOLE_EXT_DATA"
CACHE_ENV = "RECBOLE_EXT_CACHE"
MARKER = "prepared.json"
INTER_HEADER = ("user_id:token", "item_id:token", "timestamp:float")


@dataclass(frozen=True)
class PreparedDataset:
    """Result of preparing one dataset."""

    name: str
    data_path: str  # give this to RecBole as ``data_path``
    folder: Path  # <data_path>/<name>
    stats: DatasetStats
    matches_expected: bool | None  # None when no published statistics are known


def default_cache_dir() -> Path:
    """``$RECBOLE_EXT_CACHE``, else ``$XDG_CACHE_HOME/recbole_ext``, else ``~/.cache/recbole_ext``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "recbole_ext"


def recbole_example_dir() -> Path:
    """RecBole's embedded ``dataset_example`` folder (holds ml-100k), found without importing it."""
    found = importlib.util.find_spec("recbole")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("recbole is not installed")
    return Path(list(found.submodule_search_locations)[0]) / "dataset_example"


def k_core_filter(inter: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than ``k`` interactions."""
    while True:
        user_counts = inter["user_id"].map(inter["user_id"].value_counts())
        item_counts = inter["item_id"].map(inter["item_id"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return inter
        inter = inter[keep]


def compute_stats(inter: pd.DataFrame) -> DatasetStats:
    """Users, items and actions of an interaction table."""
    return DatasetStats(
        users=int(inter["user_id"].nunique()),
        items=int(inter["item_id"].nunique()),
        actions=int(len(inter)),
    )


def log_stats(name: str, stats: DatasetStats, spec: DatasetSpec | None = None) -> bool | None:
    """Log the statistics table; warn loudly when it differs from the published numbers."""
    logger.info(
        "dataset %s statistics\n"
        "  | users | items | actions | mean length | sparsity |\n"
        "  | %s | %s | %s | %.2f | %.4f%% |",
        name,
        f"{stats.users:,}",
        f"{stats.items:,}",
        f"{stats.actions:,}",
        stats.mean_length,
        100.0 * stats.sparsity,
    )
    expected = spec.expected if spec else None
    if expected is None:
        return None
    got = (stats.users, stats.items, stats.actions)
    want = (expected.users, expected.items, expected.actions)
    if got == want:
        logger.info("dataset %s matches %s", name, spec.expected_ref)
        return True
    bar = "!" * 78
    logger.warning(
        "\n%s\nSTATISTICS MISMATCH for dataset %s\n  got      users %s / items %s / actions %s\n"
        "  expected users %s / items %s / actions %s  (%s)\n"
        "Results will not be comparable with the paper: check the raw files.\n%s",
        bar,
        name,
        *(f"{v:,}" for v in got),
        *(f"{v:,}" for v in want),
        spec.expected_ref,
        bar,
    )
    return False


def write_atomic_files(
    folder: Path,
    name: str,
    inter: pd.DataFrame,
    items: dict[str, dict[str, str]],
    fields: tuple[str, ...] = ITEM_TEXT_FIELDS,
) -> None:
    """Write ``<name>.inter`` (sorted by user, then time) and ``<name>.item`` (text columns).

    Text columns are typed ``token_seq``/``token`` for RecBole's header but hold free text for
    the item-text encoder; the dataset YAMLs keep them out of ``load_col``.
    """
    ordered = inter.sort_values(["user_id", "timestamp"], kind="stable")
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as out:
        out.write("\t".join(INTER_HEADER) + "\n")
        for user, item, stamp in ordered.itertuples(index=False):
            out.write(f"{user}\t{item}\t{stamp!r}\n")
    types = {"brand": "token"}
    header = ["item_id:token"] + [f"{f}:{types.get(f, 'token_seq')}" for f in fields]
    with open(folder / f"{name}.item", "w", encoding="utf-8") as out:
        out.write("\t".join(header) + "\n")
        for item in pd.unique(ordered["item_id"]):
            meta = items.get(item, {})
            out.write("\t".join([item] + [meta.get(f, "") for f in fields]) + "\n")


def _build_dir(out: Path, build) -> None:
    """Run ``build(tmp)`` in a temporary sibling of ``out``, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _dataset_lock(out: Path) -> Iterator[None]:
    """Exclusive lock (``.<name>.lock`` next to ``out``) while a dataset is prepared."""
    with exclusive_lock(out.parent / f".{out.name}.lock", f"preparing {out.name}"):
        yield


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if marker.get("format") == FORMAT_VERSION else None


def _marker(spec_name: str, source: str, fingerprint: dict[str, str], stats: DatasetStats) -> str:
    record = {
        "format": FORMAT_VERSION,
        "name": spec_name,
        "source": source,
        "fingerprint": fingerprint,
        "stats": stats.as_dict(),
    }
    return json.dumps(record, indent=2, sort_keys=True)


def _stats_from_marker(marker: dict) -> DatasetStats:
    s = marker["stats"]
    return DatasetStats(int(s["users"]), int(s["items"]), int(s["actions"]))


def _find_raw(
    spec: DatasetSpec,
    raw_dir: Path | None,
    data_path: str | None,
    cache: Path,
    download_missing: bool,
    base_url: str | None,
) -> dict[str, Path]:
    """Locate (or download) and verify the raw files of an Amazon dataset."""
    if raw_dir is None and data_path:
        candidate = Path(data_path) / spec.name
        if all((candidate / f.filename).exists() for f in spec.files):
            raw_dir = candidate
    folder = raw_dir if raw_dir is not None else cache / "raw" / spec.name
    missing = [f for f in spec.files if not (folder / f.filename).exists()]
    if missing and not download_missing:
        listing = "\n".join(f"  {f.filename}  <-  {resolve_url(spec, f, base_url)}" for f in missing)
        raise FileNotFoundError(
            f"dataset {spec.name!r}: raw files missing in {folder}:\n{listing}\n"
            f"Download them (or pass --raw_dir=<folder with them>), or allow downloading."
        )
    paths: dict[str, Path] = {}
    for raw in spec.files:
        target = folder / raw.filename
        if target.exists():
            verify_file(target, raw.sha256)
        else:
            try:
                download(resolve_url(spec, raw, base_url), target, expected_sha256=raw.sha256)
            except DownloadError as exc:
                raise type(exc)(f"{exc}\n{_offline_help(spec, folder, base_url)}") from exc
        paths[raw.role] = target
    return paths


def _offline_help(spec: DatasetSpec, folder: Path, base_url: str | None) -> str:
    """The two ways forward when a dataset's raw files cannot be downloaded here."""
    listing = "\n".join(f"  {f.filename}  <-  {resolve_url(spec, f, base_url)}" for f in spec.files)
    env = SOURCE_URL_ENV.get(spec.source)
    return (
        f"To prepare {spec.name!r} without this download, either\n"
        f"(1) fetch these files on a machine that can, into one folder DIR:\n{listing}\n"
        f"    then run: python -m recbole_ext.data prepare {spec.name} --raw_dir=DIR\n"
        f"    (or copy them into {folder}) and rerun your command; or\n"
        f"(2) download from a mirror: python -m recbole_ext.data prepare {spec.name} --base_url=URL"
        + (f"\n    (or set {env}=URL for every run)" if env else "")
    )


def _prepare_amazon(spec: DatasetSpec, raw: dict[str, Path], out: Path) -> DatasetStats:
    reader_inter, reader_meta = {
        "amazon2023": (read_amazon2023_inter, read_amazon2023_meta),
        "amazon2014": (read_amazon2014_inter, read_amazon2014_meta),
    }[spec.source]
    logger.info("reading %s", raw["inter"])
    inter = reader_inter(raw["inter"])
    if spec.k_core:
        before = len(inter)
        inter = k_core_filter(inter, spec.k_core)
        if len(inter) != before:
            logger.info("%d-core filter: %d -> %d actions", spec.k_core, before, len(inter))
    logger.info("reading %s", raw["meta"])
    items = reader_meta(raw["meta"], set(inter["item_id"].unique()))
    n_items = inter["item_id"].nunique()
    if len(items) < n_items:
        logger.warning("%s: %d of %d items have no metadata", spec.name, n_items - len(items), n_items)
    stats = compute_stats(inter)
    fingerprint = {p.name: sha256_file(p) for p in raw.values()}

    def build(tmp: Path) -> None:
        write_atomic_files(tmp, spec.name, inter, items)
        (tmp / MARKER).write_text(_marker(spec.name, spec.source, fingerprint, stats))

    _build_dir(out, build)
    return stats


def _gz_or_plain(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.exists():
            return candidate
    return None


def _prepare_offline(name: str, source: Path, out: Path, force: bool = False) -> DatasetStats:
    """Materialise (decompress) gzip'd atomic files from a read-only folder into ``out``."""
    files = {ext: _gz_or_plain(source, f"{name}.{ext}") for ext in ("inter", "item")}
    if files["inter"] is None:
        raise FileNotFoundError(f"{source}: no {name}.inter(.gz)")
    fingerprint = {p.name: sha256_file(p) for p in files.values() if p is not None}
    marker = None if force else _read_marker(out)
    if marker and marker.get("fingerprint") == fingerprint:
        return _stats_from_marker(marker)
    logger.info("materialising %s from %s into %s", name, source, out)
    holder: dict[str, DatasetStats] = {}

    def build(tmp: Path) -> None:
        for ext, path in files.items():
            if path is None:
                continue
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as src, open(tmp / f"{name}.{ext}", "wb") as dst:
                shutil.copyfileobj(src, dst)
        inter = pd.read_csv(tmp / f"{name}.inter", sep="\t", dtype=str)
        inter.columns = [c.split(":")[0] for c in inter.columns]
        holder["stats"] = compute_stats(inter)
        (tmp / MARKER).write_text(_marker(name, "offline", fingerprint, holder["stats"]))

    _build_dir(out, build)
    return holder["stats"]


def _inter_stats(path: Path) -> DatasetStats:
    inter = pd.read_csv(path, sep="\t", dtype=str)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    return compute_stats(inter)


def prepare_dataset(
    name: str,
    data_path: str | None = None,
    download: bool = True,
    *,
    raw_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
) -> PreparedDataset:
    """Make ``<data_path>/<name>/<name>.{inter,item}`` exist; see :func:`ensure_dataset`."""
    data_path = data_path or os.environ.get(DATA_ENV) or None
    if data_path:  # absolute: the runner changes directory before RecBole reads the files
        data_path = str(Path(data_path).expanduser().resolve())
    cache = (Path(cache_dir) if cache_dir else default_cache_dir()).expanduser().resolve()
    spec = CATALOG.get(name)

    if spec is not None and spec.source == "recbole":
        root = recbole_example_dir()
        stats = _inter_stats(root / name / f"{name}.inter")
        return PreparedDataset(name, str(root), root / name, stats, log_stats(name, stats, spec))

    # 1. plain atomic files supplied by the user
    if data_path and not force and (Path(data_path) / name / f"{name}.inter").exists():
        folder = Path(data_path) / name
        stats = _inter_stats(folder / f"{name}.inter")
        return PreparedDataset(name, str(data_path), folder, stats, log_stats(name, stats, spec))

    out_root = cache / "datasets"
    out = out_root / name
    # 2. gzip'd atomic files in the data path (offline copies, e.g. scientific2018)
    source = Path(data_path) / name if data_path else None
    if source is not None and _gz_or_plain(source, f"{name}.inter") is not None:
        with _dataset_lock(out):
            stats = _prepare_offline(name, source, out, force)
        return PreparedDataset(name, str(out_root), out, stats, log_stats(name, stats, spec))
    if spec is None:
        get_spec(name)  # raises KeyError listing the known names
    if spec.source == "offline":
        raise FileNotFoundError(
            f"dataset {name!r} is an offline copy and was not found: expected "
            f"{name}.inter.gz (and {name}.item.gz) in <data_path>/{name}/ "
            f"(data_path={data_path!r}). Pass --data_path=../shared/datasets or set "
            f"{DATA_ENV}."
        )

    # 3. Amazon datasets: raw files -> atomic files
    with _dataset_lock(out):  # concurrent runs wait for one preparation instead of racing
        marker = None if force else _read_marker(out)
        if marker is not None and marker.get("source") == spec.source:
            stats = _stats_from_marker(marker)
        else:
            raw = _find_raw(spec, Path(raw_dir) if raw_dir else None, data_path, cache, download, base_url)
            stats = _prepare_amazon(spec, raw, out)
    return PreparedDataset(name, str(out_root), out, stats, log_stats(name, stats, spec))


def ensure_dataset(
    name: str,
    data_path: str | None = None,
    download: bool = True,
    *,
    raw_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
) -> str:
    """Prepare dataset ``name`` if needed and return the ``data_path`` to give RecBole.

    ``data_path`` (or env ``RECBOLE_EXT_DATA``) is where offline or already prepared data is
    read from; prepared files are written under ``cache_dir`` (env ``RECBOLE_EXT_CACHE``).
    ``download=False`` never touches the network (missing raw files raise). ``raw_dir``: a
    folder of already-downloaded raw files. ``base_url``: mirror of the official source.
    """
    return prepare_dataset(name, data_path, download, raw_dir=raw_dir, cache_dir=cache_dir, base_url=base_url).data_path
