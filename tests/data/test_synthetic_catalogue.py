"""Synthetic catalogue generator and the catalogue-scaling benchmark's per-size function (tiny sizes)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from recbole_ext.data.synthetic import (
    CatalogueConfig,
    generate_catalogue,
    read_atomic_inter,
    write_atomic_files,
)
from recbole_ext.registry import PROJECT_ROOT

SMALL = {"n_users": 400, "n_items": 300, "seed": 7}


def test_same_seed_same_catalogue_other_seed_differs():
    a, b = generate_catalogue(**SMALL), generate_catalogue(**SMALL)
    for name in ("users", "items", "timestamps", "lengths", "offsets", "popularity", "codes"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = generate_catalogue(**{**SMALL, "seed": 8})
    assert not np.array_equal(a.items, c.items)
    assert not np.array_equal(a.codes, c.codes)


@pytest.mark.parametrize("dist", ["lognormal", "geometric"])
def test_lengths_respect_the_minimum_and_the_mean(dist):
    cat = generate_catalogue(n_users=20_000, n_items=500, length_dist=dist, min_len=5, mean_len=9.0, sid="none")
    assert cat.lengths.min() >= 5
    assert cat.lengths.max() <= cat.config.max_len
    assert cat.lengths.mean() == pytest.approx(9.0, abs=0.3)
    assert cat.n_interactions == cat.lengths.sum() == cat.offsets[-1]
    assert np.array_equal(np.diff(cat.offsets), cat.lengths)
    # rows grouped by user, each user's rows in time order
    assert np.all(np.diff(cat.users) >= 0)
    same_user = cat.users[1:] == cat.users[:-1]
    assert np.all(np.diff(cat.timestamps)[same_user] >= 0)
    assert np.array_equal(cat.sequence(3), cat.items[cat.users == 3])


def test_popularity_is_skewed_like_zipf():
    cat = generate_catalogue(n_users=5_000, n_items=1_000, zipf_exponent=1.0, sid="none", seed=1)
    counts = cat.item_counts()
    assert counts.max() > 20 * max(np.median(counts), 1)
    # the most drawn item is the most probable one; uniform popularity has no such head
    assert np.argmax(counts) == np.argmax(cat.popularity)
    flat = generate_catalogue(n_users=5_000, n_items=1_000, zipf_exponent=0.0, sid="none", seed=1).item_counts()
    assert flat.max() < 3 * np.median(flat)


def test_random_ids_are_unique_per_item_with_a_collision_level():
    cat = generate_catalogue(n_users=100, n_items=3_000, sid="random", sid_levels=2, codebook_size=16,
                             collision_codebook_size=64)
    assert cat.codes.shape == (3_000, 3)
    assert cat.codebook_sizes == (16, 16, 64)
    assert len(np.unique(cat.codes, axis=0)) == 3_000
    assert cat.stats["collision_rate"] > 0  # 3,000 items in 256 prefixes must collide
    # the appended level counts 0..k-1 within each group of items sharing the first levels
    _, inverse, counts = np.unique(cat.codes[:, :2], axis=0, return_inverse=True, return_counts=True)
    assert np.array_equal(np.bincount(inverse.reshape(-1), weights=cat.codes[:, 2]),
                          counts * (counts - 1) / 2)
    assert (cat.codes < np.asarray(cat.codebook_sizes)).all() and (cat.codes >= 0).all()


def test_rkmeans_ids_come_from_the_project_tokenizer():
    cat = generate_catalogue(n_users=50, n_items=400, sid="rkmeans", sid_levels=2, codebook_size=8,
                             collision_codebook_size=64, rkmeans_niter=5)
    assert cat.codes.shape == (400, 3)
    assert len(np.unique(cat.codes, axis=0)) == 400


def test_bad_settings_say_what_to_change():
    with pytest.raises(ValueError, match="sid="):
        CatalogueConfig(sid="rqvae")
    with pytest.raises(ValueError, match="mean_len"):
        CatalogueConfig(min_len=5, mean_len=3)


def test_atomic_files_round_trip(tmp_path):
    cat = generate_catalogue(**SMALL)
    path = write_atomic_files(cat, tmp_path, "synth")
    assert path == tmp_path / "synth" / "synth.inter"
    assert path.read_text().splitlines()[0] == "user_id:token\titem_id:token\ttimestamp:float"
    back = read_atomic_inter(path)
    assert set(back) == {"user_id", "item_id", "timestamp"}
    assert np.array_equal(back["user_id"].astype(np.int64), cat.users)
    assert np.array_equal(back["item_id"].astype(np.int64), cat.items)
    assert np.array_equal(back["timestamp"], cat.timestamps)


def test_windows_have_full_length_and_catalogue_items():
    cat = generate_catalogue(**SMALL)
    hist, target = cat.windows(50, 20, seed=3)
    assert hist.shape == (50, 20) and target.shape == (50,)
    assert hist.min() >= 0 and hist.max() < cat.config.n_items


def _load_benchmark():
    path = PROJECT_ROOT / "benchmarks" / "speed" / "catalogue_scaling.py"
    spec = importlib.util.spec_from_file_location("catalogue_scaling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("catalogue_scaling", module)
    spec.loader.exec_module(module)
    return module


def test_benchmark_per_size_function_returns_every_measurement():
    bench = _load_benchmark()
    args = bench.parse_args(["--sizes", "500", "--d-model", "16", "--layers", "1", "--beam", "5", "--beam-users", "4",
                             "--beam-batch", "4", "--hist", "5", "--emb-dim", "8", "--kmeans-niter", "2",
                             "--codebook", "16", "--train-batch", "8", "--train-steps", "1", "--repeats", "1",
                             "--users-per-item", "2"])
    result = bench.measure_size(500, args)
    for key, *_ in bench.COLUMNS:
        assert isinstance(result[key], (int, float)) and result[key] == result[key], key  # present, not NaN
    assert result["n_items"] == 500
    assert result["trie_nodes"][0] == 1 and result["trie_nodes"][-1] <= 500
    assert result["beam_valid"] == 1.0  # every beam ends in a catalogue item
    slopes = bench.fit_slopes([10, 100, 1000], [1.0, 10.0, 100.0])
    assert slopes["fit"] == pytest.approx(1.0) and slopes["10->100"] == pytest.approx(1.0)
