"""``sid_tokenizer: external`` end to end: index files keyed by item tokens (never positions),
the four shipped scientific2018 files read unedited, and TIGER trained and decoded on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recbole_ext.sid.external import SIDFileError, load_index_json
from synthetic_data import tiny_loaders

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
INDEXES = SHARED / "scientific2018" / "indexes"
needs_scientific2018 = pytest.mark.skipif(
    not (SHARED / "scientific2018" / "scientific2018.inter.gz").exists() or not INDEXES.is_dir(),
    reason=f"offline scientific2018 copy and its indexes not available at {SHARED} (see shared/datasets/README.md)",
)

# Integer item tokens whose first appearance (RecBole's id order) is not their numeric order.
SEQUENCES = [[30, 7, 12, 5, 21], [12, 5, 30, 9, 7], [21, 9, 5, 30, 12], [7, 30, 21, 12, 9], [5, 12, 9, 7, 21]]
TOKENS = ["30", "7", "12", "5", "21", "9"]  # first appearance


def _write_integer_dataset(root: Path, name: str = "ints") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"u{u}\t{item}\t{t + 1}" for u, seq in enumerate(SEQUENCES) for t, item in enumerate(seq)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _index(tokens: list[str]) -> dict[str, list[str]]:
    """Item token t gets the ID (t mod 4, t // 4 mod 4, t): unique, and tied to the token's value."""
    return {t: [f"<a_{int(t) % 4}>", f"<b_{int(t) // 4 % 4}>", f"<c_{int(t)}>"] for t in tokens}


def test_integer_keys_map_to_item_tokens_not_positions(tmp_path):
    from recbole_ext.models.tiger import TIGER

    root = _write_integer_dataset(tmp_path / "data")
    path = tmp_path / "ints.index.json"
    path.write_text(json.dumps(_index(sorted(TOKENS, key=int))))  # file order: numeric, not RecBole's
    config, (train, _, _) = tiny_loaders("TIGER", str(root), "ints", tmp_path / "sid", sid_tokenizer="external",
                                         sid_path=str(path), eval_batch_size=8, num_beams=5, topk=[5])
    dataset = train._dataset
    model = TIGER(config, dataset)
    ids = {t: int(dataset.token2id("item_id", t)) for t in TOKENS}
    assert ids == {"30": 1, "7": 2, "12": 3, "5": 4, "21": 5, "9": 6}  # RecBole: first appearance
    codes = model.seq2seq.item_codes
    assert codes[ids["30"]].tolist() == [2, 3, 30] and codes[ids["5"]].tolist() == [1, 1, 5]
    assert codes[ids["7"]].tolist() == [3, 1, 7] and codes[ids["9"]].tolist() == [1, 2, 9]
    assert codes[0].tolist() == [-1, -1, -1]  # RecBole's padding item
    assert model.sids.codebook_sizes == (4, 4, 31)
    # the trie maps each ID back to the item of that token
    assert model.seq2seq.trie(torch.device("cpu")).lookup(torch.tensor([[2, 3, 30], [1, 1, 5]])).tolist() == [1, 4]


def test_positional_integer_keys_fail_with_a_clear_error(tmp_path):
    positions = {str(i): ids for i, ids in enumerate(_index(TOKENS).values())}  # keyed 0..5 by position
    path = tmp_path / "pos.index.json"
    path.write_text(json.dumps(positions))
    expected = (r"5 dataset items have no ID, e.g. '30', '7', '12', '21', '9'\. The file's keys are the integers "
                r"0\.\.5: each key is read as an item token of this dataset \(e\.g\. '30'\), never as a position")
    with pytest.raises(SIDFileError, match=expected):
        load_index_json(path, TOKENS)
    path.write_text(json.dumps(list(_index(TOKENS).values())))  # a list indexed by position
    with pytest.raises(SIDFileError, match="got a list .*key it by item token"):
        load_index_json(path, TOKENS)


@needs_scientific2018
@pytest.mark.parametrize(
    "variant, sizes, first_level_used, n_colliding, first_codes",
    [  # first-level usage and collisions as in shared/datasets/README.md (10, 256, 118, 32; 887 items)
        ("rqvae_zcr", (193, 256, 256, 256), 10, 0, [105, 30, 3, 75]),
        ("rkmeans_zcr", (256, 256, 256, 256), 256, 0, [113, 148, 140, 41]),
        ("letter_zcr", (256, 256, 256, 256), 118, 0, [25, 239, 15, 195]),
        ("rqvae_native", (251, 256, 256, 256, 22), 32, 887, [70, 138, 190, 249, 0]),
    ],
)
def test_shipped_index_files_load_unedited(variant, sizes, first_level_used, n_colliding, first_codes):
    path = INDEXES / f"scientific2018.{variant}.index.json"
    tokens = [str(i) for i in range(4344)]  # the dataset's item tokens (its README: 4,344 items)
    codes, found, stats = load_index_json(path, tokens)
    assert found == sizes and codes.shape == (4344, len(sizes)) and stats["n_items"] == 4344
    assert len(torch.unique(codes, dim=0)) == 4344  # unique after the collision level, if any
    assert len(torch.unique(codes[:, 0])) == first_level_used
    assert codes[0].tolist() == first_codes  # item "0" (rqvae_zcr: ["<a_105>", "<b_30>", "<c_3>", "<d_75>"])
    if n_colliding:
        assert stats["collision"]["n_colliding_items"] == n_colliding and stats["collision"]["max_group_size"] == 22
    else:
        assert stats["n_duplicate_items"] == 0 and "collision" not in stats


@needs_scientific2018
def test_tiger_on_scientific2018_with_shipped_ids(tmp_path, monkeypatch):
    """Dataset -> shipped rqvae_zcr IDs by item token -> TIGER loss step -> constrained beam search."""
    from recbole_ext.data import ensure_dataset
    from recbole_ext.models.tiger import TIGER

    monkeypatch.setenv("RECBOLE_EXT_CACHE", str(tmp_path / "cache"))
    data_path = ensure_dataset("scientific2018", str(SHARED))
    path = INDEXES / "scientific2018.rqvae_zcr.index.json"
    config, (train, _, test) = tiny_loaders("TIGER", data_path, "scientific2018", tmp_path / "sid",
                                            sid_tokenizer="external", sid_path=str(path), train_batch_size=32,
                                            eval_batch_size=16)
    dataset = train._dataset
    model = TIGER(config, dataset)
    raw = json.loads(path.read_text())
    for token in ("0", "1", "2", "4343"):
        expected = [int(t.split("_")[1][:-1]) for t in raw[token]]
        assert model.seq2seq.item_codes[dataset.token2id("item_id", token)].tolist() == expected
    assert model.seq2seq.item_codes[dataset.token2id("item_id", "1")].tolist() == [161, 23, 103, 210]
    assert model.sids.codebook_sizes == (193, 256, 256, 256) and model.n_items == 4345
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    model.eval()
    interaction = next(iter(test))[0]
    out = model.generate(interaction)
    assert out.items.shape == (16, 10) and (out.items > 0).all()  # valid items only (constrained)
    assert torch.equal(model.vocab.decode(out.tokens), model.seq2seq.item_codes[out.items])
    assert model.record_extra()["sid"]["method"] == "external"
