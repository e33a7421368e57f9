"""Trie-constrained batched beam search vs brute force and a naive reference search."""

import itertools
import subprocess
import sys

import pytest
import torch

from recbole_ext.generation import T5CachedDecoder, t5_beam_search
from recbole_ext.sid import SIDTrie, SIDVocab
from recbole_ext.sid.random_ids import random_codes

SIZES = (4, 3, 5)
N_ITEMS = 25


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    from recbole_ext.modules.t5_backbone import build_t5

    torch.manual_seed(0)
    vocab = SIDVocab(SIZES)
    codes = random_codes(N_ITEMS, SIZES, seed=1)
    item_ids = torch.arange(N_ITEMS) + 1  # RecBole-style ids (0 = padding)
    trie = SIDTrie.from_codes(codes, SIZES, item_ids=item_ids)
    model = build_t5(vocab.vocab_size, num_layers=2, num_decoder_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8)
    model.eval()
    b, l = 3, 6
    ids = torch.randint(3, vocab.vocab_size, (b, l))
    mask = torch.ones(b, l, dtype=torch.long)
    ids[0, 4:], mask[0, 4:] = 0, 0  # one padded history
    return vocab, codes, item_ids, trie, model, ids, mask


def _seq_logprob(model, ids, mask, dec_tokens):
    """Sum of log p(dec_tokens) per row, teacher forced, dec_tokens [N, T] (bos prepended)."""
    n = dec_tokens.shape[0]
    dec_in = torch.cat([torch.full((n, 1), 2), dec_tokens[:, :-1]], dim=1)
    with torch.no_grad():
        logp = model(
            input_ids=ids.expand(n, -1), attention_mask=mask.expand(n, -1), decoder_input_ids=dec_in
        ).logits.log_softmax(-1)
    return logp.gather(2, dec_tokens[:, :, None]).squeeze(-1)  # [N, T]


def test_cached_decoder_matches_model_forward(setup):
    vocab, codes, _, _, model, ids, mask = setup
    tokens = vocab.encode(codes[:3])  # [3, m] one target per user
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        dec = T5CachedDecoder(model, enc, mask, max_steps=4)
        steps = [dec.step(torch.full((3, 1), vocab.bos))]
        for t in range(2):
            steps.append(dec.step(tokens[:, t : t + 1]))
        ref = model(
            input_ids=ids, attention_mask=mask,
            decoder_input_ids=torch.cat([torch.full((3, 1), 2), tokens[:, :2]], 1),
        ).logits.log_softmax(-1)
    assert torch.allclose(torch.cat(steps, 1), ref, atol=1e-5)


def test_beam_equals_brute_force_enumeration(setup):
    vocab, codes, item_ids, trie, model, ids, mask = setup
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=N_ITEMS)
    all_tokens = vocab.encode(codes)  # [N, m]
    for b in range(ids.shape[0]):
        s = _seq_logprob(model, ids[b : b + 1], mask[b : b + 1], all_tokens).sum(1)  # [N]
        order = s.argsort(descending=True)
        assert out.items[b].tolist() == item_ids[order].tolist()
        assert torch.allclose(out.scores[b], s[order], atol=1e-5)
        assert torch.equal(out.tokens[b], all_tokens[order])


def test_dead_beams_when_beam_exceeds_items(setup):
    vocab, _, item_ids, trie, model, ids, mask = setup
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=N_ITEMS + 7)
    assert (out.items[:, N_ITEMS:] == -1).all() and torch.isinf(out.scores[:, N_ITEMS:]).all()
    assert sorted(out.items[0, :N_ITEMS].tolist()) == item_ids.tolist()


def _reference_search(model, ids, mask, vocab, codes, item_ids, k):
    """Per-user, per-beam Python beam search with full forward passes (slow, obviously right)."""
    valid = {tuple(c): int(i) for c, i in zip(codes.tolist(), item_ids.tolist())}
    beams = [((), 0.0)]
    for d in range(vocab.n_levels):
        cand = []
        for prefix, score in beams:
            dec_in = torch.tensor([[vocab.bos] + [vocab.offsets[j] + c for j, c in enumerate(prefix)]])
            with torch.no_grad():
                logp = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_in).logits[0, -1].log_softmax(-1)
            for c in range(vocab.codebook_sizes[d]):
                if any(key[: d + 1] == prefix + (c,) for key in valid):
                    cand.append((prefix + (c,), score + float(logp[vocab.offsets[d] + c])))
        beams = sorted(cand, key=lambda x: -x[1])[:k]
    return [valid[p] for p, _ in beams], [s for _, s in beams]


@pytest.mark.parametrize("k", [1, 4, 9])
def test_beam_matches_naive_reference(setup, k):
    vocab, codes, item_ids, trie, model, ids, mask = setup
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=k)
    for b in range(ids.shape[0]):
        items, scores = _reference_search(model, ids[b : b + 1], mask[b : b + 1], vocab, codes, item_ids, k)
        assert out.items[b].tolist() == items
        assert torch.allclose(out.scores[b], torch.tensor(scores), atol=1e-5)


def test_unconstrained_flags_invalid_ids(setup):
    vocab, codes, item_ids, trie, model, ids, mask = setup
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=40, constrain=False)
    decoded = vocab.decode(out.tokens)  # [B, K, m]
    valid = {tuple(c): int(i) for c, i in zip(codes.tolist(), item_ids.tolist())}
    want = [[valid.get(tuple(c), -1) for c in row] for row in decoded.tolist()]
    assert out.items.tolist() == want
    assert (out.items == -1).any()  # 60 possible IDs, 25 valid: 40 beams must include invalid ones
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()


def test_free_reasoning_steps_and_forced_prefix(setup):
    vocab, codes, item_ids, trie, model, ids, mask = setup
    free = (3, 6)  # three allowed reasoning tokens
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=3 * N_ITEMS, free_steps=1, free_range=free)
    all_tokens = vocab.encode(codes)
    for b in range(ids.shape[0]):
        seqs = torch.tensor([[r] + t for r, t in itertools.product(range(*free), all_tokens.tolist())])
        s = _seq_logprob(model, ids[b : b + 1], mask[b : b + 1], seqs).sum(1)
        order = s.argsort(descending=True)
        assert torch.equal(out.tokens[b], seqs[order])
        assert torch.allclose(out.scores[b], s[order], atol=1e-5)
        assert out.items[b].tolist() == item_ids[order % N_ITEMS].tolist()
    # forced prefix: same ranking as scoring items after that prefix (prefix probability not counted)
    prefix = torch.tensor([[4, 5], [3, 3], [5, 4]])
    out = t5_beam_search(model, ids, mask, trie, vocab, n_beams=N_ITEMS, prefix=prefix)
    for b in range(ids.shape[0]):
        seqs = torch.cat([prefix[b].expand(N_ITEMS, -1), all_tokens], 1)
        s = _seq_logprob(model, ids[b : b + 1], mask[b : b + 1], seqs)[:, 2:].sum(1)
        order = s.argsort(descending=True)
        assert out.items[b].tolist() == item_ids[order].tolist()
        assert torch.allclose(out.scores[b], s[order], atol=1e-5)
        assert (out.tokens[b, :, :2] == prefix[b]).all()


@pytest.mark.cuda
def test_gpu_matches_cpu(setup):
    vocab, _, _, trie, model, ids, mask = setup
    cpu = t5_beam_search(model, ids, mask, trie, vocab, n_beams=10)
    gpu = t5_beam_search(model.cuda(), ids.cuda(), mask.cuda(), trie.to("cuda"), vocab, n_beams=10)
    model.cpu()
    assert torch.equal(gpu.items.cpu(), cpu.items)
    assert torch.allclose(gpu.scores.cpu(), cpu.scores, atol=1e-4)


def test_imports_do_not_load_transformers():
    code = "import sys, recbole_ext.sid, recbole_ext.generation; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_last_hidden_follows_reorder(setup):
    vocab, _, _, _, model, ids, mask = setup
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        dec = T5CachedDecoder(model, enc, mask, max_steps=2)
        dec.step(torch.tensor([[2, 5], [2, 6], [2, 7]]))
        h = dec.last_hidden.clone()  # [3, 2, D]
        dec.reorder(torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0]]))
    assert dec.last_hidden.shape == (3, 3, h.shape[-1])
    assert torch.equal(dec.last_hidden[0, 2], h[0, 0]) and torch.equal(dec.last_hidden[2, 0], h[2, 1])


def test_length_buckets_match_padded_encoder(setup):
    from recbole_ext.generation import encode

    vocab, _, _, trie, model, _, _ = setup
    g = torch.Generator().manual_seed(4)
    b, l = 10, 9
    ids = torch.randint(3, vocab.vocab_size, (b, l), generator=g)
    lens = torch.tensor([9, 1, 4, 7, 2, 9, 5, 3, 8, 6])
    pos = torch.arange(l)[None, :]
    mask = torch.where(torch.arange(b)[:, None] % 2 == 0, pos < lens[:, None], pos >= l - lens[:, None]).long()
    ids = ids * mask  # right-padded even rows, left-padded odd rows
    with torch.no_grad():
        enc, packed = encode(model, ids, mask, n_buckets=3)
    assert enc.shape[:2] == (b, 9) and packed.sum(1).tolist() == lens.tolist()
    assert (packed[:, :-1] >= packed[:, 1:]).all()  # tokens moved to the front
    ref = t5_beam_search(model, ids, mask, trie, vocab, n_beams=6, n_buckets=1)
    got = t5_beam_search(model, ids, mask, trie, vocab, n_beams=6, n_buckets=3)
    assert torch.equal(got.items, ref.items)
    assert torch.allclose(got.scores, ref.scores, atol=1e-5)


@pytest.mark.parametrize("extra", [{"feed_forward_proj": "gated-gelu"}, {"tie_word_embeddings": False}])
def test_cached_decoder_other_t5_variants(extra):
    from recbole_ext.modules.t5_backbone import build_t5

    torch.manual_seed(1)
    model = build_t5(20, num_layers=1, num_decoder_layers=2, d_model=16, d_ff=24, num_heads=2, d_kv=8, **extra).eval()
    ids = torch.randint(3, 20, (2, 5))
    mask = torch.ones_like(ids)
    dec_in = torch.tensor([[2, 7, 9], [2, 4, 3]])
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        dec = T5CachedDecoder(model, enc, mask, max_steps=3)
        got = torch.cat([dec.step(dec_in[:, t : t + 1]) for t in range(3)], 1)
        ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_in).logits.log_softmax(-1)
    assert torch.allclose(got, ref, atol=1e-5)


def test_free_sequences_only_are_the_best_first_steps(setup):
    """item_levels=False with one free step: the K best code tokens of the first step, best first."""
    vocab, codes, item_ids, trie, model, ids, mask = setup
    out = t5_beam_search(model, ids, mask, trie, vocab, 4, free_steps=1, item_levels=False)
    assert (out.items == -1).all() and out.tokens.shape == (ids.shape[0], 4, 1)
    with torch.no_grad():
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        dec = T5CachedDecoder(model, enc, mask, 1)
        lo, hi = vocab.code_range()
        logp = dec.step(torch.full((ids.shape[0], 1), vocab.bos))[:, 0, lo:hi]  # [B, V_code]
        best = logp.topk(4, dim=1)
    assert torch.equal(out.tokens[..., 0], best.indices + lo)
    assert torch.allclose(out.scores, best.values, atol=1e-5)
