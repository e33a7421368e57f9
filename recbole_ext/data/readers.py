"""Parsers of the official raw formats into a common shape.

Interactions become a DataFrame ``[user_id, item_id, timestamp]`` (ids as strings, timestamp in
seconds as float, file order kept). Item metadata becomes ``{item_id: {field: text}}`` with the
fields of :data:`ITEM_TEXT_FIELDS`, each a single line of plain text (tabs and newlines folded).
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = [
    "ITEM_TEXT_FIELDS",
    "clean_text",
    "read_amazon2023_inter",
    "read_amazon2023_meta",
    "read_amazon2014_inter",
    "read_amazon2014_meta",
]

logger = logging.getLogger(__name__)

#: Text columns written to ``<name>.item`` for the Amazon datasets (in this order).
ITEM_TEXT_FIELDS: tuple[str, ...] = ("title", "brand", "categories", "features", "description")

_WS = re.compile(r"\s+")


def clean_text(value: Any, sep: str = " ") -> str:
    """One line of text from a string, a (nested) list of strings or None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = (clean_text(v, sep) for v in value)
        return sep.join(p for p in parts if p)
    return _WS.sub(" ", str(value)).strip()


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _frame(rows: Iterable[tuple[str, str, float]], source: Path) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["user_id", "item_id", "timestamp"])
    if frame.empty:
        raise ValueError(f"{source}: no interactions found")
    frame["timestamp"] = frame["timestamp"].astype(float)
    return frame


def read_amazon2023_inter(path: Path) -> pd.DataFrame:
    """5-core ``rating_only`` CSV: ``user_id,parent_asin,rating,timestamp`` (ms)."""
    frame = pd.read_csv(path, dtype={"user_id": str, "parent_asin": str})
    missing = {"user_id", "parent_asin", "timestamp"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"{path}: not an Amazon Reviews 2023 rating file (columns {list(frame.columns)}, "
            f"missing {sorted(missing)})"
        )
    out = frame[["user_id", "parent_asin", "timestamp"]].rename(columns={"parent_asin": "item_id"})
    out["timestamp"] = out["timestamp"].astype("int64") / 1000.0  # ms -> s
    if out.empty:
        raise ValueError(f"{path}: no interactions found")
    return out.reset_index(drop=True)


def read_amazon2014_inter(path: Path) -> pd.DataFrame:
    """5-core review JSON lines: ``reviewerID, asin, unixReviewTime`` (s)."""

    def rows() -> Iterator[tuple[str, str, float]]:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = ast.literal_eval(line)
                try:
                    yield record["reviewerID"], record["asin"], float(record["unixReviewTime"])
                except KeyError as exc:
                    raise ValueError(f"{path}:{number}: missing field {exc}") from None

    return _frame(rows(), path)


_PARENT_ASIN = re.compile(r'"parent_asin"\s*:\s*"([^"]+)"')


def read_amazon2023_meta(path: Path, items: set[str]) -> dict[str, dict[str, str]]:
    """Per-category metadata JSONL; keeps only ``items`` (matched on ``parent_asin``)."""
    out: dict[str, dict[str, str]] = {}
    with _open_text(path) as handle:
        for line in handle:
            found = _PARENT_ASIN.search(line)
            if found is not None and (found.group(1) not in items or found.group(1) in out):
                continue  # cheap pre-filter before parsing the JSON
            if not line.strip():
                continue
            record = json.loads(line)
            asin = record.get("parent_asin")
            if asin not in items or asin in out:
                continue
            out[asin] = {
                "title": clean_text(record.get("title")),
                "brand": clean_text(record.get("store")),
                "categories": clean_text(record.get("categories"), sep=", "),
                "features": clean_text(record.get("features")),
                "description": clean_text(record.get("description")),
            }
    return out


_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def read_amazon2014_meta(path: Path, items: set[str]) -> dict[str, dict[str, str]]:
    """Metadata lines (python literals, or JSON); keeps only ``items`` (matched on ``asin``)."""
    out: dict[str, dict[str, str]] = {}
    with _open_text(path) as handle:
        for line in handle:
            found = _ASIN.search(line)
            if not found or found.group(1) not in items or found.group(1) in out:
                continue  # cheap pre-filter: most of a category's items are not in the 5-core
            try:
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                record = json.loads(line)
            categories: list[str] = []
            for path_ in record.get("categories") or []:
                for name in path_ if isinstance(path_, list) else [path_]:
                    if name and name not in categories:
                        categories.append(name)
            out[record["asin"]] = {
                "title": clean_text(record.get("title")),
                "brand": clean_text(record.get("brand")),
                "categories": clean_text(categories, sep=", "),
                "features": "",
                "description": clean_text(record.get("description")),
            }
    return out
