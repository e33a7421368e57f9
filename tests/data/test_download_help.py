"""Without a network, preparing a catalog dataset fails with a message that names the files it
expects and the two ways forward (raw files fetched elsewhere + --raw_dir, or a mirror), and does
not claim a partial file that does not exist."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from recbole_ext.data import DownloadError, prepare_dataset
from recbole_ext.data import download as download_module
from recbole_ext.data.catalog import CATALOG

MIB = 1 << 20  # download.py writes in blocks of this size
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


def test_offline_failure_says_what_to_do(isolated_cache, monkeypatch):
    monkeypatch.setattr(download_module.time, "sleep", lambda s: None)  # the retries, without waiting
    with pytest.raises(DownloadError) as info:
        prepare_dataset("instruments", base_url=UNREACHABLE)
    message = str(info.value)
    assert "failed after 3 attempts" in message and "no file was kept" in message and "partial file" not in message
    for raw in CATALOG["instruments"].files:  # every expected file, by exact name and source
        assert f"  {raw.filename}  <-  {UNREACHABLE}/" in message
    assert "python -m recbole_ext.data prepare instruments --raw_dir=DIR" in message
    assert "python -m recbole_ext.data prepare instruments --base_url=URL" in message
    assert "RECBOLE_EXT_URL_AMAZON2023=URL" in message
    assert not list((isolated_cache / "raw" / "instruments").glob("*.part"))


@pytest.fixture
def resetting_server():
    """Answers every request with the headers of a 3 MiB file and its first 1 MiB + 1000 bytes,
    then resets the connection (as a dropped network does)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 3145728\r\n\r\n" + b"x" * (MIB + 1000))
            stop.wait(0.5)  # let the client read what was sent (not time.sleep: the test patches it)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_interrupted_download_names_the_partial_file_it_keeps(resetting_server, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module.time, "sleep", lambda s: None)
    name = "reviews_Beauty_5.json.gz"
    with pytest.raises(DownloadError) as info:
        download_module.download(f"{resetting_server}/{name}", tmp_path / name, retries=0, timeout=5)
    part = tmp_path / f"{name}.part"
    assert part.exists() and part.stat().st_size == MIB  # the blocks written before the reset
    assert f"the partial file {part} ({MIB} bytes) is kept and the next run resumes from it" in str(info.value)
