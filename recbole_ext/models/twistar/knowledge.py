"""TwiSTAR's collaborative knowledge as text: "users who bought A next bought B" sentences from Swing.

The paper turns inter-item collaborative signals into natural-language sentences and injects them
into the slow reasoning model's input. Here the signal is each item's best Swing neighbour
(:func:`recbole_ext.cooccurrence.swing_scores`) computed over the users' TRAINING sequences
(:func:`recbole_ext.cooccurrence.user_sequences` of the training rows, the held-out rows' targets taken
out: :func:`without_targets`) and nothing else: a sentence
names one of the last ``n_last`` history items and that item's training neighbour, never a
validation or test target. Items are named by their short title (:mod:`recbole_ext.rationale`).

The wording says "next" as the issue's example does; Swing itself is order-free co-purchase
evidence (two users who both took A and B).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from recbole_ext.cooccurrence import swing_scores, user_sequences

logger = logging.getLogger(__name__)

__all__ = ["CollaborativeKnowledge", "sentence", "swing_neighbours", "without_targets"]


def swing_neighbours(user_ids: Tensor, histories: Tensor, lengths: Tensor, targets: Tensor, n_items: int,
                     alpha: float, max_users_per_item: int, leave_out: Tensor | None = None) -> Tensor:
    """Each item's best Swing neighbour over the given (training) rows -> [n_items] ids, 0 = none.

    user_ids [R], histories [R, L], lengths [R], targets [R]: RecBole's training rows, each user's in time
    order. ``leave_out`` [R] bool: rows whose target is taken out of its user's sequence first (TwiSTAR's
    held-out rows: their collaborative sentences then never draw on their own target).
    """
    sequences = user_sequences(user_ids, histories, lengths, targets)
    if leave_out is not None:
        sequences = without_targets(sequences, user_ids, targets, leave_out)
    neighbours, scores = swing_scores(sequences, n_items, alpha=alpha, top_k=1, max_users_per_item=max_users_per_item)
    return torch.where(torch.isfinite(scores[:, 0]), neighbours[:, 0], torch.zeros_like(neighbours[:, 0]))  # [N]


def without_targets(sequences: dict[int, list[int]], user_ids: Tensor, targets: Tensor,
                    leave_out: Tensor) -> dict[int, list[int]]:
    """``sequences`` (:func:`user_sequences` of the same rows) without the targets of the ``leave_out`` rows.

    A user's k-th row (input order, 0-based) predicts item k + 1 of its sequence (the first item is
    never a target). A row whose target is not found there (rows out of time order) is left in, with a
    warning."""
    users = user_ids.detach().cpu().numpy()
    target = targets.detach().cpu().numpy()
    drop = leave_out.detach().cpu().numpy().astype(bool)
    seen: dict[int, int] = {}
    positions: dict[int, set[int]] = {}
    missed = 0
    for r in np.argsort(users, kind="stable"):  # rows grouped by user, input order kept
        u = int(users[r])
        k = seen.get(u, 0)
        seen[u] = k + 1
        if not drop[r]:
            continue
        seq = sequences.get(u, [])
        if k + 1 < len(seq) and seq[k + 1] == int(target[r]):
            positions.setdefault(u, set()).add(k + 1)
        else:
            missed += 1
    if missed:
        logger.warning("Swing: %d left-out rows not found in their user's sequence (rows out of time order?): kept",
                       missed)
    return {u: [i for j, i in enumerate(seq) if j not in positions.get(u, ())] for u, seq in sequences.items()}


def sentence(title_a: str, title_b: str) -> str:
    """One collaborative sentence about items A and B (by their titles)."""
    a = f'"{title_a}"' if title_a else "an untitled item"
    b = f'"{title_b}"' if title_b else "an untitled item"
    return f"Users who bought {a} next bought {b}."


class CollaborativeKnowledge:
    """Per-item sentences and their tokens; :meth:`tokens` gives a batch's knowledge text.

    ``neighbour`` [n_items] (0 = none) from :func:`swing_neighbours`; ``titles`` [n_items] item titles.
    """

    def __init__(self, neighbour: Tensor, titles: Sequence[str], n_last: int):
        self.neighbour = neighbour.long().cpu()  # [N]
        self.titles = list(titles)
        self.n_last = int(n_last)
        self.item_sentence = ["" if int(b) == 0 or a == 0 else sentence(self.titles[a], self.titles[int(b)])
                              for a, b in enumerate(self.neighbour.tolist())]
        self.item_tokens: Tensor | None = None  # [N, S] once encoded

    def sentences(self, history: Sequence[int]) -> list[tuple[int, int, str]]:
        """(A, B, sentence) for the last ``n_last`` history items A (newest first, no padding) that have
        a neighbour B; repeated items are named once."""
        out, seen = [], set()
        for a in reversed([int(i) for i in history if int(i) > 0]):
            if len(seen) == self.n_last:
                break
            if a in seen:
                continue
            seen.add(a)
            b = int(self.neighbour[a])
            if b:
                out.append((a, b, self.item_sentence[a]))
        return out

    def encode(self, text, sentence_tokens: int, offset: int, pad: int) -> None:
        """Tokenise every item's sentence once (``text``: an :class:`~recbole_ext.models.item_text.ItemText`),
        each cut to ``sentence_tokens`` tokens: [N, S] shifted by ``offset``, right-padded with ``pad``."""
        self.item_tokens = text.encode(self.item_sentence, sentence_tokens, offset, pad)
        self.pad = pad

    def tokens(self, history: Tensor) -> Tensor:
        """The knowledge text of a batch: history [B, L] (0 = pad, oldest first) -> tokens [B, n_last * S]
        (the last ``n_last`` distinct items' sentences, newest first, left-aligned, right-padded)."""
        if self.item_tokens is None:
            raise RuntimeError("CollaborativeKnowledge.encode must run before tokens()")
        table = self.item_tokens.to(history.device)
        rows = [[a for a, _, _ in self.sentences(h)] for h in history.cpu().tolist()]
        width = self.n_last * table.shape[1]
        out = torch.full((history.shape[0], max(1, width)), self.pad, dtype=torch.long, device=history.device)
        for r, items in enumerate(rows):
            if items:
                toks = table[torch.tensor(items, device=history.device)].reshape(-1)  # [k * S]
                toks = toks[toks != self.pad]
                out[r, : toks.numel()] = toks
        return out
