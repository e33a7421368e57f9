"""Every generative record names its semantic-ID table (``extra.sid.table_sha256``), and the
comparison table notes a row whose table differs from the others' on its dataset."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import write_record

from recbole_ext.benchmark.report import build_tables
from synthetic_data import tiny_loaders

M = {"hit@5": 0.1, "hit@10": 0.2, "ndcg@5": 0.05, "ndcg@10": 0.07}
A, B = "a" * 16, "b" * 16


def sid(digest):
    return {"sid": {"method": "rqvae", "table_sha256": digest}}


def test_table_notes_a_row_with_other_ids(tmp_path: Path) -> None:
    write_record(tmp_path, "SASRec", "d1", 1, M)
    write_record(tmp_path, "TIGER", "d1", 1, M, extra=sid(A))
    write_record(tmp_path, "TIGER", "d1", 2, M, extra=sid(A))
    write_record(tmp_path, "STREAMRec", "d1", 1, M, extra=sid(A))
    write_record(tmp_path, "ReaRec", "d1", 1, M, extra=sid(B))  # built its IDs another way
    write_record(tmp_path, "TIGER", "d2", 1, M, extra=sid(B))  # another dataset: its own table
    write_record(tmp_path, "STREAMRec", "d2", 1, M, extra=sid(B))
    build_tables(str(tmp_path), plots=False)
    md = (tmp_path / "tables" / "comparison.md").read_text()
    notes = [line for line in md.splitlines() if line.startswith("Semantic IDs")]
    assert notes == ["Semantic IDs on d1: ReaRec (bbbbbbbb) used another ID table than STREAMRec, TIGER (aaaaaaaa); "
                     "their rows are not comparable as equals."]


def test_no_note_when_every_row_shares_one_table(tmp_path: Path) -> None:
    write_record(tmp_path, "TIGER", "d1", 1, M, extra=sid(A))
    write_record(tmp_path, "STREAMRec", "d1", 1, M, extra=sid(A))
    write_record(tmp_path, "SASRec", "d1", 1, M)
    build_tables(str(tmp_path), plots=False)
    assert "Semantic IDs" not in (tmp_path / "tables" / "comparison.md").read_text()


def test_models_on_one_tokenizer_record_one_digest(tiny_dataset, tmp_path: Path) -> None:
    from recbole_ext.registry import resolve

    digests = {}
    for model, overrides in (("TIGER", {}), ("STREAMRec", {"neighbor_source": "sid"}), ("TIGER", {"sid_seed": 7})):
        config, (train, _, _) = tiny_loaders(model, *tiny_dataset, tmp_path / "sid", **overrides)
        built = resolve(model).model_class(config, train._dataset)
        digests[(model, overrides.get("sid_seed"))] = built.record_extra()["sid"]["table_sha256"]
        assert digests[(model, overrides.get("sid_seed"))] == built.sids.table_digest()
    assert digests[("TIGER", None)] == digests[("STREAMRec", None)] != digests[("TIGER", 7)]
