"""Fixtures: a loopback HTTP server and miniature copies of the official Amazon file formats."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

# --- miniature raw data ---------------------------------------------------------------------------
# Six users u0..u5 each interact with items i0..i4 (30 actions, the 5-core that survives), plus
# "ux" (2 actions, with i0 and i5) and "uy" (5 actions, i0..i3 and i5): i5 has 2 actions and is
# dropped, which leaves uy with 4 and drops uy too (the filter must iterate).
# Expected after 5-core: 6 users, 5 items, 30 actions.
CORE_USERS = [f"u{u}" for u in range(6)]
CORE_ITEMS = [f"i{i}" for i in range(5)]
MINI_STATS = {"users": 6, "items": 5, "actions": 30}


def mini_interactions() -> list[tuple[str, str, int]]:
    """(user, item, unix seconds) rows in a deliberately unsorted file order."""
    rows = []
    for u, user in enumerate(CORE_USERS):
        for i, item in enumerate(CORE_ITEMS):
            # later items get earlier times for odd users, so sorting by time matters
            stamp = 1_600_000_000 + u * 1000 + (i if u % 2 == 0 else 10 - i) * 10
            rows.append((user, item, stamp))
    rows += [("ux", "i0", 1_600_100_000), ("ux", "i5", 1_600_100_010)]
    rows += [("uy", it, 1_600_200_000 + k) for k, it in enumerate(["i5", "i0", "i1", "i2", "i3"])]
    return rows[::-1]


def mini_meta() -> list[dict]:
    """Metadata records for i0..i5 plus an item with no interactions (i9)."""
    out = []
    for i in [0, 1, 2, 3, 4, 5, 9]:
        out.append(
            {
                "title": f"Item {i}\twith\ttabs\nand newline" if i == 0 else f"Item {i}",
                "brand": f"Brand{i}",
                "categories": ["Cat", f"Sub{i % 2}"],
                "features": [f"feature {i}a", f"feature {i}b"],
                "description": [f"Description of item {i}."],
                "id": f"i{i}",
            }
        )
    return out


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), mtime=0)


def amazon2023_files(category: str) -> dict[str, bytes]:
    """``{url path: bytes}`` in the Amazon Reviews 2023 layout."""
    lines = ["user_id,parent_asin,rating,timestamp"]
    lines += [f"{u},{i},5.0,{t * 1000}" for u, i, t in mini_interactions()]
    meta = []
    for m in mini_meta():
        meta.append(
            json.dumps(
                {
                    "main_category": "Cat",
                    "title": m["title"],
                    "average_rating": 4.5,
                    "features": m["features"],
                    "description": m["description"],
                    "price": None,
                    "images": [],
                    "store": m["brand"],
                    "categories": m["categories"],
                    "details": {"Brand": m["brand"]},
                    "parent_asin": m["id"],
                }
            )
        )
    return {
        f"benchmark/5core/rating_only/{category}.csv.gz": gz("\n".join(lines) + "\n"),
        f"raw/meta_categories/meta_{category}.jsonl.gz": gz("\n".join(meta) + "\n"),
    }


def amazon2014_files(category: str) -> dict[str, bytes]:
    """``{url path: bytes}`` in the Amazon 2014 layout (python-literal metadata)."""
    reviews = [
        json.dumps(
            {
                "reviewerID": u,
                "asin": i,
                "reviewerName": "X",
                "helpful": [0, 0],
                "reviewText": "ok",
                "overall": 5.0,
                "summary": "ok",
                "unixReviewTime": t,
                "reviewTime": "01 1, 2020",
            }
        )
        for u, i, t in mini_interactions()
    ]
    meta = [
        repr(
            {
                "asin": m["id"],
                "title": m["title"] + ("'s" if m["id"] == "i1" else ""),
                "price": 9.99,
                "brand": m["brand"],
                "categories": [m["categories"], ["Cat", "Other"]],
                "description": " ".join(m["description"]),
            }
        )
        for m in mini_meta()
    ]
    return {
        f"reviews_{category}_5.json.gz": gz("\n".join(reviews) + "\n"),
        f"meta_{category}.json.gz": gz("\n".join(meta) + "\n"),
    }


# --- loopback server ------------------------------------------------------------------------------
@dataclass
class LoopbackServer:
    """Serves ``files``; ``modes[path]`` selects a failure: html, html_body, truncate, 404, no_range."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(state: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            path = self.path.lstrip("/")
            state.requests.append((path, self.headers.get("Range")))
            mode = state.modes.get(path, "")
            if mode == "404" or path not in state.files:
                self.send_error(404, "Not Found")
                return
            body = state.files[path]
            if mode in ("html", "html_body"):
                page = b"<!DOCTYPE html><html><body>Access denied</body></html>"
                self.send_response(200)
                ctype = "text/html; charset=utf-8" if mode == "html" else "application/gzip"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            start = 0
            wanted = self.headers.get("Range")
            if wanted and mode != "no_range":
                start = int(wanted.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if mode == "truncate":
                payload = payload[: len(payload) // 2]
            self.wfile.write(payload)
            self.wfile.flush()
            if mode == "truncate":
                self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A threaded HTTP server on 127.0.0.1 (random port), stopped after the test."""
    state = LoopbackServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default cache and data location at the test's temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECBOLE_EXT_CACHE", str(cache))
    for var in (
        "RECBOLE_EXT_DATA",
        "RECBOLE_EXT_URL_AMAZON2023",
        "RECBOLE_EXT_URL_AMAZON2014",
        "RECBOLE_EXT_TEXT_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    return cache


def leftovers(root: Path) -> list[str]:
    """Partial downloads and temporary build folders under ``root``."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith((".part", ".tmp")) or ".tmp-" in p.name
    )


@pytest.fixture
def mini() -> SimpleNamespace:
    """The miniature-data builders and helpers above, for the test modules."""
    return SimpleNamespace(
        amazon2023_files=amazon2023_files,
        amazon2014_files=amazon2014_files,
        interactions=mini_interactions,
        stats=MINI_STATS,
        gz=gz,
        leftovers=leftovers,
    )
