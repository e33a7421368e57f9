"""recbole_ext.atomic: replace vs exclusive publication, nothing left behind on failure."""

import threading

import pytest

from recbole_ext.atomic import atomic_write, atomic_write_text
from recbole_ext.benchmark.records import RecordExistsError, write_record


def test_replace_and_exclusive(tmp_path):
    target = tmp_path / "a" / "r.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")  # default: replace
    assert target.read_text() == "two"
    with pytest.raises(FileExistsError, match="r.json exists"):
        atomic_write_text(target, "three", exclusive=True)
    assert target.read_text() == "two"
    atomic_write_text(tmp_path / "a" / "new.json", "x", exclusive=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["new.json", "r.json"]  # no temp files


def test_failed_write_leaves_nothing(tmp_path):
    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", broken)
    assert list(tmp_path.iterdir()) == []


def test_racing_writers_of_one_name_exactly_one_wins(tmp_path):
    target = tmp_path / "race.json"
    barrier = threading.Barrier(8)
    outcome = []

    def writer(i):
        barrier.wait()
        try:
            atomic_write_text(target, f"writer {i}", exclusive=True)
            outcome.append(("won", i))
        except FileExistsError:
            outcome.append(("lost", i))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [i for kind, i in outcome if kind == "won"]
    assert len(winners) == 1 and target.read_text() == f"writer {winners[0]}"
    assert [p.name for p in tmp_path.iterdir()] == ["race.json"]


def test_record_written_meanwhile_is_not_overwritten(tmp_path, monkeypatch):
    record = {"model": "M", "dataset": "d", "run_id": "same", "seed": 1, "config": {}, "valid": {}, "test": {}}
    from recbole_ext.benchmark import records

    missing = [k for k in records.REQUIRED_FIELDS if k not in record]
    record.update({k: {} for k in missing})
    first = write_record(tmp_path, record)
    # the other run passed the existence check before this one published (a race the check alone
    # cannot close): simulate only the check, the publication is real
    monkeypatch.setattr(records.Path, "exists", lambda self: False)
    with pytest.raises(RecordExistsError, match="written by another run meanwhile"):
        write_record(tmp_path, {**record, "test": {"ndcg@10": 1.0}})
    monkeypatch.undo()
    assert '"ndcg@10"' not in first.read_text()
