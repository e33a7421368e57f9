"""Rationales: exact template sentences, training-rows-only counts, no other item's text, encoding."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pytest
import torch

from recbole_ext.cooccurrence import TransitionStats
from recbole_ext.data.prepare import recbole_example_dir
from recbole_ext.rationale import (
    EMPTY_FACTS,
    ItemFacts,
    RationaleBuilder,
    encode_rationales,
    item_facts,
    truncate_sentences,
)
from recbole_ext.text_vocab import train_text_vocab

# Every item has a unique title marker tmkN and brand marker bmkN; categories are shared words.
FACTS = [
    EMPTY_FACTS,
    ItemFacts("Hammer tmk1", "Widgets", ("Shop", "Widgets"), "bmk1"),
    ItemFacts("Saw tmk2", "Widgets", ("Shop", "Widgets"), "bmk2"),
    ItemFacts("Drill tmk3", "Widgets", ("Shop", "Widgets"), "bmk3"),
    ItemFacts("Phone tmk4", "Gadgets", ("Shop", "Gadgets"), "bmk4"),
    ItemFacts("Tablet tmk5", "Gadgets", ("Shop", "Gadgets"), "bmk5"),
    ItemFacts("Wrench tmk6", "Tools", ("Shop", "Tools"), "bmk6"),
    ItemFacts("Pliers tmk7", "Tools", ("Shop", "Tools"), ""),
    ItemFacts("Orphan tmk8", "", (), "bmk8"),
]
N_ITEMS = len(FACTS)
CATEGORIES = ("Widgets", "Gadgets", "Tools", "Shop")
# Training transitions a -> b (one row each); HELD_OUT rows are never passed to the statistics.
TRAIN_PAIRS = [(1, 4)] * 2 + [(2, 5)] * 3 + [(4, 5), (4, 6), (2, 1), (6, 7)] + [(3, 4)] * 2
HELD_OUT_PAIRS = [(4, 5)] * 5


def _stats(pairs: list[tuple[int, int]]) -> TransitionStats:
    hist = torch.tensor([[a, 0] for a, _ in pairs])  # [R, 2] one-item histories
    return TransitionStats.from_rows(
        hist, torch.ones(len(pairs), dtype=torch.long), torch.tensor([b for _, b in pairs]), N_ITEMS
    )


@pytest.fixture
def builder() -> RationaleBuilder:
    return RationaleBuilder(FACTS, _stats(TRAIN_PAIRS), max_sentences=4)


# Sample A: history [1, 2, 4] -> 5 (Gadgets = {4, 5}). Transitions into Gadgets from the last 3
# history items: 1 -> 4 twice = 2; 2 -> 5 three times = 3; 4 -> 5 once = 1 (4 -> 6 is Tools). Best: 2 (3).
SAMPLE_A = [
    'The user has 3 earlier items, the latest "Saw tmk2" and then "Phone tmk4".',
    "2 of the last 3 items are in Widgets.",
    'After "Saw tmk2", the next item was in Gadgets 3 times in the training data.',
    'So the next item is likely in Gadgets: "Tablet tmk5" by bmk5.',
]


def test_exact_sentences(builder: RationaleBuilder) -> None:
    assert builder.sentences([1, 2, 4], 5) == SAMPLE_A
    # one history item; 6 -> 7 once into Tools; the target has no brand
    assert builder.sentences([6], 7) == [
        'The user has 1 earlier item: "Wrench tmk6".',
        'After "Wrench tmk6", the next item was in Tools 1 time in the training data.',
        'So the next item is likely in Tools: "Pliers tmk7".',
    ]
    # a target without a category: no evidence sentence
    assert builder.sentences([3], 8) == [
        'The user has 1 earlier item: "Drill tmk3".',
        'So the next item is likely: "Orphan tmk8" by bmk8.',
    ]
    assert builder.sentences([], 1) == ['So the next item is likely in Widgets: "Hammer tmk1" by bmk1.']


def test_ties_and_windows(builder: RationaleBuilder) -> None:
    # dominant tie: Widgets x2 (last at position 2) and Gadgets x2 (last at position 3): the more recent wins.
    # evidence into Tools from 4, 2, 5: only 4 -> 6 (once).
    assert builder.sentences([1, 4, 2, 5], 6)[1:3] == [
        "2 of the last 4 items are in Gadgets.",
        'After "Phone tmk4", the next item was in Tools 1 time in the training data.',
    ]
    # evidence tie: 1 -> Gadgets twice (1 -> 4 x2) and 3 -> Gadgets twice (3 -> 4 x2): the more recent (3) wins
    assert builder.sentences([1, 3], 5)[1:3] == [
        "2 of the last 2 items are in Widgets.",
        'After "Drill tmk3", the next item was in Gadgets 2 times in the training data.',
    ]
    # Gadgets occurs twice, but outside the last 10 items; nothing in the last 3 (8 x2, 1) leads into Widgets
    assert builder.sentences([4, 5] + [8] * 9 + [1], 2) == [
        'The user has 12 earlier items, the latest "Orphan tmk8" and then "Hammer tmk1".',
        'So the next item is likely in Widgets: "Saw tmk2" by bmk2.',
    ]


def test_counts_come_from_the_given_rows_only() -> None:
    with_held_out = RationaleBuilder(FACTS, _stats(TRAIN_PAIRS + HELD_OUT_PAIRS))
    # with the held-out rows, 4 -> 5 would count 1 + 5 = 6 and beat 2's 3
    assert with_held_out.sentences([1, 2, 4], 5)[2] == (
        'After "Phone tmk4", the next item was in Gadgets 6 times in the training data.'
    )
    assert RationaleBuilder(FACTS, _stats(TRAIN_PAIRS)).sentences([1, 2, 4], 5) == SAMPLE_A


def test_counts_match_a_brute_force_count(builder: RationaleBuilder) -> None:
    rng = random.Random(0)
    pattern = re.compile(r'After "(.+)", the next item was in (\w+) (\d+) times? in the training data\.')
    checked = 0
    for _ in range(300):
        history = [rng.randint(1, N_ITEMS - 1) for _ in range(rng.randint(1, 6))]
        target = rng.randint(1, N_ITEMS - 1)
        category = FACTS[target].category
        into = {a: sum(1 for x, b in TRAIN_PAIRS if x == a and FACTS[b].category == category) for a in history}
        best = max(into[a] for a in history[-3:]) if category else 0
        found = [m for s in builder.sentences(history, target) if (m := pattern.fullmatch(s))]
        if best == 0:
            assert not found
            continue
        (match,) = found
        assert match.group(2) == category and int(match.group(3)) == best
        named = [a for a in history[-3:] if FACTS[a].title == match.group(1)]
        assert named and into[named[0]] == best
        checked += 1
    assert checked > 50


def test_leave_one_out_drops_the_samples_own_transition() -> None:
    loo = RationaleBuilder(FACTS, _stats(TRAIN_PAIRS), leave_one_out=True)
    assert loo.sentences([6], 7) == [
        'The user has 1 earlier item: "Wrench tmk6".',
        'So the next item is likely in Tools: "Pliers tmk7".',
    ]
    # 4 -> Gadgets: 1 - 1 = 0; 2 -> Gadgets stays 3
    assert loo.sentences([1, 2, 4], 5) == SAMPLE_A


def test_sentences_mention_only_history_and_target(builder: RationaleBuilder) -> None:
    rng = random.Random(1)
    for _ in range(500):
        history = [rng.randint(1, N_ITEMS - 1) for _ in range(rng.randint(0, 12))]
        target = rng.randint(1, N_ITEMS - 1)
        allowed = set(history) | {target}
        allowed_categories = {c for i in allowed for c in (FACTS[i].category,) if c}
        sentences = builder.sentences(history, target)
        assert 1 <= len(sentences) <= 4 and (len(sentences) >= 2 or not history)
        for sentence in sentences:
            for item in set(range(1, N_ITEMS)) - allowed:
                assert f"tmk{item}" not in sentence and f"bmk{item}" not in sentence, (history, target, sentence)
            for category in CATEGORIES:
                if re.search(rf"\b{category}\b", sentence):
                    assert category in allowed_categories, (history, target, sentence)
        assert sentences[-1].startswith("So the next item is likely")
        assert builder.sentences(history, target) == sentences  # deterministic, no state


def test_max_sentences_keeps_first_and_conclusion() -> None:
    stats = _stats(TRAIN_PAIRS)
    assert RationaleBuilder(FACTS, stats, max_sentences=3).sentences([1, 2, 4], 5) == [
        SAMPLE_A[0],
        SAMPLE_A[1],
        SAMPLE_A[3],
    ]
    assert RationaleBuilder(FACTS, stats, max_sentences=2).sentences([1, 2, 4], 5) == [SAMPLE_A[0], SAMPLE_A[3]]
    assert RationaleBuilder(FACTS, stats, max_sentences=1).sentences([1, 2, 4], 5) == [SAMPLE_A[3]]
    assert truncate_sentences(["a", "b", "c", "d", "e"], 3) == ["a", "b", "e"]
    with pytest.raises(ValueError):
        truncate_sentences(["a"], 0)
    with pytest.raises(ValueError, match="item facts"):
        RationaleBuilder(FACTS[:-1], stats)


def test_batch_matches_sentences(builder: RationaleBuilder) -> None:
    histories = torch.tensor([[1, 2, 4, 0], [6, 0, 0, 0], [0, 0, 0, 0]])  # [B, L]
    lengths = torch.tensor([3, 1, 0])
    targets = torch.tensor([5, 7, 1])
    assert builder.batch(histories, lengths, targets) == [
        builder.sentences([1, 2, 4], 5),
        builder.sentences([6], 7),
        builder.sentences([], 1),
    ]


def test_encode_rationales_exact(tmp_path: Path) -> None:
    # Tiny vocabulary: [UNK] 0, [SEP] 1, "." 2, "a" 3, "b" 4, "▁" 5 (no merges); offset 10 -> [SEP] = 11.
    vocab = train_text_vocab(["ab ba", "b.a"], 6, 1, tmp_path)
    # "ab" -> ▁ a b = 5 3 4, cut to 2 -> 15 13; "b a" -> ▁ b ▁ a -> 15 14; "ba" -> ▁ b a -> 15 14; "" -> nothing
    tokens, ends, n = encode_rationales(
        vocab, [["ab", "b a"], ["ba"], [], [""]], max_sentence_tokens=2, offset=10, pad=99, max_sentences=3
    )
    assert torch.equal(
        tokens,
        torch.tensor(
            [
                [15, 13, 11, 15, 14, 11],
                [15, 14, 11, 99, 99, 99],
                [99, 99, 99, 99, 99, 99],
                [11, 99, 99, 99, 99, 99],
            ]
        ),
    )
    assert torch.equal(ends, torch.tensor([[2, 5, -1], [2, -1, -1], [-1, -1, -1], [0, -1, -1]]))
    assert torch.equal(n, torch.tensor([2, 1, 0, 1]))
    # too many sentences: the middle ones go, the last stays last
    tokens, ends, n = encode_rationales(vocab, [["a", "b", "a b", "b"]], 4, offset=0, pad=0, max_sentences=2)
    assert tokens.tolist() == [[5, 3, 1, 5, 4, 1]] and ends.tolist() == [[2, 5]] and n.tolist() == [2]


ITEM_HEADER_AMAZON = "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tdescription:token_seq\n"


def test_item_facts_amazon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "toy.item"
    path.write_text(
        ITEM_HEADER_AMAZON
        + "x1\tStanley TRA708T  Sharpshooter 1/2-Inch Leg Length Staples, Steel (1000 Count) Big Pack, of Two."
        "\tIndustrial & Scientific,Fasteners,Staples\tStanley\tdesc\n"
        + "x2\tGlue Stick.\tIndustrial & Scientific,Tapes, Adhesives & Sealants\t\t\n"
        + "x3\tNo Category\t\tAcme\t\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="recbole_ext.rationale"):
        facts = item_facts(path, ["[PAD]", "x2", "x1", "gone", "x3"], "amazon")
    assert "1 of 4 items have no row" in caplog.text
    assert facts == [
        EMPTY_FACTS,
        ItemFacts(
            "Glue Stick", "Tapes, Adhesives & Sealants", ("Industrial & Scientific", "Tapes, Adhesives & Sealants")
        ),
        ItemFacts(
            "Stanley TRA708T Sharpshooter 1/2-Inch Leg Length Staples, Steel (1000 Count) Big Pack",
            "Staples",
            ("Industrial & Scientific", "Fasteners", "Staples"),
            "Stanley",
        ),
        EMPTY_FACTS,
        ItemFacts("No Category", "", (), "Acme"),
    ]
    # levels separated by ", " (the 2014/2023 readers' format)
    loose = tmp_path / "loose.item"
    loose.write_text(
        ITEM_HEADER_AMAZON + "y\tBox\tIndustrial & Scientific, Fasteners, Staples\tB\t\n", encoding="utf-8"
    )
    assert item_facts(loose, ["[PAD]", "y"], "amazon")[1].categories == (
        "Industrial & Scientific",
        "Fasteners",
        "Staples",
    )
    with pytest.raises(ValueError, match="text_kind"):
        item_facts(loose, ["[PAD]", "y"], "books")


def test_item_facts_movielens(tmp_path: Path) -> None:
    path = tmp_path / "toy.item"
    path.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tUsual Suspects, The\t1995\tCrime Thriller\n"
        "3\tUntitled\t\t\n",
        encoding="utf-8",
    )
    facts = item_facts(path, ["[PAD]", "3", "1", "2"], "movielens")
    assert facts == [
        EMPTY_FACTS,
        ItemFacts("Untitled"),
        ItemFacts("Toy Story", "Animation", ("Animation", "Children's", "Comedy"), "", "1995"),
        ItemFacts("Usual Suspects, The", "Crime", ("Crime", "Thriller"), "", "1995"),
    ]
    conclusion = RationaleBuilder(facts, _empty_stats(len(facts))).sentences([], 2)
    assert conclusion == ['So the next item is likely in Animation: "Toy Story" (1995).']


def _empty_stats(n_items: int) -> TransitionStats:
    return TransitionStats.from_rows(
        torch.zeros((0, 1), dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        n_items,
    )


def test_item_facts_on_recbole_ml100k() -> None:
    path = recbole_example_dir() / "ml-100k" / "ml-100k.item"
    if not path.exists():
        pytest.skip(f"{path} not found (RecBole's wheel ships it)")
    facts = item_facts(path, ["[PAD]", "1", "2"], "movielens")
    assert facts[1] == ItemFacts("Toy Story", "Animation", ("Animation", "Children's", "Comedy"), "", "1995")
    assert facts[2] == ItemFacts("GoldenEye", "Action", ("Action", "Adventure", "Thriller"), "", "1995")
