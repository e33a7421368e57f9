"""build_semantic_ids: methods, cache hit / miss, atomic files, raw-token keyed lookups."""

import json

import numpy as np
import pytest
import torch

import recbole_ext.sid.cache as cache_mod
from recbole_ext.sid import build_semantic_ids

ITEMS = [f"item{i}" for i in range(40)]
RQ = {
    "method": "rqvae",
    "n_levels": 2,
    "codebook_size": 8,
    "rqvae": {"hidden_dims": [16], "latent_dim": 4, "epochs": 2, "log_every": 0},
}


def _count_computes(monkeypatch):
    calls = []
    real = cache_mod._compute

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "_compute", counting)
    return calls


def test_random_cache_hit_and_miss(tmp_path, monkeypatch):
    calls = _count_computes(monkeypatch)
    cfg = {"method": "random", "n_levels": 3, "codebook_size": 16, "seed": 1}
    a = build_semantic_ids(ITEMS, None, cfg, tmp_path)
    assert a.codes.shape == (40, 4) and a.codebook_sizes == (16, 16, 16, 16)
    assert len(torch.unique(a.codes, dim=0)) == 40 and (a.codes[:, 3] == 0).all()
    b = build_semantic_ids(ITEMS, None, cfg, tmp_path)
    assert len(calls) == 1 and torch.equal(a.codes, b.codes) and b.cache_path == a.cache_path
    build_semantic_ids(ITEMS, None, {**cfg, "seed": 2}, tmp_path)  # config change -> miss
    build_semantic_ids(ITEMS[::-1], None, cfg, tmp_path)  # item order change -> miss
    assert len(calls) == 3
    # no temp files left (a build's lock file stays: removing it would let a third run lock another inode)
    assert sorted(p.suffix for p in tmp_path.iterdir() if p.suffix != ".lock") == [".json"] * 3 + [".pt"] * 3
    stats = json.loads(open(a.cache_path[:-3] + ".json").read())
    assert stats["collision"]["collision_rate"] == 0.0


def test_rqvae_cache_keyed_by_embeddings(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    calls = _count_computes(monkeypatch)
    emb = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    a = build_semantic_ids(ITEMS, emb, RQ, tmp_path)
    assert a.codes.shape == (40, 3) and len(torch.unique(a.codes, dim=0)) == 40
    assert a.codebook_sizes == (8, 8, 8)
    assert set(a.stats["rqvae"]) >= {"codebook_usage", "collision_rate", "recon_mse"}
    assert a.stats["collision"]["collision_rate"] == pytest.approx(a.stats["rqvae"]["collision_rate"])
    build_semantic_ids(ITEMS, emb.copy(), RQ, tmp_path)
    assert len(calls) == 1
    emb2 = emb.copy()
    emb2[3, 2] += 1e-3
    build_semantic_ids(ITEMS, emb2, RQ, tmp_path)
    assert len(calls) == 2
    # the training device is not part of the key: IDs built on a CPU serve a GPU run unchanged
    on_gpu = build_semantic_ids(ITEMS, emb, {**RQ, "rqvae": {**RQ["rqvae"], "device": "cuda"}}, tmp_path)
    assert len(calls) == 2 and torch.equal(on_gpu.codes, a.codes)
    with pytest.raises(ValueError, match="needs item embeddings"):
        build_semantic_ids(ITEMS, None, RQ, None)


def test_external_cache_follows_file_content(tmp_path, monkeypatch):
    calls = _count_computes(monkeypatch)
    f = tmp_path / "ids.index.json"
    f.write_text(json.dumps({"b": ["<a_1>", "<b_0>"], "a": ["<a_0>", "<b_2>"]}))
    cfg = {"method": "external", "path": str(f)}
    s = build_semantic_ids(["a", "b"], None, cfg, tmp_path / "c")
    assert s.codes.tolist() == [[0, 2], [1, 0]] and s.codebook_sizes == (2, 3)
    build_semantic_ids(["a", "b"], None, cfg, tmp_path / "c")
    f.write_text(json.dumps({"b": ["<a_1>", "<b_1>"], "a": ["<a_0>", "<b_2>"]}))
    s2 = build_semantic_ids(["a", "b"], None, cfg, tmp_path / "c")
    assert len(calls) == 2 and s2.codes.tolist() == [[0, 2], [1, 1]]


def test_codes_for_recbole_tokens_and_errors(tmp_path):
    cfg = {"method": "random", "n_levels": 2, "codebook_size": 4}
    build_semantic_ids(np.array(["x", "y", "z"]), None, cfg, tmp_path)  # numpy strings, as RecBole's
    s = build_semantic_ids(np.array(["x", "y", "z"]), None, cfg, tmp_path)  # cache hit, loads them back
    assert s.item_tokens == ["x", "y", "z"] and type(s.item_tokens[0]) is str
    table = s.codes_for_tokens(["[PAD]", "z", "x"])
    assert table[0].tolist() == [-1, -1, -1]
    assert torch.equal(table[1], s.codes[2]) and torch.equal(table[2], s.codes[0])
    assert s.vocab().encode(table)[0].tolist() == [0, 0, 0]
    with pytest.raises(KeyError, match="'w'"):
        s.codes_for_tokens(["w"])
    with pytest.raises(ValueError, match="unknown semantic-ID method"):
        build_semantic_ids(["x"], None, {"method": "kmeans"}, tmp_path)
    with pytest.raises(ValueError, match="duplicates"):
        build_semantic_ids(["x", "x"], None, {"method": "random"}, tmp_path)
