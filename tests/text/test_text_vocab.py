"""TextVocab: special ids, exact encodings, round trip, deterministic training, the on-disk cache."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import recbole_ext.text_vocab as text_vocab_mod
from recbole_ext.text_vocab import TextVocab, encode_padded, text_vocab_key, train_text_vocab

CORPUS = [
    "Stanley TRA708T Sharpshooter 1/2-Inch Leg Length Staples, Steel (1000 Count).",
    "Kreg 1-1/4-Inch Coarse Pocket Hole Screws with Washer-Head, 500-Pack.",
    "Café crème: a strong coffee, served hot.",
    "Toy Story (1995): Animation, Children's, Comedy.",
]


def _tiny(tmp_path: Path, vocab_size: int = 6) -> TextVocab:
    # Words "▁ab", "▁ba", "▁b", ".", "a". Alphabet (sorted by code point) after the specials:
    # "." = 2, "a" = 3, "b" = 4, "▁" = 5. The most frequent pair is ("▁", "b") (in "▁ba" and "▁b"),
    # so with a 7th id the first merge is "▁b" = 6.
    return train_text_vocab(["ab ba", "b.a"], vocab_size, 1, tmp_path / "tiny")


def test_special_token_ids_and_tiny_alphabet(tmp_path: Path) -> None:
    vocab = _tiny(tmp_path)
    assert (vocab.unk_id, vocab.sep_id) == (0, 1)
    assert vocab.tokenizer.get_vocab() == {"[UNK]": 0, "[SEP]": 1, ".": 2, "a": 3, "b": 4, "\u2581": 5}
    assert vocab.size == 6
    assert vocab.encode(["ab", "b a", "ab.c"]) == [[5, 3, 4], [5, 4, 5, 3], [5, 3, 4, 2, 0]]  # "c" unseen: [UNK]
    assert vocab.encode(["ab.c"], max_tokens=2) == [[5, 3]]
    assert vocab.encode([""]) == [[]] and vocab.encode([]) == []
    merged = _tiny(tmp_path, vocab_size=7)
    assert merged.tokenizer.token_to_id("\u2581b") == 6
    assert merged.encode(["b a", "ab"]) == [[6, 5, 3], [5, 3, 4]]
    assert merged.decode([1, 6, 5, 3, 1]) == "[SEP] b a[SEP]"
    assert merged.decode([1, 6, 5, 3, 1], skip_special=True) == "b a"


def test_encode_padded_exact(tmp_path: Path) -> None:
    vocab = _tiny(tmp_path)
    out = encode_padded(vocab, ["ab", "b a", "", "ab.c"], max_tokens=3, offset=10, pad=-7)
    expected = torch.tensor([[15, 13, 14], [15, 14, 15], [-7, -7, -7], [15, 13, 14]])
    assert out.dtype == torch.long and torch.equal(out, expected)
    short = encode_padded(vocab, ["a"], max_tokens=4, offset=0, pad=99)
    assert torch.equal(short, torch.tensor([[5, 3, 99, 99]]))


def test_round_trip_is_the_normalised_text(tmp_path: Path) -> None:
    vocab = train_text_vocab(CORPUS, 120, 2, tmp_path)
    texts = [
        "Stanley Staples, Steel (1000 Count).",
        "Pocket  Hole\tScrews 1-1/4-Inch",
        "café CRÈME: served hot.",
        "Toy Story (1995)",
    ]
    for text, ids in zip(texts, vocab.encode(texts), strict=True):
        assert 0 not in ids  # every character was seen
        assert vocab.decode(ids) == vocab.normalize(text)
    assert vocab.normalize("café  CRÈME:\tserved ") == "cafe creme: served"


def test_training_is_deterministic_across_dirs_and_processes(tmp_path: Path) -> None:
    first = train_text_vocab(CORPUS, 120, 2, tmp_path / "a")
    second = train_text_vocab(CORPUS, 120, 2, tmp_path / "b")
    assert first.cache_key == second.cache_key == text_vocab_key(CORPUS, 120, 2)
    assert first.digest == second.digest
    assert first.to_json() == second.to_json()
    files = [next((tmp_path / d).glob("text_vocab.*.json")) for d in ("a", "b")]
    assert files[0].read_bytes() == files[1].read_bytes()
    # another process has other hash-map seeds inside the Rust trainer
    code = (
        "import sys; from recbole_ext.text_vocab import train_text_vocab; "
        f"print(train_text_vocab({CORPUS!r}, 120, 2, sys.argv[1]).digest)"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c")], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == first.digest


def test_cache_key_depends_on_texts_order_and_settings() -> None:
    base = text_vocab_key(CORPUS, 120, 2)
    assert text_vocab_key(CORPUS[::-1], 120, 2) != base
    assert text_vocab_key(CORPUS, 121, 2) != base
    assert text_vocab_key(CORPUS, 120, 3) != base
    assert text_vocab_key(["ab", "c"], 120, 2) != text_vocab_key(["a", "bc"], 120, 2)


def test_cache_hit_does_not_retrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = train_text_vocab(CORPUS, 120, 2, tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again despite a cached vocabulary")

    monkeypatch.setattr(text_vocab_mod, "_train", refuse)
    again = train_text_vocab(CORPUS, 120, 2, tmp_path)
    assert again.digest == first.digest and again.cache_key == first.cache_key
    with pytest.raises(AssertionError, match="trained again"):
        train_text_vocab(CORPUS, 121, 2, tmp_path)  # other settings: a miss


@pytest.mark.parametrize("garbage", ["{not json", '{"version": "1.0"}', ""])
def test_corrupt_cache_is_retrained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, garbage: str
) -> None:
    first = train_text_vocab(CORPUS, 120, 2, tmp_path)
    (path,) = tmp_path.glob("text_vocab.*.json")
    path.write_text(garbage, encoding="utf-8")
    calls = []
    real = text_vocab_mod._train

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(text_vocab_mod, "_train", counting)
    with caplog.at_level(logging.WARNING, logger="recbole_ext.text_vocab"):
        again = train_text_vocab(CORPUS, 120, 2, tmp_path)
    assert calls == [1]
    assert "unreadable text vocabulary cache" in caplog.text
    assert again.digest == first.digest
    assert path.read_text(encoding="utf-8") == first.to_json()  # overwritten with a good copy


def test_json_round_trip_and_bad_input(tmp_path: Path) -> None:
    vocab = _tiny(tmp_path)
    loaded = TextVocab.from_json(vocab.to_json())
    assert loaded.digest == vocab.digest and loaded.encode(["b a"]) == vocab.encode(["b a"])
    with pytest.raises(ValueError):
        TextVocab.from_json("[]")
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_vocab(CORPUS, 2, 1, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        train_text_vocab([], 100, 1, tmp_path)
