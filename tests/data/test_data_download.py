"""recbole_ext.data.download against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import pytest

from recbole_ext.data.download import (
    CHECKSUM_FILE,
    ChecksumError,
    DownloadError,
    download,
    read_checksums,
    verify_file,
)

NAME = "reviews_Beauty_5.json.gz"


@pytest.fixture
def payload(mini) -> bytes:
    return mini.gz("".join(f"line {i} with some text\n" for i in range(2000)))


def test_download_records_checksum_and_reuses(server, payload, tmp_path):
    server.files[NAME] = payload
    dest = download(f"{server.url}/{NAME}", tmp_path / NAME)
    assert dest.read_bytes() == payload
    assert read_checksums(tmp_path) == {NAME: hashlib.sha256(payload).hexdigest()}
    download(f"{server.url}/{NAME}", tmp_path / NAME)  # present and verified: no request
    assert len(server.requests) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([NAME, CHECKSUM_FILE])


def test_resume_sends_range_and_completes(server, payload, tmp_path):
    server.files[NAME] = payload
    part = tmp_path / f"{NAME}.part"
    part.write_bytes(payload[:1000])  # left by an interrupted run
    download(f"{server.url}/{NAME}", tmp_path / NAME)
    assert server.requests == [(NAME, "bytes=1000-")]
    assert (tmp_path / NAME).read_bytes() == payload
    assert not part.exists()


def test_restart_when_server_ignores_range(server, payload, tmp_path):
    server.files[NAME] = payload
    server.modes[NAME] = "no_range"
    (tmp_path / f"{NAME}.part").write_bytes(b"garbage that must be discarded")
    download(f"{server.url}/{NAME}", tmp_path / NAME)
    assert (tmp_path / NAME).read_bytes() == payload


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "HTML page"),
        ("html_body", "HTML/XML page"),
        ("truncate", "truncated"),
        ("404", "HTTP 404"),
    ],
)
def test_failures_leave_nothing(server, payload, tmp_path, mode, message, mini):
    server.files[NAME] = payload
    server.modes[NAME] = mode
    with pytest.raises(DownloadError, match=message):
        download(f"{server.url}/{NAME}", tmp_path / NAME, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_gzip_is_rejected(server, tmp_path):
    server.files[NAME] = b"\x1f\x8b\x08\x00 this is not really gzip data"
    with pytest.raises(DownloadError, match="not a complete gzip"):
        download(f"{server.url}/{NAME}", tmp_path / NAME)
    assert list(tmp_path.iterdir()) == []


def test_pinned_checksum_mismatch(server, payload, tmp_path):
    server.files[NAME] = payload
    with pytest.raises(ChecksumError, match="pinned checksum"):
        download(f"{server.url}/{NAME}", tmp_path / NAME, expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_recorded_checksum_mismatch_on_redownload(server, payload, tmp_path, mini):
    server.files[NAME] = payload
    download(f"{server.url}/{NAME}", tmp_path / NAME)
    (tmp_path / NAME).unlink()
    server.files[NAME] = mini.gz("different content\n")  # the server changed the file
    with pytest.raises(ChecksumError, match="recorded checksum"):
        download(f"{server.url}/{NAME}", tmp_path / NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKSUM_FILE]


def test_corrupted_local_file_is_detected(server, payload, tmp_path):
    server.files[NAME] = payload
    dest = download(f"{server.url}/{NAME}", tmp_path / NAME)
    dest.write_bytes(payload[:-10])
    with pytest.raises(ChecksumError, match="delete it"):
        verify_file(dest)
    with pytest.raises(ChecksumError):
        download(f"{server.url}/{NAME}", dest)


def test_unreachable_server_keeps_no_file(tmp_path):
    with pytest.raises(DownloadError, match="failed after 1 attempts"):
        download("http://127.0.0.1:9/none.gz", tmp_path / "none.gz", retries=0, timeout=2)
    assert list(tmp_path.iterdir()) == []
