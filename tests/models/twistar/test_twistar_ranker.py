"""TwiSTAR ranker: training lists (injection in training only, dropped rows, label index), DIN forward."""

import math

import pytest
import torch

from recbole_ext.models.twistar.ranker import DINRanker, listwise_loss, ranker_batch, rerank

NEG = float("-inf")


def fast_beams():
    target = torch.tensor([5, 9, 7, 6])
    items = torch.tensor([[3, 5, 8, 2], [1, 2, 3, 4], [7, 1, -1, -1], [4, -1, -1, -1]])
    scores = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, NEG, NEG],
                           [-1.0, NEG, NEG, NEG]])
    return target, items, scores


def test_without_injection_missed_targets_are_dropped():
    target, items, scores = fast_beams()
    batch = ranker_batch(target, items, scores, inject_target=False)
    assert batch.label.tolist() == [1, -1, 0, -1]
    assert batch.keep.tolist() == [True, False, True, False]
    assert torch.equal(batch.candidates, items) and torch.equal(batch.scores, scores)


def test_injection_replaces_the_last_candidate_with_the_target_and_its_score():
    target, items, scores = fast_beams()
    items_before, scores_before = items.clone(), scores.clone()
    target_scores = torch.tensor([0.0, -3.5, 0.0, -7.0])  # only rows 1 and 3 are read
    cands, sc, label, keep = ranker_batch(target, items, scores, inject_target=True, target_scores=target_scores)
    assert cands.tolist() == [[3, 5, 8, 2], [1, 2, 3, 9], [7, 1, -1, -1], [4, -1, -1, 6]]
    assert sc[1].tolist() == [-1.0, -2.0, -3.0, -3.5] and sc[3].tolist() == [-1.0, NEG, NEG, -7.0]
    assert label.tolist() == [1, 3, 0, 3] and keep.all()
    assert torch.equal(items, items_before) and torch.equal(scores, scores_before)  # inputs untouched


def test_injection_with_a_scorer_callable_is_called_for_missed_rows_only():
    target, items, scores = fast_beams()
    calls = []

    def scorer(rows, targets):
        calls.append((rows.tolist(), targets.tolist()))
        return -10.0 * targets.float()

    batch = ranker_batch(target, items, scores, inject_target=True, target_scores=scorer)
    assert calls == [([1, 3], [9, 6])]
    assert batch.scores[1, 3].item() == -90.0 and batch.scores[3, 3].item() == -60.0
    with pytest.raises(ValueError):
        ranker_batch(target, items, scores, inject_target=True)  # needs the target's score


def test_listwise_loss_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, NEG], [5.0, 1.0, 2.0]], requires_grad=True)
    label = torch.tensor([1, 0, -1])
    keep = torch.tensor([True, True, False])
    # row 0: -log(3/5); row 1: -log(1/2) (the dead candidate takes no mass); row 2 dropped
    want = (-math.log(3 / 5) + math.log(2)) / 2
    loss = listwise_loss(logits, label, keep)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[2].abs().sum() == 0
    assert listwise_loss(logits, label, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_rerank_orders_by_score_stably_and_puts_dead_last():
    cands = torch.tensor([[10, 20, 30, -1], [1, 2, 3, 4]])
    scores = torch.tensor([[0.1, 0.5, 0.5, 9.0], [NEG, 1.0, 3.0, 2.0]])
    assert rerank(cands, scores, k=3).tolist() == [[20, 30, 10], [3, 4, 2]]
    assert rerank(cands, scores, k=6).tolist() == [[20, 30, 10, -1, -1, -1], [3, 4, 2, -1, -1, -1]]


@pytest.mark.parametrize("norm", ["none", "softmax"])
def test_din_shapes_and_padding_does_not_change_scores(norm):
    torch.manual_seed(0)
    model = DINRanker(n_items=40, embedding_size=8, attention_norm=norm).eval()
    cands = torch.tensor([[1, 2, 3, -1]])
    fast = torch.tensor([[-1.0, -2.0, -3.0, NEG]])
    base = model(torch.tensor([[5, 3, 0, 0]]), cands, fast)
    assert base.shape == (1, 4) and torch.isneginf(base[0, 3]) and torch.isfinite(base[0, :3]).all()
    for history in ([[0, 0, 5, 3]], [[5, 3, 0, 0, 0, 0, 0]], [[0, 5, 0, 3]], [[5, 3]]):
        assert torch.allclose(model(torch.tensor(history), cands, fast), base, atol=1e-6), history
    assert not torch.allclose(model(torch.tensor([[5, 4, 0, 0]]), cands, fast)[0, :3], base[0, :3])  # sees content (not order: DIN has none)
    # only the last 20 real items count
    long = torch.arange(10, 35)[None]  # 25 items
    changed = long.clone()
    changed[0, :5] = torch.tensor([1, 2, 3, 4, 6])
    assert torch.allclose(model(long, cands, fast), model(changed, cands, fast), atol=1e-6)
    empty = model(torch.zeros(1, 4, dtype=torch.long), cands, fast)
    assert torch.isfinite(empty[0, :3]).all()


def test_din_attention_is_zero_on_padding_and_unnormalised_by_default():
    torch.manual_seed(0)
    model = DINRanker(n_items=20, embedding_size=8)
    hist_emb = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    w = model.attention_weights(hist_emb, mask, torch.randn(2, 4, 8))
    assert w.shape == (2, 4, 3) and (w[0, :, 2] == 0).all() and (w[1, :, 1:] == 0).all()
    assert not torch.allclose(w.sum(-1), torch.ones(2, 4))  # DIN: no softmax


def test_din_learns_to_put_the_target_first():
    torch.manual_seed(0)
    model = DINRanker(n_items=30, embedding_size=8)
    history = torch.randint(1, 30, (16, 5))
    target = history[:, -1] % 29 + 1  # a deterministic function of the last item
    cands = torch.stack([target] + [(target + i) % 29 + 1 for i in range(1, 8)], dim=1)
    perm = torch.randperm(8)
    cands = cands[:, perm]
    fast = torch.zeros(16, 8)
    batch = ranker_batch(target, cands, fast, inject_target=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = listwise_loss(model(history, batch.candidates, batch.scores), batch.label, batch.keep)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert (model.rank(history, cands, fast, k=1)[:, 0] == target).float().mean() > 0.9
