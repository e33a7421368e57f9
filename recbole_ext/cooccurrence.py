"""Collaborative statistics of the TRAINING split: item transitions, user sequences, Swing similarity.

Reasoning recommenders cite collaborative evidence in their rationales ("after X, users often
took an item of category C"). The evidence must come from the training split only, so every
function here reads exactly the rows it is given and nothing else: pass it the training rows.

RecBole's sequential training split is a set of rows: history item ids ``[R, L]`` (right-padded
with 0, oldest first, truncated to the last ``L`` items), history lengths ``[R]``, target item id
``[R]`` and user id ``[R]``; ids are RecBole's internal ids and 0 is padding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["TransitionStats", "swing_scores", "user_sequences"]

logger = logging.getLogger(__name__)


def _numpy(values: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class TransitionStats:
    """Counts of consecutive transitions ``a -> b`` (last history item -> target) over given rows.

    Stored as a sparse ``[n_items, n_items]`` CSR matrix (memory O(distinct transitions), so 10^5
    items are fine); row ``a`` holds the counts of what followed ``a``.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"transition matrix must be square, got {matrix.shape}")
        self.matrix = matrix.tocsr()
        self.matrix.sum_duplicates()
        self.matrix.sort_indices()

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def from_rows(
        cls,
        histories: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        n_items: int,
    ) -> TransitionStats:
        """Count ``histories[r, lengths[r] - 1] -> targets[r]`` over the rows (``[R, L]``, ``[R]``, ``[R]``).

        Rows with an empty history or a padding (0) source or target are skipped.
        """
        hist = _numpy(histories).astype(np.int64, copy=False)  # [R, L]
        length = _numpy(lengths).astype(np.int64, copy=False)  # [R]
        target = _numpy(targets).astype(np.int64, copy=False)  # [R]
        if hist.ndim != 2 or length.shape != (hist.shape[0],) or target.shape != (hist.shape[0],):
            raise ValueError(
                f"expected histories [R, L], lengths [R], targets [R]; got {hist.shape}, {length.shape}, {target.shape}"
            )
        if length.size and (length.min() < 0 or length.max() > hist.shape[1]):
            raise ValueError(f"lengths must lie in [0, {hist.shape[1]}]")
        rows = np.flatnonzero(length > 0)
        source = hist[rows, length[rows] - 1]  # [R'] last history item
        dest = target[rows]  # [R']
        keep = (source > 0) & (dest > 0)
        source, dest = source[keep], dest[keep]
        for name, ids in (("history", source), ("target", dest)):
            if ids.size and ids.max() >= n_items:
                raise ValueError(f"{name} item id {int(ids.max())} >= n_items={n_items}")
        matrix = sp.coo_matrix(
            (np.ones(source.size, dtype=np.int64), (source, dest)), shape=(n_items, n_items)
        ).tocsr()  # duplicates are summed
        return cls(matrix)

    def _row(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        """(next item ids ascending, their counts) of item ``a``."""
        if not 0 <= a < self.n_items:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        start, end = self.matrix.indptr[a], self.matrix.indptr[a + 1]
        return self.matrix.indices[start:end], self.matrix.data[start:end]

    def count(self, a: int, b: int) -> int:
        """How many transitions ``a -> b`` the rows hold."""
        items, counts = self._row(int(a))
        pos = np.searchsorted(items, int(b))
        return int(counts[pos]) if pos < items.size and items[pos] == b else 0

    def total(self, a: int) -> int:
        """How many transitions leave ``a``."""
        return int(self._row(int(a))[1].sum())

    def next_items(self, a: int, k: int) -> list[tuple[int, int]]:
        """The ``k`` most frequent ``(item, count)`` after ``a``; ties go to the smaller id."""
        items, counts = self._row(int(a))
        order = np.lexsort((items, -counts))[: max(k, 0)]  # count descending, then id ascending
        return [(int(items[i]), int(counts[i])) for i in order]

    def category_count(self, a: int, items_in_category: Iterable[int] | torch.Tensor | np.ndarray) -> int:
        """How many transitions from ``a`` go to any item of a category.

        ``items_in_category``: a set (or other iterable) of item ids, or a boolean mask ``[n_items]``.
        """
        items, counts = self._row(int(a))
        if isinstance(items_in_category, (torch.Tensor, np.ndarray)) and _numpy(items_in_category).dtype == bool:
            mask = _numpy(items_in_category)
            if mask.shape != (self.n_items,):
                raise ValueError(f"category mask must have shape ({self.n_items},), got {mask.shape}")
            return int(counts[mask[items]].sum())
        wanted = np.fromiter((int(i) for i in items_in_category), dtype=np.int64)
        return int(counts[np.isin(items, wanted)].sum())

    def label_count(self, a: int, labels: np.ndarray, label: int) -> int:
        """How many transitions from ``a`` go to items with ``labels[item] == label``.

        ``labels [n_items]`` (e.g. a category id per item) answers many categories at a cost of
        O(out-degree of ``a``) each, without one mask per category.
        """
        items, counts = self._row(int(a))
        return int(counts[np.asarray(labels)[items] == label].sum())


def user_sequences(
    user_ids: torch.Tensor,
    histories: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
) -> dict[int, list[int]]:
    """Each user's full training sequence, oldest first, rebuilt from their rows.

    Normally it is the longest row's history plus its target. When that history fills all ``L``
    columns it may have been truncated; then the items before it are recovered from the user's
    other full-width rows: each one starts one step earlier, so the first history item of each
    (in row order) precedes the latest row. This needs all of a user's rows, with full-width rows
    in time order (as RecBole's training ``inter_feat`` has them; not a shuffled batch).
    """
    users = _numpy(user_ids).astype(np.int64, copy=False)  # [R]
    hist = _numpy(histories).astype(np.int64, copy=False)  # [R, L]
    length = _numpy(lengths).astype(np.int64, copy=False)  # [R]
    target = _numpy(targets).astype(np.int64, copy=False)  # [R]
    width = hist.shape[1]
    order = np.argsort(users, kind="stable")  # rows grouped by user, input order kept within a user
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    out: dict[int, list[int]] = {}
    for group in np.split(order, bounds) if order.size else []:
        group_lengths = length[group]
        longest = group_lengths.max()
        latest = group[np.flatnonzero(group_lengths == longest)[-1]]  # the last of the longest rows
        sequence = [int(i) for i in hist[latest, :longest]] + [int(target[latest])]
        if longest == width:
            full = group[group_lengths == width]  # ends with `latest`
            sequence = [int(hist[r, 0]) for r in full[:-1]] + sequence
        out[int(users[group[0]])] = sequence
    return out


def swing_scores(
    sequences: Mapping[int, Sequence[int]] | Sequence[Sequence[int]],
    n_items: int,
    alpha: float = 1.0,
    top_k: int = 20,
    max_users_per_item: int = 200,
    user_weight: bool = False,
) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """Swing item-item similarity and each item's ``top_k`` neighbours.

    Swing (Yang et al., "Large Scale Product Graph Construction for Recommendation in E-commerce",
    Alibaba, 2020): ``sim(i, j) = sum over user pairs u < v who both interacted with i and j of
    1 / (alpha + |I_u ∩ I_v|)``, where ``I_u`` is the set of items of ``u``. A pair of users who
    share little besides ``i`` and ``j`` is strong evidence; a pair who share everything is weak.
    ``user_weight=True`` multiplies each pair's term by ``1 / sqrt(|I_u| * |I_v|)`` (a common
    variant that damps heavy users).

    ``sequences``: user id -> items (a dict), or a list indexed by user id; order and repeats are
    ignored; 0 (padding) is dropped. Users are taken in ascending id, and item ``i`` uses only its
    first ``max_users_per_item`` users (``U_i``), so ``sim(i, j)`` counts the pairs of ``U_i``
    (exact, and symmetric, when no item has more users than the cap).

    Cost: for item ``i`` with ``m = |U_i| <= max_users_per_item`` and ``n_i`` distinct items among
    those users, two dense products of ``O(m^2 n_i)``; in all ``O(sum_i m_i^2 n_i)`` time and
    ``O(max m_i * n_i)`` extra memory, bounded by the cap.

    Returns ``neighbours [n_items, top_k]`` (ids, by score descending, ties to the smaller id) and
    ``scores [n_items, top_k]``; missing neighbours are id 0 with score ``-inf``; item 0 has none,
    and an item is never its own neighbour.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if max_users_per_item < 2:
        raise ValueError(f"max_users_per_item must be >= 2 (Swing needs user pairs), got {max_users_per_item}")
    items_of = sequences.items() if isinstance(sequences, Mapping) else enumerate(sequences)
    user_items: list[np.ndarray] = []
    for _, seq in sorted(items_of, key=lambda pair: int(pair[0])):
        ids = np.unique(np.asarray(list(seq), dtype=np.int64))
        ids = ids[ids > 0]
        if ids.size and ids.max() >= n_items:
            raise ValueError(f"item id {int(ids.max())} >= n_items={n_items}")
        user_items.append(ids)
    n_users = len(user_items)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([ids.size for ids in user_items])
    indices = np.concatenate(user_items) if user_items else np.empty(0, dtype=np.int64)
    by_user = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n_users, n_items))  # [U, N]
    by_item = by_user.T.tocsr()  # [N, U], users ascending in each row
    by_item.sort_indices()
    sizes = np.diff(indptr).astype(np.float64)  # [U] |I_u|

    neighbours = torch.zeros((n_items, top_k), dtype=torch.long)  # [N, K]
    scores = torch.full((n_items, top_k), float("-inf"), dtype=torch.float32)  # [N, K]
    for item in range(1, n_items):
        users = by_item.indices[by_item.indptr[item] : by_item.indptr[item + 1]][:max_users_per_item]  # [m]
        if users.size < 2 or top_k == 0:
            continue
        sub = by_user[users]  # [m, N] sparse
        columns = np.unique(sub.indices)  # [n_i] items of these users
        dense = sub[:, columns].toarray()  # [m, n_i] 0/1
        common = dense @ dense.T  # [m, m] |I_u ∩ I_v|
        weight = np.triu(1.0 / (alpha + common), k=1)  # [m, m] pairs u < v
        if user_weight:
            damp = 1.0 / np.sqrt(sizes[users])  # [m]
            weight *= damp[:, None] * damp[None, :]
        # sim(i, j) = sum_{u<v} w_uv x_u[j] x_v[j] = sum_u x_u[j] (W x)_u[j]; all pairs hold i.
        row = (dense * (weight @ dense)).sum(axis=0)  # [n_i]
        keep = (columns != item) & (row > 0)
        candidates, values = columns[keep], row[keep]
        order = np.lexsort((candidates, -values))[:top_k]  # score descending, then id ascending
        neighbours[item, : order.size] = torch.from_numpy(candidates[order].astype(np.int64))
        scores[item, : order.size] = torch.from_numpy(values[order].astype(np.float32))
    logger.info(
        "swing neighbours of %d items from %d users (alpha=%s, top_k=%d, cap=%d)",
        n_items,
        n_users,
        alpha,
        top_k,
        max_users_per_item,
    )
    return neighbours, scores
