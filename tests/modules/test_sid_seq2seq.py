"""The semantic-ID seq2seq module: its passes agree with T5's own, and sampling draws from the
distribution its restricted policy scores."""

import itertools
from collections import Counter

import pytest
import torch

from recbole_ext.sid import SIDVocab

SIZES = (2, 2)


@pytest.fixture(scope="module")
def s2s():
    from recbole_ext.modules.sid_seq2seq import SIDSeq2Seq

    torch.manual_seed(0)
    codes = torch.tensor([[-1, -1], [0, 0], [0, 1], [1, 1]])  # 3 items + padding row; (1, 0) is no item
    backbone = {"num_layers": 1, "num_decoder_layers": 1, "d_model": 16, "d_ff": 32, "num_heads": 2, "d_kv": 8,
                "dropout": 0.0}
    model = SIDSeq2Seq(SIDVocab(SIZES), codes, backbone).eval()
    return model


def history(s2s):
    ids, mask = s2s.history_tokens(torch.tensor([[1, 2, 0], [3, 0, 0]]))  # [B=2, L=3] -> [2, 6]
    return ids, mask


def test_history_tokens_and_shift(s2s):
    ids, mask = history(s2s)
    lo0, lo1 = s2s.vocab.level_range(0)[0], s2s.vocab.level_range(1)[0]
    assert ids[0].tolist() == [lo0, lo1, lo0, lo1 + 1, 0, 0] and mask[1].tolist() == [1, 1, 0, 0, 0, 0]
    assert s2s.shift(torch.tensor([[5, 6, 7]])).tolist() == [[s2s.vocab.bos, 5, 6]]


def test_teacher_forced_logprobs_match_t5_loss(s2s):
    """token_logprobs (with T5's output scaling) reproduce T5's own cross-entropy."""
    ids, mask = history(s2s)
    labels = s2s.item_tokens[torch.tensor([2, 3])]  # [B, m]
    with torch.no_grad():
        logp, hidden = s2s.token_logprobs(s2s.encode(ids, mask), mask, labels)
        assert hidden.shape == (2, 2, 16)
        assert torch.allclose(-logp.mean(), s2s.lm_loss(ids, mask, labels), atol=1e-6)


def test_decode_from_embeddings_equals_decode_from_ids(s2s):
    ids, mask = history(s2s)
    dec_in = s2s.shift(s2s.item_tokens[torch.tensor([1, 3])])
    with torch.no_grad():
        enc = s2s.encode(ids, mask)
        a = s2s.decode(enc, mask, input_ids=dec_in)
        b = s2s.decode(enc, mask, inputs_embeds=s2s.t5.shared(dec_in))
    assert torch.equal(a, b)


def test_policy_mask_allows_exactly_the_trie(s2s):
    vocab = s2s.vocab
    lo0, lo1 = vocab.level_range(0)[0], vocab.level_range(1)[0]
    tokens = torch.tensor([[vocab.code_range()[0], lo0 + 1, lo1 + 1]])  # one free step, then item (1, 1)
    mask = s2s.policy_mask(tokens, free_steps=1)  # [1, 3, V]
    allowed = [(mask[0, t] == 0).nonzero().flatten().tolist() for t in range(3)]
    assert allowed[0] == list(range(*vocab.code_range()))  # free step: every code token
    assert allowed[1] == [lo0, lo0 + 1]  # both first codes start an item
    assert allowed[2] == [lo1 + 1]  # below (1, ...) only (1, 1) exists
    free = s2s.policy_mask(tokens, free_steps=1, constrained=False)
    assert (free[0, 2] == 0).nonzero().flatten().tolist() == [lo1, lo1 + 1]  # level range only


def test_sampling_follows_the_scored_policy(s2s):
    """Empirical frequencies of sampled sequences match exp(sum of restricted log-probs)."""
    torch.manual_seed(1)
    ids, mask = history(s2s)
    ids, mask = ids[:1], mask[:1]
    n = 6000
    with torch.no_grad():
        enc, emask = s2s.encode_for_decoding(ids, mask)
        samples = s2s.sample(enc, emask, n, free_steps=1, temperature=1.0)[0]  # [n, 3]
        counts = Counter(map(tuple, samples.tolist()))
        vocab = s2s.vocab
        space = [(f, *vocab.encode(torch.tensor(c)).tolist()) for f in range(*vocab.code_range())
                 for c in ([0, 0], [0, 1], [1, 1])]
        seqs = torch.tensor(space)  # every valid sequence: 4 free tokens x 3 items
        full = s2s.encode(ids, mask).expand(len(space), -1, -1)
        logp, _ = s2s.token_logprobs(full, mask.expand(len(space), -1), seqs,
                                     allowed=s2s.policy_mask(seqs, free_steps=1))
        probs = logp.sum(1).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)  # the policy lives on valid sequences only
    assert set(counts) <= set(space)
    for seq, p in zip(space, probs.tolist()):
        assert counts.get(seq, 0) / n == pytest.approx(p, abs=0.025)


def test_beam_search_ranks_by_the_same_scores(s2s):
    ids, mask = history(s2s)
    with torch.no_grad():
        out = s2s.beam_search(ids, mask, n_beams=3)
        full = s2s.encode(ids, mask)
        for b in range(2):
            items = torch.tensor([1, 2, 3])
            labels = s2s.item_tokens[items]
            logp, _ = s2s.token_logprobs(full[b : b + 1].expand(3, -1, -1), mask[b : b + 1].expand(3, -1), labels)
            order = items[logp.sum(1).argsort(descending=True)]
            assert out.items[b].tolist() == order.tolist()
            assert torch.allclose(out.scores[b], logp.sum(1).sort(descending=True).values, atol=1e-5)
    assert list(itertools.chain(*out.items.tolist())).count(-1) == 0
