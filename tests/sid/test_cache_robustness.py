"""The semantic-ID cache under bad files and concurrency, and the digest of an ID table."""

import hashlib
import logging
import threading
import time

import torch

import recbole_ext.sid.cache as cache_mod
from recbole_ext.sid import build_semantic_ids
from recbole_ext.sid.cache import SemanticIDs

ITEMS = [f"item{i}" for i in range(40)]
CFG = {"method": "random", "n_levels": 2, "codebook_size": 16, "seed": 1}


def _slow_counting_compute(monkeypatch, seconds=0.0):
    calls = []
    real = cache_mod._compute

    def counting(*a, **k):
        calls.append(threading.current_thread().name)
        time.sleep(seconds)
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "_compute", counting)
    return calls


def test_truncated_cache_file_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog):
    first = build_semantic_ids(ITEMS, None, CFG, tmp_path)
    path = tmp_path / first.cache_path.rsplit("/", 1)[-1]
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], b"", b"not a torch file"):
        path.write_bytes(broken)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = build_semantic_ids(ITEMS, None, CFG, tmp_path)
        assert torch.equal(again.codes, first.codes)  # rebuilt: the same deterministic IDs
        assert f"cache file {path} is unreadable" in caplog.text and "rebuilding it" in caplog.text
        assert SemanticIDs.load(path).codes.equal(first.codes)  # and the file is whole again
    calls = _slow_counting_compute(monkeypatch)
    build_semantic_ids(ITEMS, None, CFG, tmp_path)
    assert calls == []  # the rebuilt file is a hit


def test_concurrent_builds_train_the_tokenizer_once(tmp_path, monkeypatch):
    calls = _slow_counting_compute(monkeypatch, seconds=1.0)
    results = {}

    def build(name):
        results[name] = build_semantic_ids(ITEMS, None, CFG, tmp_path)

    threads = [threading.Thread(target=build, args=(f"run{i}",), name=f"run{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1  # the second waited for the lock, then read the cache
    assert torch.equal(results["run0"].codes, results["run1"].codes)


def test_table_digest_hand_computed():
    ids = SemanticIDs(["b", "a"], torch.tensor([[1, 2], [3, 4]]), (4, 4))
    canonical = '{"codebook_sizes":[4,4],"ids":[["a",[3,4]],["b",[1,2]]]}'
    assert ids.table_digest() == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    same_reordered = SemanticIDs(["a", "b"], torch.tensor([[3, 4], [1, 2]]), (4, 4))
    assert same_reordered.table_digest() == ids.table_digest()  # item order is not identity
    assert SemanticIDs(["b", "a"], torch.tensor([[1, 2], [3, 5]]), (4, 4)).table_digest() != ids.table_digest()
    assert SemanticIDs(["b", "a"], torch.tensor([[1, 2], [3, 4]]), (4, 8)).table_digest() != ids.table_digest()
