"""Collision code, random tokenizer, external ID files."""

import json

import pytest
import torch

from recbole_ext.sid.collisions import CollisionError, add_collision_code
from recbole_ext.sid.external import SIDFileError, load_index_json
from recbole_ext.sid.random_ids import random_codes


def test_collision_code_hand_example():
    codes = torch.tensor([[1, 2, 0], [0, 0, 0], [1, 2, 0], [0, 1, 3], [1, 2, 0]])
    out, stats = add_collision_code(codes, codebook_size=4)
    assert out[:, -1].tolist() == [0, 0, 1, 0, 2]
    assert torch.equal(out[:, :3], codes)
    assert stats == {
        "n_items": 5,
        "n_unique_prefixes": 3,
        "n_colliding_items": 3,
        "collision_rate": pytest.approx(0.4),
        "max_group_size": 3,
    }


def test_collision_code_makes_random_ids_unique():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 3, (400, 3), generator=g)  # 27 prefixes, heavy collisions
    out, stats = add_collision_code(codes, codebook_size=64)
    assert len(torch.unique(out, dim=0)) == 400
    assert stats["n_unique_prefixes"] == len(torch.unique(codes, dim=0))
    assert int(out[:, -1].max()) + 1 == stats["max_group_size"]


def test_collision_overflow_raises():
    with pytest.raises(CollisionError, match=r"3 items share the ID prefix \[5, 5\].*only 2 codes"):
        add_collision_code(torch.tensor([[5, 5], [5, 5], [1, 1], [5, 5]]), codebook_size=2)


def test_random_codes_unique_seeded():
    a = random_codes(500, (4, 8, 16), seed=7)
    assert a.shape == (500, 3)
    assert len(torch.unique(a, dim=0)) == 500
    assert (a.min(0).values >= 0).all() and (a.max(0).values < torch.tensor([4, 8, 16])).all()
    assert torch.equal(a, random_codes(500, (4, 8, 16), seed=7))
    assert not torch.equal(a, random_codes(500, (4, 8, 16), seed=8))
    full = random_codes(8, (2, 2, 2), seed=0)  # all 8 codes exactly once
    assert sorted(map(tuple, full.tolist())) == [(i, j, k) for i in range(2) for j in range(2) for k in range(2)]
    with pytest.raises(ValueError, match="do not fit"):
        random_codes(9, (2, 2, 2))


def _write(tmp_path, obj, name="x.index.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_external_loads_in_item_order(tmp_path):
    p = _write(tmp_path, {"i2": ["<a_1>", "<b_0>", "<c_3>"], "i1": ["<a_0>", "<b_2>", "<c_0>"]})
    codes, sizes, stats = load_index_json(p, ["i1", "i2"])
    assert codes.tolist() == [[0, 2, 0], [1, 0, 3]]
    assert sizes == (2, 3, 4)
    assert stats["n_duplicate_items"] == 0
    codes, sizes, _ = load_index_json(p, ["i1", "i2"], codebook_sizes=[256, 256, 256])
    assert sizes == (256, 256, 256)


def test_external_duplicates_get_collision_code(tmp_path):
    same = ["<a_1>", "<b_1>"]
    p = _write(tmp_path, {"x": same, "y": ["<a_0>", "<b_1>"], "z": same})
    codes, sizes, stats = load_index_json(p, ["x", "y", "z"])
    assert codes.tolist() == [[1, 1, 0], [0, 1, 0], [1, 1, 1]]
    assert sizes == (2, 2, 2)
    assert stats["n_duplicate_items"] == 1 and stats["collision"]["n_colliding_items"] == 2


@pytest.mark.parametrize(
    "obj, items, pattern",
    [
        ({"a": ["<a_1>"]}, ["a", "b", "c"], r"2 dataset items have no ID, e.g. 'b', 'c'"),
        ({"a": ["<a_1>"], "zz": ["<a_2>"]}, ["a"], r"1 items are not in the dataset, e.g. 'zz'"),
        ({"a": ["<a_1>", "<c_2>"]}, ["a"], r"item 'a': malformed token '<c_2>' at level 1"),
        ({"a": ["<a_x>"]}, ["a"], r"item 'a': malformed token '<a_x>' at level 0"),
        ({"a": "<a_1>"}, ["a"], r"item 'a': expected a non-empty list"),
        ({"a": ["<a_1>"], "b": ["<a_1>", "<b_1>"]}, ["a", "b"], r"item 'b' has 2 tokens, earlier items have 1"),
    ],
)
def test_external_errors_name_file_and_key(tmp_path, obj, items, pattern):
    p = _write(tmp_path, obj)
    with pytest.raises(SIDFileError, match=pattern) as err:
        load_index_json(p, items)
    assert str(p) in str(err.value)


def test_external_bad_json_and_sizes(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(SIDFileError, match="cannot read"):
        load_index_json(p, ["a"])
    p = _write(tmp_path, {"a": ["<a_9>"]})
    with pytest.raises(SIDFileError, match=r"need sizes \(10,\)"):
        load_index_json(p, ["a"], codebook_sizes=[4])
    codes, _, _ = load_index_json(_write(tmp_path, {"a": ["<a_9>"], "q": ["<a_1>"]}), ["a"], allow_extra_items=True)
    assert codes.tolist() == [[9]]
