"""SIDVocab layout and the tensor trie on random ID sets."""

import itertools

import pytest
import torch

from recbole_ext.sid import SIDTrie, SIDVocab
from recbole_ext.sid.random_ids import random_codes


def test_vocab_layout():
    v = SIDVocab((4, 3, 5), n_extra=2)
    assert (v.pad, v.eos, v.bos) == (0, 1, 2)
    assert v.offsets == (3, 7, 10)
    assert v.level_range(2) == (10, 15) and v.code_range() == (3, 15)
    assert v.extra_offset == 15 and v.vocab_size == 17
    codes = torch.tensor([[3, 2, 4], [-1, -1, -1]])
    tokens = v.encode(codes)
    assert tokens.tolist() == [[6, 9, 14], [0, 0, 0]]
    assert v.decode(torch.tensor([[6, 9, 14], [6, 6, 14]])).tolist() == [[3, 2, 4], [3, -1, 4]]
    table = v.item_token_table(torch.tensor([[0, 0, 0], [1, 2, 3]]), pad_row=True)  # [3, 3]
    hist = SIDVocab.history_tokens(table, torch.tensor([[0, 2, 1]]))
    assert hist.tolist() == [[0, 0, 0, 4, 9, 13, 3, 7, 10]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_trie_matches_enumeration(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = (3, 4, 2, 5)
    n = int(torch.randint(5, 60, (1,), generator=g))
    codes = random_codes(n, sizes, seed=seed)
    item_ids = torch.randperm(n, generator=g) + 10
    trie = SIDTrie.from_codes(codes, sizes, item_ids=item_ids)
    valid = {tuple(c): int(i) for c, i in zip(codes.tolist(), item_ids.tolist())}
    every = torch.tensor(list(itertools.product(*[range(s) for s in sizes])))  # all 120 code tuples
    got = trie.lookup(every)
    want = torch.tensor([valid.get(tuple(c), -1) for c in every.tolist()])
    assert torch.equal(got, want)
    # allowed children of every prefix equal the set of valid next codes
    for d in range(len(sizes)):
        prefixes = {c[:d] for c in valid}
        for p in prefixes:
            node = torch.zeros((), dtype=torch.long)
            for j, c in enumerate(p):
                node = trie.advance(j, node, torch.tensor(c))
            allowed = set(torch.nonzero(trie.children(d, node) >= 0).flatten().tolist())
            assert allowed == {c[d] for c in valid if c[:d] == p}


def test_random_walk_on_allowed_children_reaches_valid_items():
    codes = random_codes(30, (4, 4, 4), seed=5)
    trie = SIDTrie.from_codes(codes, (4, 4, 4))
    g = torch.Generator().manual_seed(0)
    node = torch.zeros(500, dtype=torch.long)
    picked = []
    for d in range(3):
        allowed = trie.children(d, node) >= 0  # [500, 4]
        code = torch.multinomial(allowed.float(), 1, generator=g).squeeze(1)
        picked.append(code)
        node = trie.advance(d, node, code)
    assert (node >= 0).all()
    assert torch.equal(codes[node], torch.stack(picked, 1))
    # sentinel: an invalid step stays invalid; codes out of range are invalid
    bad = torch.tensor([[9, 0, 0], [-1, 0, 0]])
    assert trie.lookup(bad).tolist() == [-1, -1]


def test_trie_rejects_duplicates_and_ranges():
    with pytest.raises(ValueError, match="not unique"):
        SIDTrie.from_codes(torch.tensor([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="out of range"):
        SIDTrie.from_codes(torch.tensor([[0, 4]]), (2, 4))
