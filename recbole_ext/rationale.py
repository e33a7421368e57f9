"""Deterministic, data-driven rationales (chain-of-thought text) for sequential recommendation.

LASAR trains its reasoner on an explicit rationale for each TRAINING sample (history -> target);
TwiSTAR's slow model writes collaborative sentences. Both are made here offline, without an LLM,
from item text (:func:`item_facts`) and training-split transition counts
(:class:`recbole_ext.cooccurrence.TransitionStats`), by fixed templates, one reasoning step each:

1. history summary (history non-empty): its length and the titles of the last one or two items;
2. dominant category (a category occurs at least twice among the last 10 history items);
3. collaborative evidence (count > 0): of the last 3 history items, the one with the most
   training transitions into the target's category, with that count;
4. conclusion (always): the target's category, title, year and brand (the teacher signal).

A sentence names only history items' text, the target's own text and counts, never another
item's text. Sentences beyond ``max_sentences`` are dropped from the middle (the first kept, the
conclusion last). :func:`encode_rationales` turns the sentences into padded token ids with a
``[SEP]`` after each sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recbole_ext.cooccurrence import TransitionStats
from recbole_ext.text import TEMPLATES, read_item_fields
from recbole_ext.text_vocab import TextVocab

__all__ = [
    "EMPTY_FACTS",
    "MAX_TITLE_WORDS",
    "TEMPLATE_TEXTS",
    "ItemFacts",
    "RationaleBuilder",
    "encode_rationales",
    "item_facts",
    "short_title",
    "split_categories",
    "truncate_sentences",
]

logger = logging.getLogger(__name__)

MAX_TITLE_WORDS = 12
CATEGORY_WINDOW = 10  # last history items scanned for a dominant category
EVIDENCE_WINDOW = 3  # last history items scanned for collaborative evidence

#: The templates' fixed words (with every digit), to add to a text vocabulary's training texts (at
#: least ``min_frequency`` times: BPE merges only pairs seen that often) so that rationales encode
#: without falling back to rare subwords.
TEMPLATE_TEXTS: tuple[str, ...] = (
    'The user has 1 earlier item: "a".',
    'The user has 2 earlier items, the latest "a" and then "b".',
    "3 of the last 10 items are in a.",
    'After "a", the next item was in b 1 time, or 4 times, in the training data.',
    'So the next item is likely in a: "b" (1995) by c.',
    "0 1 2 3 4 5 6 7 8 9 an untitled item",
    'Users who bought "a" next bought "b".',  # TwiSTAR's collaborative sentences (models/twistar/knowledge.py)
)


@dataclass(frozen=True)
class ItemFacts:
    """What a rationale may say about one item: short title, most specific category, brand, year."""

    title: str = ""
    category: str = ""
    categories: tuple[str, ...] = ()
    brand: str = ""
    year: str = ""


EMPTY_FACTS = ItemFacts()

_TIGHT_COMMA = re.compile(r",(?! )")


def short_title(text: str, max_words: int = MAX_TITLE_WORDS) -> str:
    """The first ``max_words`` words of ``text`` (whitespace folded), without trailing ``.,;:``."""
    return " ".join(str(text).split()[:max_words]).rstrip(".,;: ")


def split_categories(text: str, tight: bool) -> tuple[str, ...]:
    """A category path as a tuple, most general first.

    ``tight``: the file separates levels by a bare ``,`` (names may hold ``", "``, e.g. "Tapes,
    Adhesives & Sealants", as in scientific2018); otherwise levels are separated by ``", "``.
    """
    parts = _TIGHT_COMMA.split(text) if tight else str(text).split(", ")
    return tuple(p for p in (" ".join(part.split()) for part in parts) if p)


def _amazon_facts(fields: dict[str, str], tight: bool) -> ItemFacts:
    categories = split_categories(fields.get("categories") or "", tight)
    return ItemFacts(
        title=short_title(fields.get("title") or ""),
        category=categories[-1] if categories else "",
        categories=categories,
        brand=" ".join((fields.get("brand") or "").split()),
    )


def _movielens_facts(fields: dict[str, str]) -> ItemFacts:
    genres = tuple((fields.get("class") or "").split())
    return ItemFacts(
        title=short_title(fields.get("movie_title") or ""),
        category=genres[0] if genres else "",
        categories=genres,
        year=(fields.get("release_year") or "").strip(),
    )


def item_facts(item_file: str | Path, id2token: Sequence[str], text_kind: str) -> list[ItemFacts]:
    """Facts of every RecBole item id (``id2token``: e.g. ``dataset.field2id_token["item_id"]``).

    ``text_kind``: ``amazon`` (title, categories path, brand) or ``movielens`` (movie_title,
    release_year, class: space-separated genres, the first is the category); a dataset's kind is
    ``recbole_ext.text.template_for(name).name``. Id 0 (padding) and tokens missing from the file
    get empty facts. Amazon category separators are detected per file (see :func:`split_categories`).
    """
    if text_kind not in TEMPLATES:
        raise ValueError(f"unknown text_kind {text_kind!r}; expected one of {sorted(TEMPLATES)}")
    fields_of = read_item_fields(item_file)
    tight = any(_TIGHT_COMMA.search(fields.get("categories") or "") for fields in fields_of.values())
    out: list[ItemFacts] = [EMPTY_FACTS]
    missing = 0
    for token in list(id2token)[1:]:
        fields = fields_of.get(str(token))
        if fields is None:
            missing += 1
            out.append(EMPTY_FACTS)
        elif text_kind == "movielens":
            out.append(_movielens_facts(fields))
        else:
            out.append(_amazon_facts(fields, tight))
    if missing:
        logger.warning("%d of %d items have no row in %s: their facts are empty", missing, len(out) - 1, item_file)
    return out


def truncate_sentences(sentences: list[str], max_sentences: int) -> list[str]:
    """At most ``max_sentences``: drop middle sentences, keep the first and the last (conclusion)."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    if len(sentences) <= max_sentences:
        return list(sentences)
    if max_sentences == 1:
        return [sentences[-1]]
    return list(sentences[: max_sentences - 1]) + [sentences[-1]]


def _name(facts: ItemFacts) -> str:
    return f'"{facts.title}"' if facts.title else "an untitled item"


class RationaleBuilder:
    """Template rationales from item facts and training transitions (see the module docstring).

    ``facts[i]`` describes RecBole item ``i`` (one per item, as :func:`item_facts` returns);
    ``transitions`` must be counted on the TRAINING rows only. When the sample being explained is
    itself one of those rows, its own transition ``history[-1] -> target`` is among the counts;
    ``leave_one_out=True`` takes it out (one fewer from the last history item's count), so that a
    training rationale cites the same kind of evidence as one made for an unseen sample.
    """

    def __init__(
        self,
        facts: Sequence[ItemFacts],
        transitions: TransitionStats,
        max_sentences: int = 4,
        leave_one_out: bool = False,
    ) -> None:
        if len(facts) != transitions.n_items:
            raise ValueError(f"{len(facts)} item facts for {transitions.n_items} items")
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
        self.facts = list(facts)
        self.transitions = transitions
        self.max_sentences = max_sentences
        self.leave_one_out = leave_one_out
        names = sorted({f.category for f in self.facts if f.category})
        self._category_id = {name: index for index, name in enumerate(names)}
        # [n_items] category id of each item, -1 for none: one lookup answers any category's count.
        self._labels = np.array([self._category_id.get(f.category, -1) for f in self.facts], dtype=np.int64)

    def sentences(self, history: Sequence[int], target: int) -> list[str]:
        """The rationale of ``history`` (RecBole ids, oldest first, no padding) -> ``target``."""
        history = [int(i) for i in history]
        goal = self.facts[int(target)]
        out = []
        if history:
            out.append(self._summary(history))
            dominant = self._dominant_category(history)
            if dominant:
                out.append(dominant)
            evidence = self._evidence(history, goal)
            if evidence:
                out.append(evidence)
        out.append(self._conclusion(goal))
        return truncate_sentences(out, self.max_sentences)

    def _summary(self, history: list[int]) -> str:
        last = self.facts[history[-1]]
        if len(history) == 1:
            return f"The user has 1 earlier item: {_name(last)}."
        previous = self.facts[history[-2]]
        return f"The user has {len(history)} earlier items, the latest {_name(previous)} and then {_name(last)}."

    def _dominant_category(self, history: list[int]) -> str | None:
        window = history[-CATEGORY_WINDOW:]
        counts: dict[str, int] = {}
        latest: dict[str, int] = {}
        for position, item in enumerate(window):
            category = self.facts[item].category
            if category:
                counts[category] = counts.get(category, 0) + 1
                latest[category] = position
        if not counts:
            return None
        # most frequent; ties: the one seen most recently
        best = max(counts, key=lambda c: (counts[c], latest[c]))
        if counts[best] < 2:
            return None
        return f"{counts[best]} of the last {len(window)} items are in {best}."

    def _evidence(self, history: list[int], goal: ItemFacts) -> str | None:
        if not goal.category:
            return None
        label = self._category_id[goal.category]
        best_item, best_count = 0, 0
        for item in reversed(history[-EVIDENCE_WINDOW:]):  # newest first: ties go to the most recent
            count = self.transitions.label_count(item, self._labels, label)
            if self.leave_one_out and item == history[-1]:
                count = max(count - 1, 0)  # the sample's own transition history[-1] -> target
            if count > best_count:
                best_item, best_count = item, count
        if best_count == 0:
            return None
        times = "time" if best_count == 1 else "times"
        return (
            f"After {_name(self.facts[best_item])}, the next item was in {goal.category} "
            f"{best_count} {times} in the training data."
        )

    @staticmethod
    def _conclusion(goal: ItemFacts) -> str:
        where = f" in {goal.category}" if goal.category else ""
        year = f" ({goal.year})" if goal.year else ""
        brand = f" by {goal.brand}" if goal.brand else ""
        return f"So the next item is likely{where}: {_name(goal)}{year}{brand}."

    def batch(self, histories: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> list[list[str]]:
        """Rationales of a batch: ``histories [B, L]`` (right-padded), ``lengths [B]``, ``targets [B]``."""
        rows = histories.detach().cpu().tolist()  # [B][L]
        sizes = lengths.detach().cpu().tolist()  # [B]
        goals = targets.detach().cpu().tolist()  # [B]
        return [self.sentences(row[:size], goal) for row, size, goal in zip(rows, sizes, goals, strict=True)]


def encode_rationales(
    vocab: TextVocab,
    batch_sentences: list[list[str]],
    max_sentence_tokens: int,
    offset: int,
    pad: int,
    max_sentences: int,
) -> tuple[torch.LongTensor, torch.LongTensor, torch.LongTensor]:
    """Token ids of rationales, one row per sample, each sentence closed by ``[SEP]``.

    Each sentence is encoded, cut to ``max_sentence_tokens`` and followed by ``[SEP]``; ids are
    shifted by ``offset`` (``[SEP]`` becomes ``vocab.sep_id + offset``). A sample with more than
    ``max_sentences`` sentences is cut as :func:`truncate_sentences` does.

    Returns ``tokens [B, T]`` (right-padded with ``pad``; T = the longest row), ``ends [B, S]``
    (position of sentence j's ``[SEP]`` in row b, -1 where there is no sentence j; S =
    ``max_sentences``) and ``n_sentences [B]``.
    """
    kept = [truncate_sentences(list(s), max_sentences) for s in batch_sentences]
    encoded = iter(vocab.encode([s for sample in kept for s in sample], max_tokens=max_sentence_tokens))
    sep = vocab.sep_id + int(offset)
    rows: list[list[int]] = []
    ends = torch.full((len(kept), max_sentences), -1, dtype=torch.long)  # [B, S]
    for b, sample in enumerate(kept):
        row: list[int] = []
        for j in range(len(sample)):
            row.extend(int(i) + int(offset) for i in next(encoded))
            row.append(sep)
            ends[b, j] = len(row) - 1
        rows.append(row)
    width = max((len(r) for r in rows), default=0)
    tokens = torch.full((len(rows), width), int(pad), dtype=torch.long)  # [B, T]
    for b, row in enumerate(rows):
        if row:
            tokens[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    n_sentences = torch.tensor([len(s) for s in kept], dtype=torch.long)  # [B]
    return tokens, ends, n_sentences
