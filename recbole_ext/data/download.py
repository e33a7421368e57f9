"""HTTP download of raw dataset files: resumable, atomic, checksummed.

A file is streamed to ``<dest>.part`` (resumed with an HTTP ``Range`` request when a ``.part``
from an interrupted run exists), checked (no HTML error page, byte count equal to
``Content-Length``, gzip readable to the end, sha256 equal to the pinned or recorded one) and only
then renamed to ``<dest>`` with ``os.replace``. The sha256 of every file is recorded on first
download in ``SHA256SUMS`` next to it and verified on every later use.

A failed check deletes the ``.part`` and raises :class:`DownloadError`; only a network
interruption (connection reset, timeout) keeps the ``.part`` so that the next attempt resumes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from recbole_ext.atomic import atomic_write_text

__all__ = [
    "DownloadError",
    "ChecksumError",
    "CHECKSUM_FILE",
    "sha256_file",
    "read_checksums",
    "record_checksum",
    "verify_file",
    "download",
]

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "SHA256SUMS"
_CHUNK = 1 << 20
_HTML_PREFIXES = (b"<!doctype html", b"<html", b"<head", b"<?xml")


class DownloadError(RuntimeError):
    """A download failed or produced an unusable file (nothing was kept)."""


class ChecksumError(DownloadError):
    """A file's sha256 differs from the pinned or recorded one."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """``{filename: sha256}`` from ``folder/SHA256SUMS`` (empty when absent)."""
    path = Path(folder) / CHECKSUM_FILE
    if not path.exists():
        return {}
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def record_checksum(folder: str | os.PathLike, filename: str, digest: str) -> None:
    """Add or replace one entry of ``folder/SHA256SUMS`` (rewritten atomically)."""
    folder = Path(folder)
    sums = read_checksums(folder)
    sums[filename] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    atomic_write_text(folder / CHECKSUM_FILE, text)


def _check_gzip(path: Path) -> None:
    """Decompress ``path`` to the end (CRC and length are checked by gzip)."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DownloadError(f"{path.name}: not a complete gzip file ({exc})") from exc


def verify_file(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """Check an existing raw file against ``expected_sha256`` or its recorded checksum.

    Records the checksum when none is known (and the folder is writable). Returns the sha256.
    Raises :class:`ChecksumError` on mismatch (the file is left in place: it may be the user's).
    """
    path = Path(path)
    digest = sha256_file(path)
    recorded = read_checksums(path.parent).get(path.name)
    for label, want in (("pinned", expected_sha256), ("recorded", recorded)):
        if want and want.lower() != digest:
            raise ChecksumError(
                f"{path}: sha256 {digest} differs from the {label} checksum {want}. "
                f"The file is corrupt or was replaced; delete it (and its line in "
                f"{path.parent / CHECKSUM_FILE}) to download it again."
            )
    if recorded is None:
        try:
            record_checksum(path.parent, path.name, digest)
        except OSError as exc:  # read-only folder of user-supplied files
            logger.debug("cannot record checksum of %s: %s", path, exc)
    return digest


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    retries: int = 2,
) -> Path:
    """Download ``url`` to ``dest`` unless it is already there (then it is only verified).

    Network interruptions are retried ``retries`` times, resuming from the ``.part`` file.
    Returns ``dest``. Raises :class:`DownloadError` (HTTP error, HTML page, truncated file,
    bad gzip) or :class:`ChecksumError`; in those cases no file is left behind.
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, expected_sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    logger.info("downloading %s -> %s", url, dest)
    attempt = 0
    while True:
        try:
            _fetch(url, part, timeout)
            break
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        except (OSError, http.client.HTTPException) as exc:
            # network trouble (and KeyboardInterrupt, not caught): keep the .part to resume
            attempt += 1
            if attempt > retries:
                size = part.stat().st_size if part.exists() else 0
                if not size:
                    part.unlink(missing_ok=True)
                kept = (f"the partial file {part} ({size} bytes) is kept and the next run resumes from it"
                        if size else "no file was kept")
                raise DownloadError(f"download of {url} failed after {attempt} attempts ({exc}); {kept}") from exc
            logger.warning("download of %s interrupted (%s); resuming", url, exc)
            time.sleep(min(2.0**attempt, 10.0))
    try:
        if dest.name.endswith(".gz"):
            _check_gzip(part)
        digest = sha256_file(part)
        recorded = read_checksums(dest.parent).get(dest.name)
        for label, want in (("pinned", expected_sha256), ("recorded", recorded)):
            if want and want.lower() != digest:
                raise ChecksumError(
                    f"{url}: downloaded file has sha256 {digest}, the {label} checksum is "
                    f"{want}. The server sent different content (a mirror out of date, or "
                    f"corruption); nothing was kept. If the new file is legitimate, remove its "
                    f"line from {dest.parent / CHECKSUM_FILE}."
                )
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    if recorded is None:
        record_checksum(dest.parent, dest.name, digest)
    logger.info("downloaded %s (%d bytes, sha256 %s)", dest.name, dest.stat().st_size, digest)
    return dest


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Stream ``url`` into ``part`` (appending after an existing ``.part`` when the server allows)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "recbole-ext/0.1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # stale .part longer than the file: start over
            part.unlink(missing_ok=True)
            return _fetch(url, part, timeout)
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    with response:
        if offset and response.status == 206:
            start = response.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if start != str(offset):
                raise DownloadError(f"{url}: bad Content-Range {response.headers!r}")
            mode = "ab"
            logger.info("resuming %s at byte %d", part.name[:-5], offset)
        else:
            offset, mode = 0, "wb"
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower():
            raise DownloadError(
                f"{url} returned an HTML page (Content-Type {content_type!r}) instead of the "
                f"data file: the URL is wrong or the server shows an error/login page"
            )
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        total = offset + expected if expected is not None else None
        with open(part, mode) as out, tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=part.name[:-5],
            disable=None,
        ) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as exc:
                    raise DownloadError(
                        f"{url}: truncated download, connection closed after "
                        f"{received + len(exc.partial)} of {expected} bytes"
                    ) from exc
                if not block:
                    break
                if offset + received == 0 and block.lstrip()[:14].lower().startswith(_HTML_PREFIXES):
                    raise DownloadError(f"{url} returned an HTML/XML page instead of the data file")
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if expected is not None and received != expected:
            raise DownloadError(
                f"{url}: truncated download, received {received} of {expected} bytes " f"(Content-Length)"
            )
    return None
