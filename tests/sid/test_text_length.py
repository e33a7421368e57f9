"""Item text longer than the encoder's limit is counted and reported (never cut silently)."""

import logging

import numpy as np

from recbole_ext import text
from recbole_ext.text import item_text_embeddings, text_length_stats


class FakeEncoder:
    """Whitespace tokens plus 2 special tokens; reads at most 4 tokens."""

    max_seq_length = 4

    @staticmethod
    def tokenizer(texts, add_special_tokens=True, truncation=False):
        assert add_special_tokens and not truncation
        return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}

    def encode(self, texts, **kwargs):
        return np.ones((len(texts), 3), dtype=np.float32)


def test_over_length_texts_are_counted_kept_and_repeated(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(text, "_load_sentence_transformer", lambda target, device: FakeEncoder())
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    texts = {"a": "one two", "b": "one two three", "c": "one two three four five"}  # 4, 5 and 7 tokens
    stats: dict = {}
    with caplog.at_level(logging.WARNING, logger="recbole_ext.text"):
        item_text_embeddings("demo", texts, model=str(tmp_path), cache_dir=tmp_path / "c", length_stats=stats)
    expected = {"max_seq_length": 4, "n_over_length": 2, "over_length_share": 2 / 3, "over_length_items": ["b", "c"],
                "max_text_tokens": 7}
    assert stats == expected
    assert "2 item texts (66.7 %) are longer than the encoder's limit of 4 tokens (longest: 7)" in caplog.text
    (cached,) = (tmp_path / "c").glob("*.npy")
    assert text_length_stats(cached) == expected  # kept beside the vectors
    caplog.clear()
    again: dict = {}
    with caplog.at_level(logging.WARNING, logger="recbole_ext.text"):
        item_text_embeddings("demo", texts, model=str(tmp_path), cache_dir=tmp_path / "c", length_stats=again)
    assert again == expected and f"were cut to it ({cached.name})" in caplog.text  # repeated on a cache hit
    assert text_length_stats(tmp_path / "absent.npy") == {}
